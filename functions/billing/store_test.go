package billing

import (
	"context"
	"errors"
	"sync"
	"testing"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	s := NewStore(storage(t).Table, prefix())
	if err := s.Init(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStorePutGetListDue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	big := testSub
	big.ID, big.AmountMinor, big.Currency = "s-big", 5_000_000_000_00, "USD" // more than 2^31 minor units
	later := testSub
	later.ID, later.NextBillingDate = "s-later", "2025-04-01"
	gone := testSub
	gone.ID, gone.Status = "s-gone", Cancelled
	for _, sub := range []Subscription{testSub, big, later, gone} {
		if err := s.Put(ctx, sub); err != nil {
			t.Fatal(err)
		}
	}
	got, etag, err := s.Get(ctx, "s-big")
	if err != nil || got != big || etag == "" {
		t.Fatalf("Get = %+v %q %v, want %+v", got, etag, err, big)
	}
	if _, _, err := s.Get(ctx, "nope"); !errors.Is(err, ErrSubscriptionNotFound) {
		t.Errorf("missing: %v", err)
	}
	all, err := s.List(ctx)
	if err != nil || len(all) != 4 {
		t.Fatalf("List = %d rows, %v", len(all), err)
	}
	due, err := s.Due(ctx, "2025-03-01")
	if err != nil || len(due) != 2 || due[0].ID != "s-1" || due[1].ID != "s-big" {
		t.Fatalf("Due = %+v, %v", due, err)
	}
	if err := s.Put(ctx, Subscription{ID: "bad"}); err == nil {
		t.Error("invalid subscription stored")
	}
}

func TestListOfMissingTableIsEmpty(t *testing.T) {
	t.Parallel()
	s := NewStore(storage(t).Table, prefix())
	if subs, err := s.List(context.Background()); err != nil || len(subs) != 0 {
		t.Fatalf("List = %v, %v", subs, err)
	}
}

func chargedResult(sub Subscription, paymentID string) Result {
	next, _ := Advance(sub.Plan, sub.NextBillingDate, sub.AnchorDay)
	return Result{SubscriptionID: sub.ID, Period: sub.NextBillingDate, BillingDay: "2025-03-01", Name: sub.Name, Email: sub.Email,
		Plan: sub.Plan, Status: Charged, PaymentID: paymentID, AmountMinor: sub.AmountMinor, Currency: sub.Currency, NextBillingDate: next}
}

func TestRecordIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	if err := s.Put(ctx, testSub); err != nil {
		t.Fatal(err)
	}
	r := chargedResult(testSub, "pay_1")
	_, advanced, err := s.Record(ctx, r)
	if err != nil || !advanced {
		t.Fatalf("first Record: advanced %v, %v", advanced, err)
	}
	// The same outcome again (a retried activity, a replay, a second run).
	_, advanced, err = s.Record(ctx, r)
	if err != nil || advanced {
		t.Fatalf("second Record: advanced %v, %v; want no advance", advanced, err)
	}
	// A late failure for the same period does not hide the charge.
	failed := r
	failed.Status, failed.PaymentID, failed.Error, failed.NextBillingDate = Failed, "", "timeout", ""
	stored, _, err := s.Record(ctx, failed)
	if err != nil || stored.Status != Charged || stored.PaymentID != "pay_1" {
		t.Fatalf("failure over charge: stored %+v, %v", stored, err)
	}
	sub, _, _ := s.Get(ctx, testSub.ID)
	if sub.NextBillingDate != "2025-04-01" {
		t.Fatalf("next billing date %s, want 2025-04-01 (advanced once)", sub.NextBillingDate)
	}
	got, ok, err := s.Result(ctx, testSub.ID, "2025-03-01")
	if err != nil || !ok || got.Status != Charged || got.NextBillingDate != "2025-04-01" || got.AmountMinor != 999 {
		t.Fatalf("Result = %+v %v %v", got, ok, err)
	}
	rs, err := s.Results(ctx, "2025-03-01")
	if err != nil || len(rs) != 1 {
		t.Fatalf("Results = %+v, %v", rs, err)
	}
}

