package billing

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	bstorage "github.com/stratus-dev/stratus/bindings/storage"
	"github.com/stratus-dev/stratus/triggers/httptrigger"
)

// SimPaymentsTable is the simulator's ledger table (before a test prefix).
const SimPaymentsTable = "SimPayments"

const (
	simChargePartition = "charge"
	simConfigPartition = "config"
	simConfigRow       = "current"
)

// Window is a time interval [Start, End).
type Window struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// Contains reports whether t is inside the window.
func (w Window) Contains(t time.Time) bool {
	return !w.Start.IsZero() && !t.Before(w.Start) && t.Before(w.End)
}

// ParseOutage parses the PaymentSimOutage setting:
//
//   - "" or "off": no outage;
//   - "<start>/<end>", both RFC 3339 (an ISO 8601 interval):
//     2025-03-01T01:00:00Z/2025-03-01T01:05:00Z;
//   - "<start>/<duration>", RFC 3339 and a Go duration:
//     2025-03-01T01:00:00Z/5m;
//   - "<duration>" alone (e.g. "45s"): from now, which for the app setting
//     is when the host starts, for that long.
func ParseOutage(s string, now time.Time) (Window, error) {
	s = strings.TrimSpace(s)
	if s == "" || strings.EqualFold(s, "off") {
		return Window{}, nil
	}
	bad := func(err error) (Window, error) {
		return Window{}, fmt.Errorf("outage %q: %w (use start/end in RFC 3339, start/duration, or a duration such as 45s)", s, err)
	}
	startStr, endStr, found := strings.Cut(s, "/")
	if !found {
		d, err := time.ParseDuration(s)
		if err != nil {
			return bad(err)
		}
		if d <= 0 {
			return bad(fmt.Errorf("duration must be positive"))
		}
		return Window{Start: now, End: now.Add(d)}, nil
	}
	start, err := time.Parse(time.RFC3339, startStr)
	if err != nil {
		return bad(err)
	}
	end, err := time.Parse(time.RFC3339, endStr)
	if err != nil {
		d, derr := time.ParseDuration(endStr)
		if derr != nil {
			return bad(fmt.Errorf("end %q is neither RFC 3339 nor a duration", endStr))
		}
		end = start.Add(d)
	}
	if !end.After(start) {
		return bad(fmt.Errorf("end is not after start"))
	}
	return Window{Start: start, End: end}, nil
}

// SimConfig is how the simulator misbehaves: its app settings, or what was
// last posted to /api/sim/payments/config (stored in the ledger table, so
// that every host sharing the storage account and every restart sees it).
type SimConfig struct {
	// FailureRate (0..1) is the share of calls answered 503. Half of them
	// fail after the charge was made (the answer is lost), which only an
	// idempotency key makes safe to retry.
	FailureRate float64 `json:"failureRate"`
	// LatencyMs delays every answer.
	LatencyMs int `json:"latencyMs"`
	// Outage is a window in which every call is answered 503.
	Outage *Window `json:"outage,omitempty"`
	// Source is "settings" or "runtime" (posted to the config endpoint).
	Source string `json:"source"`
}

// Validate checks the ranges.
func (c SimConfig) Validate() error {
	if c.FailureRate < 0 || c.FailureRate > 1 {
		return fmt.Errorf("failure rate %v is not between 0 and 1", c.FailureRate)
	}
	if c.LatencyMs < 0 || c.LatencyMs > 60_000 {
		return fmt.Errorf("latency %d ms is not between 0 and 60000", c.LatencyMs)
	}
	return nil
}

