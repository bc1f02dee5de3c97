package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	bstorage "github.com/stratus-dev/stratus/bindings/storage"
)

// Table names (before the store's prefix).
const (
	SubscriptionsTable  = "Subscriptions"
	BillingResultsTable = "BillingResults"
)

// SubscriptionPartition is the PartitionKey of every subscription row.
const SubscriptionPartition = "subscription"

// metaPartition holds the store's own bookkeeping rows (the demo seed
// marker) in the Subscriptions table; listings skip it.
const metaPartition = "meta"

// ErrSubscriptionNotFound is returned (wrapped) for an unknown subscription.
var ErrSubscriptionNotFound = errors.New("subscription not found")

// Result statuses.
const (
	// Charged: the payment service took the money.
	Charged = "charged"
	// Failed: the payment service declined, or every retry failed.
	Failed = "failed"
)

// Result is the outcome of billing one subscription for one period, a row
// of the BillingResults table (PartitionKey subscription id, RowKey period).
type Result struct {
	// SubscriptionID and Period (the billing date the charge was for)
	// identify the row.
	SubscriptionID string `json:"subscriptionId"`
	Period         string `json:"period"`
	// BillingDay is the billing run that recorded the result.
	BillingDay string `json:"billingDay"`
	// Name, Email and Plan are copied from the subscription for the report.
	Name  string `json:"name"`
	Email string `json:"email"`
	Plan  Plan   `json:"plan"`
	// Status is Charged or Failed.
	Status string `json:"status"`
	// PaymentID is the payment service's id of the charge (Charged only).
	PaymentID   string `json:"paymentId,omitempty"`
	AmountMinor int64  `json:"amountMinor"`
	Currency    string `json:"currency"`
	// Error says why the charge failed (Failed only).
	Error string `json:"error,omitempty"`
	// NextBillingDate is the billing date after this period (Charged only).
	NextBillingDate string `json:"nextBillingDate,omitempty"`
}

// Store reads and writes the Subscriptions and BillingResults tables.
type Store struct {
	svc     *aztables.ServiceClient
	subs    *aztables.Client
	results *aztables.Client
	names   [2]string
}

// NewStore returns a store over the tables prefix+"Subscriptions" and
// prefix+"BillingResults" (prefix "" in the app; tests use their own).
func NewStore(svc *aztables.ServiceClient, prefix string) *Store {
	s := &Store{svc: svc, names: [2]string{prefix + SubscriptionsTable, prefix + BillingResultsTable}}
	s.subs = svc.NewClient(s.names[0])
	s.results = svc.NewClient(s.names[1])
	return s
}

// Init creates the tables when they are missing.
func (s *Store) Init(ctx context.Context) error {
	for _, n := range s.names {
		if err := bstorage.CreateTable(ctx, s.svc, n); err != nil {
			return err
		}
	}
	return nil
}

// subscriptionEntity is a Subscriptions row as the Table service stores it.
type subscriptionEntity struct {
	PartitionKey    string
	RowKey          string
	Name            string
	Email           string
	Plan            Plan
	AmountMinor     int64Value
	Currency        string
	NextBillingDate string
	AnchorDay       int
	Status          Status
}

func (e subscriptionEntity) subscription() Subscription {
	return Subscription{ID: e.RowKey, Name: e.Name, Email: e.Email, Plan: e.Plan, AmountMinor: int64(e.AmountMinor),
		Currency: e.Currency, NextBillingDate: e.NextBillingDate, AnchorDay: e.AnchorDay, Status: e.Status}
}

func marshalSubscription(sub Subscription) ([]byte, error) {
	b, err := json.Marshal(map[string]any{
		"PartitionKey":           SubscriptionPartition,
		"RowKey":                 sub.ID,
		"Name":                   sub.Name,
		"Email":                  sub.Email,
		"Plan":                   sub.Plan,
		"AmountMinor":            fmt.Sprint(sub.AmountMinor),
		"AmountMinor@odata.type": "Edm.Int64",
		"Currency":               sub.Currency,
		"NextBillingDate":        sub.NextBillingDate,
		"AnchorDay":              sub.AnchorDay,
		"Status":                 sub.Status,
		"UpdatedAt@odata.type":   "Edm.DateTime",
		"UpdatedAt":              time.Now().UTC().Format(time.RFC3339Nano),
	})
	if err != nil {
		return nil, fmt.Errorf("encode subscription %s: %w", sub.ID, err)
	}
	return b, nil
}

