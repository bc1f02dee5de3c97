package billing

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/durable"
	"github.com/stratus-dev/stratus/durable/backend/memory"
	"github.com/stratus-dev/stratus/durable/history"
)

// runWorker runs the billing orchestrator and activities of svc on a durable
// worker over the in-memory task hub until the test ends.
func runWorker(t *testing.T, svc *Service) *durable.Client {
	t.Helper()
	b := memory.New()
	acts := svc.Activities()
	w := durable.NewWorker(b, durable.WorkerOptions{
		Orchestrators: func(n string) (durable.Orchestrator, bool) { return Orchestrator(), n == ProcessBilling },
		Activities:    func(n string) (durable.ActivityFunc, bool) { a, ok := acts[n]; return a, ok },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	return durable.NewClient(b)
}

func runBilling(t *testing.T, client *durable.Client, id string, in RunInput) Summary {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := client.ScheduleNew(ctx, ProcessBilling, in, durable.WithStartInstanceID(id)); err != nil {
		t.Fatal(err)
	}
	st, err := client.WaitForCompletion(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if st.RuntimeStatus != history.StatusCompleted {
		t.Fatalf("%s ended %s: %s", id, st.RuntimeStatus, st.Output)
	}
	var sum Summary
	if err := json.Unmarshal([]byte(st.Output), &sum); err != nil {
		t.Fatalf("summary %s: %v", st.Output, err)
	}
	var progress Progress
	if err := json.Unmarshal([]byte(st.CustomStatus), &progress); err != nil || progress.Stage != "done" || progress.Pending != 0 ||
		progress.Charged != sum.Charged || progress.Failed != sum.Failed || progress.Total != sum.Subscriptions {
		t.Errorf("custom status %s (%v) does not match summary %+v", st.CustomStatus, err, sum)
	}
	return sum
}

func TestBillingRunWithFlakyPaymentService(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	svc := boundService(t, map[string]string{SettingSeedDemoData: "true"})
	// Two calls in five fail: one after charging (the answer is lost), one
	// before. Retries under the same key must still charge each once.
	if err := svc.Simulator.SetConfig(ctx, SimConfig{FailureRate: 0.3}); err != nil {
		t.Fatal(err)
	}
	pattern := []float64{0.1, 0.9, 0.2, 0.9, 0.9}
	var draws, lost atomic.Int64
	svc.Simulator.random = func() float64 {
		d := pattern[(draws.Add(1)-1)%int64(len(pattern))]
		if d < 0.15 {
			lost.Add(1)
		}
		return d
	}
	client := runWorker(t, svc)
	day := "2025-03-01"

	sum := runBilling(t, client, "billing-"+day, RunInput{BillingDay: day, RetryFirstIntervalSeconds: 0.05})
	t.Logf("summary %+v; %d calls, %d answers lost after charging", sum, draws.Load(), lost.Load())
	if lost.Load() == 0 {
		t.Error("no answer was lost after charging")
	}
	if sum.Subscriptions != DemoDue || sum.Charged != DemoDue-DemoDeclined || sum.Failed != DemoDeclined ||
		sum.NoticesSent != DemoDue || sum.NoticesFailed != 0 {
		t.Fatalf("summary %+v", sum)
	}
	if sum.ReportBlob != svc.InvoicesContainer+"/billing-2025-03-01.html" || sum.Report.Location != svc.OutboxContainer+"/report-2025-03-01.eml" {
		t.Fatalf("report %s, mailed to %+v", sum.ReportBlob, sum.Report)
	}
	charges, err := svc.Simulator.Charges(ctx)
	if err != nil {
		t.Fatal(err)
	}
	perKey := map[string]int{}
	for _, c := range charges {
		perKey[c.IdempotencyKey]++
	}
	if len(charges) != DemoDue-DemoDeclined || len(perKey) != len(charges) {
		t.Fatalf("%d charges over %d keys, want %d once each", len(charges), len(perKey), DemoDue-DemoDeclined)
	}
	var total int64
	for _, tot := range sum.Totals {
		total += tot.ChargedMinor
	}
	if total == 0 {
		t.Error("no totals")
	}
	outbox := len(listBlobs(t, svc, svc.OutboxContainer))
	if outbox != DemoDue+1 {
		t.Fatalf("%d outbox messages, want %d notices and the report", outbox, DemoDue+1)
	}

	// A second run for the same day (another instance): only the declined
	// subscriptions are still due; nothing is charged twice and no message
	// is duplicated.
	again := runBilling(t, client, "billing-"+day+"-again", RunInput{BillingDay: day, RetryFirstIntervalSeconds: 0.05})
	if again.Subscriptions != DemoDeclined || again.Charged != 0 {
		t.Fatalf("second run %+v", again)
	}
	if after, _ := svc.Simulator.Charges(ctx); len(after) != len(charges) {
		t.Fatalf("second run charged: %d charges, had %d", len(after), len(charges))
	}
	if n := len(listBlobs(t, svc, svc.OutboxContainer)); n != outbox {
		t.Fatalf("second run: %d outbox messages, had %d", n, outbox)
	}
	subs, _ := svc.Store.List(ctx)
	advanced := 0
	for _, s := range subs {
		if s.Status == Active && s.NextBillingDate > day {
			advanced++
		}
	}
	// 12 were due later anyway; the 20 charged moved past the day.
	if want := DemoCount - DemoCancelled - DemoDeclined; advanced != want {
		t.Errorf("%d active subscriptions are past the billing day, want %d", advanced, want)
	}
}

func TestBillingRunChargeRetriesExhausted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	svc := boundService(t, map[string]string{SettingSimOutage: "1h"})
	if err := svc.Store.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := svc.Store.Put(ctx, testSub); err != nil {
		t.Fatal(err)
	}
	client := runWorker(t, svc)
	sum := runBilling(t, client, "billing-down", RunInput{BillingDay: "2025-03-01", RetryFirstIntervalSeconds: 0.001})
	if sum.Subscriptions != 1 || sum.Failed != 1 || sum.Charged != 0 {
		t.Fatalf("summary %+v", sum)
	}
	r, ok, err := svc.Store.Result(ctx, testSub.ID, testSub.NextBillingDate)
	if err != nil || !ok || r.Status != Failed || r.Error == "" {
		t.Fatalf("result %+v %v %v", r, ok, err)
	}
	if sub, _, _ := svc.Store.Get(ctx, testSub.ID); sub.NextBillingDate != testSub.NextBillingDate {
		t.Fatal("a failed charge advanced the billing date")
	}
}

func TestRunInputForms(t *testing.T) {
	t.Parallel()
	var a, b RunInput
	if err := json.Unmarshal([]byte(`"2025-03-01"`), &a); err != nil || a.BillingDay != "2025-03-01" {
		t.Fatalf("string form: %+v %v", a, err)
	}
	if err := json.Unmarshal([]byte(`{"billingDay":"2025-03-02","retryFirstIntervalSeconds":1.5}`), &b); err != nil ||
		b.BillingDay != "2025-03-02" || b.RetryFirstIntervalSeconds != 1.5 {
		t.Fatalf("object form: %+v %v", b, err)
	}
	if err := json.Unmarshal([]byte(`42`), &a); err == nil {
		t.Error("a number was accepted")
	}
}

func TestStartRunOncePerDay(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	svc := boundService(t, map[string]string{SettingSeedDemoData: "true"})
	client := runWorker(t, svc)
	in := RunInput{BillingDay: "2025-03-01", RetryFirstIntervalSeconds: 0.05}
	id, started, err := StartRun(ctx, client, in)
	if err != nil || !started || id != "billing-2025-03-01" {
		t.Fatalf("first StartRun = %s %v %v", id, started, err)
	}
	// A second firing while it runs, and one after it completed.
	if _, started, err := StartRun(ctx, client, in); err != nil || started {
		t.Fatalf("second StartRun while running: started %v, %v", started, err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	st, err := client.WaitForCompletion(wctx, id)
	if err != nil || st.RuntimeStatus != history.StatusCompleted {
		t.Fatalf("run: %v %v", st, err)
	}
	if _, started, err := StartRun(ctx, client, in); err != nil || started {
		t.Fatalf("StartRun after completion: started %v, %v", started, err)
	}
	if charges, _ := svc.Simulator.Charges(ctx); len(charges) != DemoDue-DemoDeclined {
		t.Fatalf("%d charges, want %d", len(charges), DemoDue-DemoDeclined)
	}
	if _, _, err := StartRun(ctx, client, RunInput{BillingDay: "tomorrow"}); err == nil {
		t.Error("a bad day started a run")
	}
}