func TestFailedThenChargedNextRun(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	if err := s.Put(ctx, testSub); err != nil {
		t.Fatal(err)
	}
	failed := Result{SubscriptionID: testSub.ID, Period: testSub.NextBillingDate, BillingDay: "2025-03-01", Status: Failed,
		AmountMinor: 999, Currency: "EUR", Error: "card declined"}
	if _, advanced, err := s.Record(ctx, failed); err != nil || advanced {
		t.Fatalf("failed Record: advanced %v, %v", advanced, err)
	}
	if sub, _, _ := s.Get(ctx, testSub.ID); sub.NextBillingDate != testSub.NextBillingDate {
		t.Fatalf("a failure advanced the billing date to %s", sub.NextBillingDate)
	}
	ok := chargedResult(testSub, "pay_2")
	ok.BillingDay = "2025-03-02"
	if _, advanced, err := s.Record(ctx, ok); err != nil || !advanced {
		t.Fatalf("charged Record: advanced %v, %v", advanced, err)
	}
	got, _, _ := s.Result(ctx, testSub.ID, testSub.NextBillingDate)
	if got.Status != Charged || got.BillingDay != "2025-03-02" {
		t.Fatalf("row %+v, want the charge of the second run", got)
	}
}

func TestConcurrentRecordsAdvanceOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	if err := s.Put(ctx, testSub); err != nil {
		t.Fatal(err)
	}
	r := chargedResult(testSub, "pay_1")
	var wg sync.WaitGroup
	var mu sync.Mutex
	advances := 0
	errs := make(chan error, 10)
	for range 10 {
		wg.Go(func() {
			_, advanced, err := s.Record(ctx, r)
			if err != nil {
				errs <- err
				return
			}
			if advanced {
				mu.Lock()
				advances++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	sub, _, _ := s.Get(ctx, testSub.ID)
	if advances != 1 || sub.NextBillingDate != "2025-04-01" {
		t.Fatalf("%d advances, next date %s; want 1 and 2025-04-01", advances, sub.NextBillingDate)
	}
}

func TestRecordRejectsBadResults(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	for _, r := range []Result{{SubscriptionID: "s", Period: "2025-03-01", Status: "maybe"}, {SubscriptionID: "s", Period: "2025-03-01", Status: Charged}} {
		if _, _, err := s.Record(context.Background(), r); err == nil {
			t.Errorf("Record(%+v): no error", r)
		}
	}
}

func TestSeedIfEmpty(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	demo, err := DemoSubscriptions("2025-03-01")
	if err != nil {
		t.Fatal(err)
	}
	// A crash part-way: some rows there, no marker.
	for _, sub := range demo[:5] {
		if err := s.Put(ctx, sub); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	counts := make([]int, 4)
	for i := range counts {
		wg.Go(func() {
			n, err := s.SeedIfEmpty(ctx, demo)
			if err != nil {
				t.Error(err)
			}
			counts[i] = n
		})
	}
	wg.Wait()
	total := 0
	for _, n := range counts {
		total += n
	}
	if total != DemoCount-5 {
		t.Errorf("inserted %d rows in all, want %d", total, DemoCount-5)
	}
	all, _ := s.List(ctx)
	if len(all) != DemoCount {
		t.Fatalf("%d subscriptions, want %d", len(all), DemoCount)
	}
	if n, err := s.SeedIfEmpty(ctx, demo); n != 0 || err != nil {
		t.Errorf("after the marker: inserted %d, %v", n, err)
	}
}

func TestSeedLeavesRealDataAlone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	if err := s.Put(ctx, testSub); err != nil {
		t.Fatal(err)
	}
	demo, _ := DemoSubscriptions("2025-03-01")
	n, err := s.SeedIfEmpty(ctx, demo)
	all, _ := s.List(ctx)
	if n != 0 || err != nil || len(all) != 1 {
		t.Fatalf("seeded %d (%v) into a table with real data; %d rows", n, err, len(all))
	}
}