// Put inserts or replaces a subscription.
func (s *Store) Put(ctx context.Context, sub Subscription) error {
	if err := sub.Validate(); err != nil {
		return err
	}
	b, err := marshalSubscription(sub)
	if err != nil {
		return err
	}
	if _, err := s.subs.UpsertEntity(ctx, b, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace}); err != nil {
		return fmt.Errorf("put subscription %s: %w", sub.ID, err)
	}
	return nil
}

// Get reads one subscription and its ETag. An unknown id wraps
// [ErrSubscriptionNotFound].
func (s *Store) Get(ctx context.Context, id string) (Subscription, azcore.ETag, error) {
	res, err := s.subs.GetEntity(ctx, SubscriptionPartition, id, nil)
	if bstorage.IsNotFound(err) {
		return Subscription{}, "", fmt.Errorf("subscription %s: %w", id, ErrSubscriptionNotFound)
	}
	if err != nil {
		return Subscription{}, "", fmt.Errorf("read subscription %s: %w", id, err)
	}
	var e subscriptionEntity
	if err := json.Unmarshal(res.Value, &e); err != nil {
		return Subscription{}, "", fmt.Errorf("decode subscription %s: %w", id, err)
	}
	return e.subscription(), res.ETag, nil
}

// List returns every subscription, ordered by id. A missing table is an
// empty list.
func (s *Store) List(ctx context.Context) ([]Subscription, error) {
	filter := "PartitionKey eq '" + SubscriptionPartition + "'"
	pager := s.subs.NewListEntitiesPager(&aztables.ListEntitiesOptions{Filter: &filter})
	var out []Subscription
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if bstorage.IsNotFound(err) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("list subscriptions: %w", err)
		}
		for _, raw := range page.Entities {
			var e subscriptionEntity
			if err := json.Unmarshal(raw, &e); err != nil {
				return nil, fmt.Errorf("decode subscription row: %w", err)
			}
			out = append(out, e.subscription())
		}
	}
	slices.SortFunc(out, func(a, b Subscription) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Due returns the active subscriptions due on billingDay ([Due] over
// [Store.List]).
func (s *Store) Due(ctx context.Context, billingDay string) ([]Subscription, error) {
	all, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	return Due(all, billingDay)
}

// resultEntity is a BillingResults row.
type resultEntity struct {
	PartitionKey    string
	RowKey          string
	BillingDay      string
	Name            string
	Email           string
	Plan            Plan
	Status          string
	PaymentID       string
	AmountMinor     int64Value
	Currency        string
	Error           string
	NextBillingDate string
}

func (e resultEntity) result() Result {
	return Result{SubscriptionID: e.PartitionKey, Period: e.RowKey, BillingDay: e.BillingDay, Name: e.Name, Email: e.Email,
		Plan: e.Plan, Status: e.Status, PaymentID: e.PaymentID, AmountMinor: int64(e.AmountMinor), Currency: e.Currency,
		Error: e.Error, NextBillingDate: e.NextBillingDate}
}

func marshalResult(r Result) ([]byte, error) {
	b, err := json.Marshal(map[string]any{
		"PartitionKey":           r.SubscriptionID,
		"RowKey":                 r.Period,
		"BillingDay":             r.BillingDay,
		"Name":                   r.Name,
		"Email":                  r.Email,
		"Plan":                   r.Plan,
		"Status":                 r.Status,
		"PaymentID":              r.PaymentID,
		"AmountMinor":            fmt.Sprint(r.AmountMinor),
		"AmountMinor@odata.type": "Edm.Int64",
		"Currency":               r.Currency,
		"Error":                  r.Error,
		"NextBillingDate":        r.NextBillingDate,
		"RecordedAt@odata.type":  "Edm.DateTime",
		"RecordedAt":             time.Now().UTC().Format(time.RFC3339Nano),
	})
	if err != nil {
		return nil, fmt.Errorf("encode result %s/%s: %w", r.SubscriptionID, r.Period, err)
	}
	return b, nil
}

// Result reads the result row of one subscription and period; ok is false
// when there is none.
func (s *Store) Result(ctx context.Context, subscriptionID, period string) (r Result, ok bool, err error) {
	r, _, ok, err = s.result(ctx, subscriptionID, period)
	return r, ok, err
}

func (s *Store) result(ctx context.Context, subscriptionID, period string) (Result, azcore.ETag, bool, error) {
	res, err := s.results.GetEntity(ctx, subscriptionID, period, nil)
	if bstorage.IsNotFound(err) {
		return Result{}, "", false, nil
	}
	if err != nil {
		return Result{}, "", false, fmt.Errorf("read result %s/%s: %w", subscriptionID, period, err)
	}
	var e resultEntity
	if err := json.Unmarshal(res.Value, &e); err != nil {
		return Result{}, "", false, fmt.Errorf("decode result %s/%s: %w", subscriptionID, period, err)
	}
	return e.result(), res.ETag, true, nil
}

// Results returns the result rows a billing run recorded, ordered by
// subscription id.
func (s *Store) Results(ctx context.Context, billingDay string) ([]Result, error) {
	filter := "BillingDay eq '" + strings.ReplaceAll(billingDay, "'", "''") + "'"
	pager := s.results.NewListEntitiesPager(&aztables.ListEntitiesOptions{Filter: &filter})
	var out []Result
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if bstorage.IsNotFound(err) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("list results of %s: %w", billingDay, err)
		}
		for _, raw := range page.Entities {
			var e resultEntity
			if err := json.Unmarshal(raw, &e); err != nil {
				return nil, fmt.Errorf("decode result row: %w", err)
			}
			out = append(out, e.result())
		}
	}
	slices.SortFunc(out, func(a, b Result) int { return strings.Compare(a.SubscriptionID, b.SubscriptionID) })
	return out, nil
}

