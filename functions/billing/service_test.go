package billing

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/host/config"
)

func TestLoadSettings(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 3, 1, 1, 0, 0, 0, time.UTC)
	s, err := LoadSettings(config.NewSettings(nil, config.LocalSettings{}), now)
	if err != nil {
		t.Fatal(err)
	}
	if s.PaymentServiceURL != DefaultPaymentServiceURL || s.RetryFirstInterval != 10*time.Second || s.OwnerEmail != DefaultOwnerEmail ||
		s.SMTP.Host != "" || s.SeedDemoData || s.Sim.Outage != nil || s.From != DefaultFrom {
		t.Fatalf("defaults %+v", s)
	}
	s, err = LoadSettings(config.NewSettings(nil, config.LocalSettings{Values: map[string]string{
		SettingPaymentServiceURL:  "http://127.0.0.1:9999/api/sim/payments",
		SettingRetryFirstInterval: "0.5",
		SettingSeedDemoData:       "true",
		SettingSimFailureRate:     "0.5",
		SettingSimLatencyMs:       "20",
		SettingSimOutage:          "30s",
		SettingSMTPHost:           "127.0.0.1",
		SettingSMTPPort:           "2525",
		SettingStoragePrefix:      "Run1",
	}}), now)
	if err != nil {
		t.Fatal(err)
	}
	if s.RetryFirstInterval != 500*time.Millisecond || !s.SeedDemoData || s.Sim.FailureRate != 0.5 || s.Sim.LatencyMs != 20 ||
		s.Sim.Outage == nil || !s.Sim.Outage.End.Equal(now.Add(30*time.Second)) || s.SMTP.Port != 2525 || s.StoragePrefix != "run1" {
		t.Fatalf("settings %+v", s)
	}
	_, err = LoadSettings(config.NewSettings(nil, config.LocalSettings{Values: map[string]string{
		SettingPaymentServiceURL:  "payments",
		SettingRetryFirstInterval: "-1",
		SettingSimFailureRate:     "1.5",
		SettingSimOutage:          "later",
		SettingSMTPPort:           "smtp",
		SettingStoragePrefix:      "no-dashes",
	}}), now)
	for _, name := range []string{SettingPaymentServiceURL, SettingRetryFirstInterval, SettingSimFailureRate, SettingSimOutage, SettingSMTPPort, SettingStoragePrefix} {
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("error %v does not name %s", err, name)
		}
	}
}

