package billing

import (
	"slices"
	"strings"
	"testing"
)

func TestAdvance(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		plan   Plan
		date   string
		anchor int
		want   string
	}{
		{"monthly mid-month", Monthly, "2025-03-15", 0, "2025-04-15"},
		{"monthly december rolls the year", Monthly, "2025-12-01", 0, "2026-01-01"},
		{"monthly 31 January clamps to February", Monthly, "2025-01-31", 0, "2025-02-28"},
		{"monthly leap February", Monthly, "2024-01-31", 0, "2024-02-29"},
		{"anchor 31 comes back after February", Monthly, "2025-02-28", 31, "2025-03-31"},
		{"anchor 30 in a 31-day month", Monthly, "2025-04-30", 30, "2025-05-30"},
		{"yearly", Yearly, "2025-06-10", 0, "2026-06-10"},
		{"yearly from 29 February", Yearly, "2024-02-29", 0, "2025-02-28"},
		{"yearly anchor 29 returns in the next leap year", Yearly, "2027-02-28", 29, "2028-02-29"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Advance(tt.plan, tt.date, tt.anchor)
			if err != nil || got != tt.want {
				t.Fatalf("Advance(%s, %s, %d) = %q, %v; want %q", tt.plan, tt.date, tt.anchor, got, err, tt.want)
			}
		})
	}
}

func TestAdvanceErrors(t *testing.T) {
	t.Parallel()
	if _, err := Advance("weekly", "2025-01-01", 0); err == nil {
		t.Error("unknown plan: no error")
	}
	if _, err := Advance(Monthly, "2025-13-01", 0); err == nil {
		t.Error("bad date: no error")
	}
}

func TestDue(t *testing.T) {
	t.Parallel()
	subs := []Subscription{
		{ID: "c-later", Status: Active, NextBillingDate: "2025-03-02"},
		{ID: "b-today", Status: Active, NextBillingDate: "2025-03-01"},
		{ID: "a-overdue", Status: Active, NextBillingDate: "2025-02-20"},
		{ID: "d-cancelled", Status: Cancelled, NextBillingDate: "2025-03-01"},
		{ID: "e-no-date", Status: Active},
	}
	got, err := Due(subs, "2025-03-01")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range got {
		ids = append(ids, s.ID)
	}
	if want := []string{"a-overdue", "b-today"}; !slices.Equal(ids, want) {
		t.Fatalf("Due = %v, want %v", ids, want)
	}
	if _, err := Due(subs, "1 March"); err == nil {
		t.Error("bad billing day: no error")
	}
}

func TestFormatAmount(t *testing.T) {
	t.Parallel()
	tests := []struct {
		minor    int64
		currency string
		want     string
	}{
		{1999, "EUR", "19.99 EUR"},
		{5, "USD", "0.05 USD"},
		{0, "GBP", "0.00 GBP"},
		{-250, "EUR", "-2.50 EUR"},
		{1200, "JPY", "1200 JPY"},
		{1234, "KWD", "1.234 KWD"},
	}
	for _, tt := range tests {
		if got := FormatAmount(tt.minor, tt.currency); got != tt.want {
			t.Errorf("FormatAmount(%d, %s) = %q, want %q", tt.minor, tt.currency, got, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	good := Subscription{ID: "s-1", Name: "Ada", Email: "ada@example.com", Plan: Monthly, AmountMinor: 999, Currency: "EUR",
		NextBillingDate: "2025-03-01", Status: Active}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := good
	bad.ID, bad.Plan, bad.Currency, bad.AmountMinor = "a/b", "weekly", "euro", 0
	err := bad.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"id", "plan", "currency", "amount"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

func TestDemoSubscriptions(t *testing.T) {
	t.Parallel()
	subs, err := DemoSubscriptions("2025-03-01")
	if err != nil {
		t.Fatal(err)
	}
	if len(subs) != DemoCount {
		t.Fatalf("%d subscriptions, want %d", len(subs), DemoCount)
	}
	due, _ := Due(subs, "2025-03-01")
	if len(due) != DemoDue {
		t.Errorf("%d due, want %d", len(due), DemoDue)
	}
	declined, cancelled := 0, 0
	currencies := map[string]bool{}
	for _, s := range subs {
		if err := s.Validate(); err != nil {
			t.Error(err)
		}
		if !strings.HasSuffix(s.Email, "@example.com") {
			t.Errorf("%s: email %s", s.ID, s.Email)
		}
		if strings.Contains(s.Email, "+decline@") {
			declined++
		}
		if s.Status == Cancelled {
			cancelled++
		}
		currencies[s.Currency] = true
	}
	if declined != DemoDeclined || cancelled != DemoCancelled {
		t.Errorf("declined %d cancelled %d, want %d and %d", declined, cancelled, DemoDeclined, DemoCancelled)
	}
	if len(currencies) != 3 {
		t.Errorf("currencies %v, want EUR, USD and GBP", currencies)
	}
	dueDeclined := 0
	for _, s := range due {
		if strings.Contains(s.Email, "+decline@") {
			dueDeclined++
		}
	}
	if dueDeclined != DemoDeclined {
		t.Errorf("%d declined addresses are due, want %d", dueDeclined, DemoDeclined)
	}
}