// Simulator is a payment service for development: it charges nothing real,
// keeps a ledger of charges in a table, honours idempotency keys and can
// be told to be slow, to fail at random, or to be down for a while.
//
// Routes, relative to its base (/api/sim/payments in the host):
//
//	POST   /        charge; Idempotency-Key header required; body ChargeRequest
//	GET    /        the ledger: {"count": n, "charges": [Receipt...]}; ?customer= filters
//	GET    /config  the current SimConfig
//	POST   /config  change it: {"failureRate", "latencyMs", "outageSeconds"
//	                (from now), "outageStart"/"outageEnd", "clearOutage"}
//	DELETE /config  back to the app settings
//
// A charge whose key was charged before returns the original receipt with
// Idempotent-Replayed: true, and never a second ledger row: the ledger row
// is inserted with a conditional add, so concurrent duplicates resolve to
// one charge. Reusing a key with a different customer, amount, currency or
// period is answered 422. Addresses whose local part ends in "+decline"
// (jo+decline@example.com) are declined with 402 card_declined; declines
// are not recorded, so a later attempt may succeed.
type Simulator struct {
	svc      *aztables.ServiceClient
	table    *aztables.Client
	name     string
	defaults SimConfig
	apiKey   string
	log      *slog.Logger

	// now and random are replaceable for tests.
	now    func() time.Time
	random func() float64
}

// NewSimulator returns a simulator whose ledger is the table named table,
// with defaults (from app settings) and, when apiKey is set, requiring
// "Authorization: Bearer <apiKey>".
func NewSimulator(svc *aztables.ServiceClient, table string, defaults SimConfig, apiKey string, log *slog.Logger) *Simulator {
	if log == nil {
		log = slog.Default()
	}
	defaults.Source = "settings"
	return &Simulator{svc: svc, table: svc.NewClient(table), name: table, defaults: defaults, apiKey: apiKey,
		log: log.With("component", "payment-simulator"), now: time.Now, random: mrand.Float64}
}

// ledgerEntity is one SimPayments charge row.
type ledgerEntity struct {
	PartitionKey   string
	RowKey         string
	IdempotencyKey string
	PaymentID      string
	Customer       string
	Email          string
	AmountMinor    int64Value
	Currency       string
	Period         string
	Created        string
	RequestHash    string
}

func (e ledgerEntity) receipt() Receipt {
	created, _ := time.Parse(time.RFC3339Nano, e.Created)
	return Receipt{PaymentID: e.PaymentID, IdempotencyKey: e.IdempotencyKey, Customer: e.Customer, AmountMinor: int64(e.AmountMinor),
		Currency: e.Currency, Period: e.Period, Status: "succeeded", Created: created}
}

// Charges returns the ledger, oldest first.
func (s *Simulator) Charges(ctx context.Context) ([]Receipt, error) {
	filter := "PartitionKey eq '" + simChargePartition + "'"
	pager := s.table.NewListEntitiesPager(&aztables.ListEntitiesOptions{Filter: &filter})
	var out []Receipt
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if bstorage.IsNotFound(err) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("list simulated charges: %w", err)
		}
		for _, raw := range page.Entities {
			var e ledgerEntity
			if err := json.Unmarshal(raw, &e); err != nil {
				return nil, fmt.Errorf("decode simulated charge: %w", err)
			}
			out = append(out, e.receipt())
		}
	}
	slices.SortFunc(out, func(a, b Receipt) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.IdempotencyKey, b.IdempotencyKey)
	})
	return out, nil
}

// Config returns the configuration in force: the one posted at run time
// when there is one, else the app settings.
func (s *Simulator) Config(ctx context.Context) (SimConfig, error) {
	res, err := s.table.GetEntity(ctx, simConfigPartition, simConfigRow, nil)
	if bstorage.IsNotFound(err) {
		return s.defaults, nil
	}
	if err != nil {
		return SimConfig{}, fmt.Errorf("read simulator config: %w", err)
	}
	var e struct{ Config string }
	if err := json.Unmarshal(res.Value, &e); err != nil {
		return SimConfig{}, fmt.Errorf("decode simulator config: %w", err)
	}
	var c SimConfig
	if err := json.Unmarshal([]byte(e.Config), &c); err != nil {
		return SimConfig{}, fmt.Errorf("decode simulator config: %w", err)
	}
	c.Source = "runtime"
	return c, nil
}