// boundService binds a service with its own storage prefix whose payment
// service is its own simulator on a real HTTP server.
func boundService(t *testing.T, values map[string]string) *Service {
	t.Helper()
	c := storage(t)
	svc := NewService()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { svc.Simulator.ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	v := map[string]string{SettingStoragePrefix: prefix(), SettingPaymentServiceURL: srv.URL + "/api/sim/payments"}
	for k, x := range values {
		v[k] = x
	}
	b, ok := svc.Binding("b", SubscriptionsTable).(bindings.Binder)
	if !ok {
		t.Fatal("the service binding is not a bindings.Binder")
	}
	if err := b.Bind(testEnv(t, c, v)); err != nil {
		t.Fatal(err)
	}
	return svc
}

func TestUnboundService(t *testing.T) {
	t.Parallel()
	if _, err := NewService().ListToBill(context.Background(), "2025-03-01"); !errors.Is(err, ErrServiceNotBound) {
		t.Fatalf("err = %v, want ErrServiceNotBound", err)
	}
}

func TestBillingFlowWithoutOrchestrator(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	svc := boundService(t, map[string]string{SettingSeedDemoData: "true"})
	day := "2025-03-01"

	due, err := svc.ListToBill(ctx, day)
	if err != nil {
		t.Fatal(err)
	}
	if len(due) != DemoDue {
		t.Fatalf("%d due after seeding, want %d", len(due), DemoDue)
	}
	var results []Result
	for _, sub := range due {
		r, err := svc.Charge(ctx, ChargeInput{BillingDay: day, Subscription: sub})
		if err != nil {
			t.Fatal(err)
		}
		// A repeat (a retried activity) changes nothing.
		again, err := svc.Charge(ctx, ChargeInput{BillingDay: day, Subscription: sub})
		if err != nil || again.PaymentID != r.PaymentID || again.Status != r.Status {
			t.Fatalf("repeat charge of %s: %+v, %v; first %+v", sub.ID, again, err, r)
		}
		results = append(results, r)
	}
	charges, err := svc.Simulator.Charges(ctx)
	if err != nil || len(charges) != DemoDue-DemoDeclined {
		t.Fatalf("%d charges at the simulator (%v), want %d", len(charges), err, DemoDue-DemoDeclined)
	}
	failed := 0
	for _, r := range results {
		if r.Status == Failed {
			failed++
			if !strings.Contains(r.Error, "card_declined") {
				t.Errorf("%s failed with %q, want the decline", r.SubscriptionID, r.Error)
			}
		}
	}
	if failed != DemoDeclined {
		t.Fatalf("%d failed, want %d", failed, DemoDeclined)
	}
	// Nothing is due any more except the declined ones.
	if again, err := svc.ListToBill(ctx, day); err != nil || len(again) != DemoDeclined {
		t.Fatalf("due after charging: %d, %v; want the %d declined", len(again), err, DemoDeclined)
	}

	inv, err := svc.GenerateInvoice(ctx, InvoiceInput{BillingDay: day, Results: results})
	if err != nil {
		t.Fatal(err)
	}
	if inv.Charged != DemoDue-DemoDeclined || inv.Failed != DemoDeclined || inv.CSVBlob != svc.InvoicesContainer+"/billing-2025-03-01.csv" {
		t.Fatalf("invoice %+v", inv)
	}
	csvName := strings.TrimPrefix(inv.CSVBlob, svc.InvoicesContainer+"/")
	data, err := readBlob(ctx, svc.Blob, svc.InvoicesContainer, csvName)
	if err != nil || strings.Count(string(data), "\n") != 1+DemoDue+len(inv.Totals) {
		t.Fatalf("report CSV (%v):\n%s", err, data)
	}
	if _, err := readBlob(ctx, svc.Blob, svc.InvoicesContainer, strings.TrimSuffix(csvName, ".csv")+".html"); err != nil {
		t.Fatal(err)
	}
	rows, err := svc.Store.Results(ctx, day)
	if err != nil || len(rows) != DemoDue {
		t.Fatalf("%d result rows (%v), want %d", len(rows), err, DemoDue)
	}

	// Notices and the report go to the outbox, once per key.
	for _, r := range results {
		if _, err := svc.SendEmail(ctx, EmailInput{Email: NoticeEmail(day, r)}); err != nil {
			t.Fatal(err)
		}
	}
	d, err := svc.SendEmail(ctx, ReportEmail(day, svc.Settings.OwnerEmail, inv))
	if err != nil || d.Transport != "outbox" || d.Location != svc.OutboxContainer+"/report-2025-03-01.eml" {
		t.Fatalf("report delivery %+v, %v", d, err)
	}
	if _, err := svc.SendEmail(ctx, ReportEmail(day, svc.Settings.OwnerEmail, inv)); err != nil {
		t.Fatal(err)
	}
	names := listBlobs(t, svc, svc.OutboxContainer)
	if len(names) != DemoDue+1 {
		t.Fatalf("%d outbox blobs, want %d (one per key): %v", len(names), DemoDue+1, names)
	}
	eml, err := readBlob(ctx, svc.Blob, svc.OutboxContainer, "report-2025-03-01.eml")
	if err != nil {
		t.Fatal(err)
	}
	msg, err := mail.ReadMessage(strings.NewReader(string(eml)))
	if err != nil || msg.Header.Get("To") != "<"+DefaultOwnerEmail+">" {
		t.Fatalf("report message: %v %v", msg, err)
	}
	body, _ := io.ReadAll(msg.Body)
	if !strings.Contains(string(body), "filename=billing-2025-03-01.csv") {
		t.Error("the report email has no CSV attachment")
	}
}

func listBlobs(t *testing.T, svc *Service, container string) []string {
	t.Helper()
	var names []string
	pager := svc.Blob.NewListBlobsFlatPager(container, nil)
	for pager.More() {
		page, err := pager.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page.Segment.BlobItems {
			names = append(names, *b.Name)
		}
	}
	return names
}

func TestChargeRetryableErrorIsAnError(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	svc := boundService(t, map[string]string{SettingSimOutage: "1h"})
	if err := svc.Store.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := svc.Store.Put(ctx, testSub); err != nil {
		t.Fatal(err)
	}
	_, err := svc.Charge(ctx, ChargeInput{BillingDay: "2025-03-01", Subscription: testSub})
	if !IsRetryable(err) || !strings.Contains(err.Error(), "503") {
		t.Fatalf("err = %v, want a retryable 503 for the retry policy", err)
	}
	if sub, _, _ := svc.Store.Get(ctx, testSub.ID); sub.NextBillingDate != testSub.NextBillingDate {
		t.Fatal("an unpaid period was advanced")
	}
}

func TestNoticeEmail(t *testing.T) {
	t.Parallel()
	ok := NoticeEmail("2025-03-01", Result{SubscriptionID: "s-1", Name: "Ada", Email: "ada@example.com", Plan: Monthly, Period: "2025-03-01",
		Status: Charged, PaymentID: "pay_1", AmountMinor: 999, Currency: "EUR", NextBillingDate: "2025-04-01"})
	if ok.Key != "notice-2025-03-01-s-1" || ok.To != "ada@example.com" || !strings.Contains(ok.Subject, "9.99 EUR") ||
		!strings.Contains(ok.Text, "pay_1") || !strings.Contains(ok.Text, "2025-04-01") {
		t.Errorf("success notice %+v", ok)
	}
	bad := NoticeEmail("2025-03-01", Result{SubscriptionID: "s-2", Name: "Bob", Email: "bob@example.com", Plan: Yearly, Period: "2025-03-01",
		Status: Failed, AmountMinor: 9900, Currency: "USD", Error: "card declined"})
	if !strings.HasPrefix(bad.Subject, "Payment failed") || !strings.Contains(bad.Text, "card declined") {
		t.Errorf("failure notice %+v", bad)
	}
}
