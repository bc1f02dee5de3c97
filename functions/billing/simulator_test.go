package billing

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// newSim starts the simulator on a real HTTP server with its own ledger.
func newSim(t *testing.T, defaults SimConfig, apiKey string) (*Simulator, *httptest.Server) {
	t.Helper()
	c := storage(t)
	sim := NewSimulator(c.Table, prefix()+SimPaymentsTable, defaults, apiKey, testEnv(t, c, nil).Logger)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return sim, srv
}

func TestSimulatorConcurrentDuplicatesChargeOnce(t *testing.T) {
	t.Parallel()
	sim, srv := newSim(t, SimConfig{}, "")
	client := &PaymentClient{BaseURL: srv.URL + "/api/sim/payments"}
	key := ChargeKey(testSub.ID, testSub.NextBillingDate)
	const n = 20
	receipts := make([]Receipt, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			receipts[i], errs[i] = client.Charge(context.Background(), key, testSub, testSub.NextBillingDate)
		})
	}
	close(start)
	wg.Wait()
	replayed := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
		if receipts[i].PaymentID != receipts[0].PaymentID {
			t.Fatalf("call %d got payment %s, call 0 %s", i, receipts[i].PaymentID, receipts[0].PaymentID)
		}
		if receipts[i].Replayed {
			replayed++
		}
	}
	if replayed != n-1 {
		t.Errorf("%d answers replayed, want %d", replayed, n-1)
	}
	charges, err := sim.Charges(context.Background())
	if err != nil || len(charges) != 1 || charges[0].IdempotencyKey != key || charges[0].AmountMinor != 999 {
		t.Fatalf("ledger = %+v, %v; want exactly one charge", charges, err)
	}
	// The ledger over HTTP.
	resp, err := http.Get(srv.URL + "/api/sim/payments")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Count   int       `json:"count"`
		Charges []Receipt `json:"charges"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || list.Count != 1 || list.Charges[0].PaymentID != receipts[0].PaymentID {
		t.Fatalf("GET ledger = %+v, %v", list, err)
	}
}

func TestSimulatorKeySurvivesRestart(t *testing.T) {
	t.Parallel()
	c := storage(t)
	table := prefix() + SimPaymentsTable
	first := NewSimulator(c.Table, table, SimConfig{}, "", nil)
	srv1 := httptest.NewServer(first)
	r1, err := (&PaymentClient{BaseURL: srv1.URL}).Charge(context.Background(), "k-1", testSub, "2025-03-01")
	srv1.Close()
	if err != nil {
		t.Fatal(err)
	}
	// A new process over the same ledger.
	srv2 := httptest.NewServer(NewSimulator(c.Table, table, SimConfig{}, "", nil))
	defer srv2.Close()
	r2, err := (&PaymentClient{BaseURL: srv2.URL}).Charge(context.Background(), "k-1", testSub, "2025-03-01")
	if err != nil || r2.PaymentID != r1.PaymentID || !r2.Replayed {
		t.Fatalf("after restart: %+v, %v; want the original %s replayed", r2, err, r1.PaymentID)
	}
}

func TestSimulatorRefusals(t *testing.T) {
	t.Parallel()
	sim, srv := newSim(t, SimConfig{}, "secret")
	declined := testSub
	declined.Email = "jo+decline@example.com"
	other := testSub
	other.AmountMinor = 1

	tests := []struct {
		name   string
		client *PaymentClient
		key    string
		sub    Subscription
		status int
		code   string
	}{
		{"wrong api key", &PaymentClient{BaseURL: srv.URL, APIKey: "nope"}, "k-a", testSub, http.StatusUnauthorized, "unauthorized"},
		{"declined", &PaymentClient{BaseURL: srv.URL, APIKey: "secret"}, "k-d", declined, http.StatusPaymentRequired, "card_declined"},
		{"no key", &PaymentClient{BaseURL: srv.URL, APIKey: "secret"}, "", testSub, http.StatusBadRequest, "idempotency_key_required"},
		{"key reused for another amount", &PaymentClient{BaseURL: srv.URL, APIKey: "secret"}, "k-r", other, http.StatusUnprocessableEntity, "idempotency_key_reused"},
	}
	// k-r is charged first with the normal amount.
	if _, err := (&PaymentClient{BaseURL: srv.URL, APIKey: "secret"}).Charge(context.Background(), "k-r", testSub, "2025-03-01"); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.client.Charge(context.Background(), tt.key, tt.sub, "2025-03-01")
			var pe *PaymentError
			if !errors.As(err, &pe) || pe.StatusCode != tt.status || pe.Code != tt.code || pe.Retryable {
				t.Fatalf("err = %v, want permanent %d %s", err, tt.status, tt.code)
			}
		})
	}
	charges, _ := sim.Charges(context.Background())
	if len(charges) != 1 {
		t.Fatalf("%d charges, want only k-r's", len(charges))
	}
}

func TestSimulatorOutageWindow(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 3, 1, 1, 0, 0, 0, time.UTC)
	w, err := ParseOutage("2025-03-01T00:59:00Z/2m", now)
	if err != nil {
		t.Fatal(err)
	}
	sim, srv := newSim(t, SimConfig{Outage: &w}, "")
	var mu sync.Mutex
	sim.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	client := &PaymentClient{BaseURL: srv.URL}
	_, err = client.Charge(context.Background(), "k-o", testSub, "2025-03-01")
	var pe *PaymentError
	if !errors.As(err, &pe) || pe.StatusCode != http.StatusServiceUnavailable || !pe.Retryable {
		t.Fatalf("in the outage: err = %v, want a retryable 503", err)
	}
	mu.Lock()
	now = now.Add(2 * time.Minute)
	mu.Unlock()
	if _, err := client.Charge(context.Background(), "k-o", testSub, "2025-03-01"); err != nil {
		t.Fatalf("after the outage: %v", err)
	}
}

func TestSimulatorFailureRateLosesSomeAnswers(t *testing.T) {
	t.Parallel()
	sim, srv := newSim(t, SimConfig{FailureRate: 1}, "")
	draws := []float64{0.9, 0.1} // a failure before the charge, then one after it
	var mu sync.Mutex
	sim.random = func() float64 {
		mu.Lock()
		defer mu.Unlock()
		d := draws[0]
		draws = draws[1:]
		return d
	}
	client := &PaymentClient{BaseURL: srv.URL}
	for i := range 2 {
		if _, err := client.Charge(context.Background(), "k-f", testSub, "2025-03-01"); !IsRetryable(err) {
			t.Fatalf("call %d: err = %v, want a retryable failure", i, err)
		}
	}
	charges, _ := sim.Charges(context.Background())
	if len(charges) != 1 {
		t.Fatalf("%d charges, want 1 (the second failure came after charging)", len(charges))
	}
	// The retry under the same key gets the charge that was made.
	if err := sim.SetConfig(context.Background(), SimConfig{}); err != nil {
		t.Fatal(err)
	}
	r, err := client.Charge(context.Background(), "k-f", testSub, "2025-03-01")
	if err != nil || !r.Replayed || r.PaymentID != charges[0].PaymentID {
		t.Fatalf("retry = %+v, %v; want %s replayed", r, err, charges[0].PaymentID)
	}
}

func TestSimulatorConfigEndpoint(t *testing.T) {
	t.Parallel()
	_, srv := newSim(t, SimConfig{LatencyMs: 1}, "")
	do := func(method, body string) SimConfig {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+"/api/sim/payments/config", strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			var b bytes.Buffer
			_, _ = b.ReadFrom(resp.Body)
			t.Fatalf("%s config: %d %s", method, resp.StatusCode, b.String())
		}
		var c SimConfig
		if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	if c := do("GET", ""); c.Source != "settings" || c.LatencyMs != 1 {
		t.Fatalf("initial config %+v", c)
	}
	c := do("POST", `{"failureRate": 0.5, "outageSeconds": 30}`)
	if c.Source != "runtime" || c.FailureRate != 0.5 || c.LatencyMs != 1 || c.Outage == nil || c.Outage.End.Sub(c.Outage.Start) != 30*time.Second {
		t.Fatalf("posted config %+v", c)
	}
	// During the outage a charge is refused.
	if _, err := (&PaymentClient{BaseURL: srv.URL + "/api/sim/payments"}).Charge(context.Background(), "k-c", testSub, "2025-03-01"); !IsRetryable(err) {
		t.Fatalf("charge in a posted outage: %v", err)
	}
	if c := do("POST", `{"clearOutage": true}`); c.Outage != nil || c.FailureRate != 0.5 {
		t.Fatalf("cleared %+v", c)
	}
	if c := do("DELETE", ""); c.Source != "settings" || c.FailureRate != 0 {
		t.Fatalf("reset %+v", c)
	}
	req, _ := http.NewRequest("POST", srv.URL+"/api/sim/payments/config", strings.NewReader(`{"failureRate": 2}`))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("failure rate 2: status %d, want 400", resp.StatusCode)
	}
}

func TestParseOutage(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 3, 1, 1, 0, 0, 0, time.UTC)
	tests := []struct {
		in         string
		start, end string
		bad        bool
	}{
		{in: ""},
		{in: "off"},
		{in: "2025-03-01T01:00:00Z/2025-03-01T01:05:00Z", start: "2025-03-01T01:00:00Z", end: "2025-03-01T01:05:00Z"},
		{in: "2025-03-01T01:00:00Z/90s", start: "2025-03-01T01:00:00Z", end: "2025-03-01T01:01:30Z"},
		{in: "45s", start: "2025-03-01T01:00:00Z", end: "2025-03-01T01:00:45Z"},
		{in: "soon", bad: true},
		{in: "-5s", bad: true},
		{in: "2025-03-01T01:05:00Z/2025-03-01T01:00:00Z", bad: true},
		{in: "yesterday/5m", bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			w, err := ParseOutage(tt.in, now)
			if (err != nil) != tt.bad {
				t.Fatalf("err = %v, bad %v", err, tt.bad)
			}
			if tt.bad {
				return
			}
			got := fmt.Sprint(w.Start.Format(time.RFC3339), w.End.Format(time.RFC3339))
			if tt.start == "" {
				if !w.Start.IsZero() {
					t.Fatalf("window %v, want none", w)
				}
				return
			}
			if want := fmt.Sprint(tt.start, tt.end); got != want {
				t.Fatalf("window %s, want %s", got, want)
			}
		})
	}
}