// maxConflicts bounds the read-check-write loops that lose a race to
// another writer.
const maxConflicts = 20

// Record stores the outcome of billing one subscription for one period and,
// when it was charged, moves the subscription's next billing date past that
// period. Both writes are idempotent, so a retried or replayed call (or a
// second run for the same day) changes nothing:
//
//   - the result row is keyed by subscription and period; a Failed outcome
//     never replaces a Charged one (money taken stays recorded);
//   - the subscription is advanced only while its NextBillingDate still
//     equals the period, with If-Match on the ETag read, so two concurrent
//     calls advance it once and a repeated call finds it advanced already.
//
// advanced reports whether this call moved the billing date. The returned
// result carries the next billing date.
func (s *Store) Record(ctx context.Context, r Result) (stored Result, advanced bool, err error) {
	if r.Status != Charged && r.Status != Failed {
		return r, false, fmt.Errorf("result %s/%s: status %q is not %s or %s", r.SubscriptionID, r.Period, r.Status, Charged, Failed)
	}
	if r.Status == Charged && r.NextBillingDate == "" {
		return r, false, fmt.Errorf("result %s/%s: a charged result needs the next billing date", r.SubscriptionID, r.Period)
	}
	if r, err = s.putResult(ctx, r); err != nil {
		return r, false, err
	}
	if r.Status != Charged {
		return r, false, nil
	}
	advanced, err = s.advance(ctx, r.SubscriptionID, r.Period, r.NextBillingDate)
	return r, advanced, err
}