// SetConfig stores c as the run-time configuration.
func (s *Simulator) SetConfig(ctx context.Context, c SimConfig) error {
	if err := c.Validate(); err != nil {
		return err
	}
	c.Source = "runtime"
	cb, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode simulator config: %w", err)
	}
	b, _ := json.Marshal(map[string]any{"PartitionKey": simConfigPartition, "RowKey": simConfigRow, "Config": string(cb)})
	return s.withTable(ctx, func() error {
		_, err := s.table.UpsertEntity(ctx, b, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace})
		return err
	}, "store simulator config")
}

// ResetConfig drops the run-time configuration (back to app settings).
func (s *Simulator) ResetConfig(ctx context.Context) error {
	_, err := s.table.DeleteEntity(ctx, simConfigPartition, simConfigRow, nil)
	if err != nil && !bstorage.IsNotFound(err) {
		return fmt.Errorf("reset simulator config: %w", err)
	}
	return nil
}

// withTable runs op, creating the table once when it is missing.
func (s *Simulator) withTable(ctx context.Context, op func() error, what string) error {
	err := op()
	if bstorage.ErrorCode(err) == string(aztables.TableNotFound) {
		if err = bstorage.CreateTable(ctx, s.svc, s.name); err == nil {
			err = op()
		}
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// HandleCharges serves the charges route (POST charge, GET ledger).
func (s *Simulator) HandleCharges(ctx context.Context, req *httptrigger.Request) (*httptrigger.Response, error) {
	switch req.Method {
	case http.MethodGet:
		charges, err := s.Charges(ctx)
		if err != nil {
			return nil, err
		}
		if c := req.Query.Get("customer"); c != "" {
			charges = slices.DeleteFunc(charges, func(r Receipt) bool { return r.Customer != c })
		}
		if charges == nil {
			charges = []Receipt{}
		}
		return httptrigger.JSON(http.StatusOK, map[string]any{"count": len(charges), "charges": charges}), nil
	case http.MethodPost:
		return s.charge(ctx, req)
	}
	return simError(http.StatusMethodNotAllowed, "method_not_allowed", "use POST to charge or GET to list charges"), nil
}

func (s *Simulator) charge(ctx context.Context, req *httptrigger.Request) (*httptrigger.Response, error) {
	if s.apiKey != "" && req.Header.Get("Authorization") != "Bearer "+s.apiKey {
		return simError(http.StatusUnauthorized, "unauthorized", "missing or wrong API key (Authorization: Bearer <PaymentServiceApiKey>)"), nil
	}
	cfg, err := s.Config(ctx)
	if err != nil {
		return nil, err
	}
	if cfg.LatencyMs > 0 {
		t := time.NewTimer(time.Duration(cfg.LatencyMs) * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	now := s.now()
	if cfg.Outage != nil && cfg.Outage.Contains(now) {
		resp := simError(http.StatusServiceUnavailable, "service_unavailable", "simulated outage until "+cfg.Outage.End.UTC().Format(time.RFC3339))
		resp.Header.Set("Retry-After", strconv.Itoa(int(cfg.Outage.End.Sub(now).Seconds())+1))
		return resp, nil
	}
	var fail, lostAnswer bool
	if cfg.FailureRate > 0 {
		draw := s.random()
		fail, lostAnswer = draw < cfg.FailureRate, draw < cfg.FailureRate/2
	}
	if fail && !lostAnswer {
		return simError(http.StatusServiceUnavailable, "service_unavailable", "simulated failure"), nil
	}

	key := strings.TrimSpace(req.Header.Get(IdempotencyKeyHeader))
	if key == "" || len(key) > 255 {
		return simError(http.StatusBadRequest, "idempotency_key_required", "send an Idempotency-Key header of 1-255 characters"), nil
	}
	var cr ChargeRequest
	if err := json.Unmarshal(req.Body, &cr); err != nil {
		return simError(http.StatusBadRequest, "invalid_request", "body is not a JSON charge request: "+err.Error()), nil
	}
	if cr.Customer == "" || cr.AmountMinor <= 0 || !validCurrency(cr.Currency) {
		return simError(http.StatusBadRequest, "invalid_request", "customer, a positive amountMinor and a three-letter currency are required"), nil
	}
	if local, _, _ := strings.Cut(cr.Email, "@"); strings.HasSuffix(local, "+decline") {
		return simError(http.StatusPaymentRequired, "card_declined", "the card of "+cr.Email+" was declined"), nil
	}

	receipt, replayed, err := s.record(ctx, key, cr, now)
	if err != nil {
		var reused keyReusedError
		if errors.As(err, &reused) {
			return simError(http.StatusUnprocessableEntity, "idempotency_key_reused", reused.Error()), nil
		}
		return nil, err
	}
	if lostAnswer {
		return simError(http.StatusServiceUnavailable, "service_unavailable", "simulated failure after the charge was made"), nil
	}
	status := http.StatusCreated
	resp := httptrigger.JSON(status, receipt)
	if replayed {
		resp.Status = http.StatusOK
		resp.Header.Set(ReplayedHeader, "true")
	}
	return resp, nil
}

type keyReusedError struct{ key string }

func (e keyReusedError) Error() string {
	return "idempotency key " + e.key + " was used for a different charge"
}

// record inserts the ledger row of key, or finds the one already there.
func (s *Simulator) record(ctx context.Context, key string, cr ChargeRequest, now time.Time) (Receipt, bool, error) {
	sum := sha256.Sum256([]byte(key))
	rk := hex.EncodeToString(sum[:16])
	reqSum := sha256.Sum256(fmt.Appendf(nil, "%s|%d|%s|%s", cr.Customer, cr.AmountMinor, cr.Currency, cr.Period))
	reqHash := hex.EncodeToString(reqSum[:8])
	e := ledgerEntity{
		PartitionKey: simChargePartition, RowKey: rk, IdempotencyKey: key, PaymentID: "pay_" + randomHex(12),
		Customer: cr.Customer, Email: cr.Email, AmountMinor: int64Value(cr.AmountMinor), Currency: cr.Currency,
		Period: cr.Period, Created: now.UTC().Format(time.RFC3339Nano), RequestHash: reqHash,
	}
	b, err := json.Marshal(map[string]any{
		"PartitionKey": e.PartitionKey, "RowKey": e.RowKey, "IdempotencyKey": e.IdempotencyKey, "PaymentID": e.PaymentID,
		"Customer": e.Customer, "Email": e.Email, "AmountMinor": fmt.Sprint(cr.AmountMinor), "AmountMinor@odata.type": "Edm.Int64",
		"Currency": e.Currency, "Period": e.Period, "Created": e.Created, "RequestHash": e.RequestHash,
	})
	if err != nil {
		return Receipt{}, false, fmt.Errorf("encode simulated charge: %w", err)
	}
	var conflict bool
	err = s.withTable(ctx, func() error {
		_, err := s.table.AddEntity(ctx, b, nil)
		if bstorage.IsConflict(err) {
			conflict = true
			return nil
		}
		return err
	}, "record simulated charge "+key)
	if err != nil {
		return Receipt{}, false, err
	}
	if !conflict {
		s.log.Info("charged", "idempotency_key", key, "payment_id", e.PaymentID, "customer", cr.Customer,
			"amount", FormatAmount(cr.AmountMinor, cr.Currency))
		return e.receipt(), false, nil
	}
	res, err := s.table.GetEntity(ctx, simChargePartition, rk, nil)
	if err != nil {
		return Receipt{}, false, fmt.Errorf("read simulated charge %s: %w", key, err)
	}
	var old ledgerEntity
	if err := json.Unmarshal(res.Value, &old); err != nil {
		return Receipt{}, false, fmt.Errorf("decode simulated charge %s: %w", key, err)
	}
	if old.RequestHash != reqHash {
		return Receipt{}, false, keyReusedError{key: key}
	}
	s.log.Info("charge replayed", "idempotency_key", key, "payment_id", old.PaymentID)
	return old.receipt(), true, nil
}

// configUpdate is the body of POST /config.
type configUpdate struct {
	FailureRate   *float64   `json:"failureRate"`
	LatencyMs     *int       `json:"latencyMs"`
	OutageSeconds *float64   `json:"outageSeconds"`
	OutageStart   *time.Time `json:"outageStart"`
	OutageEnd     *time.Time `json:"outageEnd"`
	ClearOutage   bool       `json:"clearOutage"`
}

// HandleConfig serves the config route (GET, POST, DELETE).
func (s *Simulator) HandleConfig(ctx context.Context, req *httptrigger.Request) (*httptrigger.Response, error) {
	switch req.Method {
	case http.MethodGet:
	case http.MethodDelete:
		if err := s.ResetConfig(ctx); err != nil {
			return nil, err
		}
	case http.MethodPost:
		var u configUpdate
		if err := req.Bind(&u); err != nil {
			return simError(http.StatusBadRequest, "invalid_request", err.Error()), nil
		}
		cfg, err := s.Config(ctx)
		if err != nil {
			return nil, err
		}
		if u.FailureRate != nil {
			cfg.FailureRate = *u.FailureRate
		}
		if u.LatencyMs != nil {
			cfg.LatencyMs = *u.LatencyMs
		}
		now := s.now().UTC()
		switch {
		case u.ClearOutage:
			cfg.Outage = nil
		case u.OutageSeconds != nil:
			if *u.OutageSeconds <= 0 {
				return simError(http.StatusBadRequest, "invalid_request", "outageSeconds must be positive"), nil
			}
			cfg.Outage = &Window{Start: now, End: now.Add(time.Duration(*u.OutageSeconds * float64(time.Second)))}
		case u.OutageStart != nil || u.OutageEnd != nil:
			if u.OutageStart == nil || u.OutageEnd == nil || !u.OutageEnd.After(*u.OutageStart) {
				return simError(http.StatusBadRequest, "invalid_request", "outageStart and outageEnd go together, end after start"), nil
			}
			cfg.Outage = &Window{Start: u.OutageStart.UTC(), End: u.OutageEnd.UTC()}
		}
		if err := cfg.Validate(); err != nil {
			return simError(http.StatusBadRequest, "invalid_request", err.Error()), nil
		}
		if err := s.SetConfig(ctx, cfg); err != nil {
			return nil, err
		}
		s.log.Info("simulator configured", "failure_rate", cfg.FailureRate, "latency_ms", cfg.LatencyMs, "outage", cfg.Outage)
	default:
		return simError(http.StatusMethodNotAllowed, "method_not_allowed", "use GET, POST or DELETE"), nil
	}
	cfg, err := s.Config(ctx)
	if err != nil {
		return nil, err
	}
	return httptrigger.JSON(http.StatusOK, cfg), nil
}

// ServeHTTP serves the simulator's routes on a plain HTTP server: the path
// ending in /config is the config route, every other path the charges route.
func (s *Simulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req := &httptrigger.Request{Method: r.Method, URL: r.URL, Header: r.Header, Query: r.URL.Query(), Body: body, Raw: r}
	h := s.HandleCharges
	if strings.HasSuffix(strings.TrimSuffix(r.URL.Path, "/"), "/config") {
		h = s.HandleConfig
	}
	resp, err := h(r.Context(), req)
	if err != nil {
		s.log.Error("simulator request failed", "path", r.URL.Path, "err", err)
		resp = simError(http.StatusInternalServerError, "internal", err.Error())
	}
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(cmpStatus(resp.Status))
	_, _ = w.Write(resp.Body)
}

func cmpStatus(s int) int {
	if s == 0 {
		return http.StatusOK
	}
	return s
}

func simError(status int, code, msg string) *httptrigger.Response {
	return httptrigger.JSON(status, errorBody{Code: code, Message: msg})
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