func (s *Store) putResult(ctx context.Context, r Result) (Result, error) {
	b, err := marshalResult(r)
	if err != nil {
		return r, err
	}
	for range maxConflicts {
		old, etag, ok, err := s.result(ctx, r.SubscriptionID, r.Period)
		if err != nil {
			return r, err
		}
		switch {
		case ok && old.Status == Charged:
			// Recorded already; a charge is never overwritten (a repeat
			// carries the same payment, a failure must not hide one).
			return old, nil
		case ok:
			_, err = s.results.UpdateEntity(ctx, b, &aztables.UpdateEntityOptions{IfMatch: &etag, UpdateMode: aztables.UpdateModeReplace})
		default:
			_, err = s.results.AddEntity(ctx, b, nil)
			if bstorage.ErrorCode(err) == string(aztables.TableNotFound) {
				if err = bstorage.CreateTable(ctx, s.svc, s.names[1]); err == nil {
					_, err = s.results.AddEntity(ctx, b, nil)
				}
			}
		}
		if bstorage.IsConflict(err) {
			continue // another writer got there first: look again
		}
		if err != nil {
			return r, fmt.Errorf("record result %s/%s: %w", r.SubscriptionID, r.Period, err)
		}
		return r, nil
	}
	return r, fmt.Errorf("record result %s/%s: lost %d races to other writers", r.SubscriptionID, r.Period, maxConflicts)
}

func (s *Store) advance(ctx context.Context, id, period, next string) (bool, error) {
	for range maxConflicts {
		sub, etag, err := s.Get(ctx, id)
		if err != nil {
			return false, fmt.Errorf("advance: %w", err)
		}
		if sub.NextBillingDate != period {
			// Advanced already (a repeat), or changed by hand: either way
			// this period is no longer the one due.
			return false, nil
		}
		sub.NextBillingDate = next
		b, err := marshalSubscription(sub)
		if err != nil {
			return false, err
		}
		_, err = s.subs.UpdateEntity(ctx, b, &aztables.UpdateEntityOptions{IfMatch: &etag, UpdateMode: aztables.UpdateModeReplace})
		if bstorage.IsConflict(err) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("advance subscription %s past %s: %w", id, period, err)
		}
		return true, nil
	}
	return false, fmt.Errorf("advance subscription %s past %s: lost %d races to other writers", id, period, maxConflicts)
}

// seedMarker is the row that records a completed demo seed.
const seedMarker = "demo-seed"

// SeedIfEmpty writes subs when the table holds no subscriptions other than
// earlier seeds of the same ids, and no completed seed is recorded. It is
// safe to call concurrently and again after a crash part-way: rows are
// inserted with conditional adds (an existing row is kept) and the
// completion marker is written last. It returns how many rows it inserted.
func (s *Store) SeedIfEmpty(ctx context.Context, subs []Subscription) (int, error) {
	if _, err := s.subs.GetEntity(ctx, metaPartition, seedMarker, nil); err == nil {
		return 0, nil
	} else if !bstorage.IsNotFound(err) {
		return 0, fmt.Errorf("read seed marker: %w", err)
	}
	existing, err := s.List(ctx)
	if err != nil {
		return 0, err
	}
	ids := make(map[string]bool, len(subs))
	for _, sub := range subs {
		ids[sub.ID] = true
	}
	for _, e := range existing {
		if !ids[e.ID] {
			return 0, nil // real data: leave it alone
		}
	}
	if err := s.Init(ctx); err != nil {
		return 0, err
	}
	n := 0
	for _, sub := range subs {
		if err := sub.Validate(); err != nil {
			return n, err
		}
		b, err := marshalSubscription(sub)
		if err != nil {
			return n, err
		}
		_, err = s.subs.AddEntity(ctx, b, nil)
		switch {
		case bstorage.IsConflict(err):
		case err != nil:
			return n, fmt.Errorf("seed subscription %s: %w", sub.ID, err)
		default:
			n++
		}
	}
	marker, _ := json.Marshal(map[string]any{"PartitionKey": metaPartition, "RowKey": seedMarker, "Rows": len(subs)})
	if _, err := s.subs.UpsertEntity(ctx, marker, nil); err != nil {
		return n, fmt.Errorf("write seed marker: %w", err)
	}
	return n, nil
}
