package billing

import (
	"bytes"
	"encoding/csv"
	"strings"
	"testing"
	"time"
)

func sampleResults() []Result {
	return []Result{
		{SubscriptionID: "s-2", Name: "Grace Hopper", Email: "grace@example.com", Plan: Yearly, Period: "2025-03-01", Status: Charged,
			PaymentID: "pay_2", AmountMinor: 9900, Currency: "USD", NextBillingDate: "2026-03-01"},
		{SubscriptionID: "s-1", Name: "Ada <Lovelace>", Email: "ada@example.com", Plan: Monthly, Period: "2025-03-01", Status: Charged,
			PaymentID: "pay_1", AmountMinor: 999, Currency: "EUR", NextBillingDate: "2025-04-01"},
		{SubscriptionID: "s-3", Name: "=HYPERLINK(\"x\")", Email: "x+decline@example.com", Plan: Monthly, Period: "2025-02-27", Status: Failed,
			AmountMinor: 1499, Currency: "EUR", Error: "card declined"},
		{SubscriptionID: "s-4", Name: "Alan Turing", Email: "alan@example.com", Plan: Monthly, Period: "2025-03-01", Status: Charged,
			PaymentID: "pay_4", AmountMinor: 2999, Currency: "EUR", NextBillingDate: "2025-04-01"},
	}
}

func TestReportTotals(t *testing.T) {
	t.Parallel()
	r := NewReport("2025-03-01", sampleResults(), time.Date(2025, 3, 1, 1, 0, 0, 0, time.UTC))
	if r.Charged != 3 || r.Failed != 1 {
		t.Fatalf("charged %d failed %d, want 3 and 1", r.Charged, r.Failed)
	}
	want := []CurrencyTotal{
		{Currency: "EUR", Charged: 2, Failed: 1, ChargedMinor: 3998, FailedMinor: 1499},
		{Currency: "USD", Charged: 1, ChargedMinor: 9900},
	}
	if len(r.Totals) != len(want) {
		t.Fatalf("totals %+v, want %+v", r.Totals, want)
	}
	for i := range want {
		if r.Totals[i] != want[i] {
			t.Errorf("total %d = %+v, want %+v", i, r.Totals[i], want[i])
		}
	}
	if r.Results[0].SubscriptionID != "s-1" {
		t.Errorf("results not ordered by id: first %s", r.Results[0].SubscriptionID)
	}
}

func TestReportCSV(t *testing.T) {
	t.Parallel()
	data, err := NewReport("2025-03-01", sampleResults(), time.Now()).CSV()
	if err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(bytes.NewReader(data)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1+4+2 {
		t.Fatalf("%d rows, want header + 4 results + 2 totals:\n%s", len(rows), data)
	}
	if strings.Join(rows[0], ",") != strings.Join(csvHeader, ",") {
		t.Errorf("header %v", rows[0])
	}
	if got := rows[1]; got[0] != "s-1" || got[6] != "9.99" || got[7] != "EUR" || got[8] != "999" || got[9] != "pay_1" || got[10] != "2025-04-01" {
		t.Errorf("row s-1 = %v", got)
	}
	if got := rows[3]; got[1] != `'=HYPERLINK("x")` || got[5] != Failed || got[11] != "card declined" {
		t.Errorf("row s-3 = %v (formula not defused?)", got)
	}
	if got := rows[5]; got[5] != "total" || got[7] != "EUR" || got[6] != "39.98" || got[11] != "2 charged, 1 failed" {
		t.Errorf("EUR total = %v", got)
	}
	if got := rows[6]; got[7] != "USD" || got[6] != "99.00" {
		t.Errorf("USD total = %v", got)
	}
}

func TestReportHTML(t *testing.T) {
	t.Parallel()
	data, err := NewReport("2025-03-01", sampleResults(), time.Date(2025, 3, 1, 1, 0, 0, 0, time.UTC)).HTML()
	if err != nil {
		t.Fatal(err)
	}
	html := string(data)
	for _, want := range []string{
		"<title>Billing report 2025-03-01</title>",
		"3 charged, 1 failed",
		"Ada &lt;Lovelace&gt;", // escaped
		`<tr class="failed">`,
		"39.98 EUR", "14.99 EUR", "99.00 USD",
		"2025-03-01 01:00:00 UTC",
	} {
		if !strings.Contains(html, want) {
			t.Errorf("HTML lacks %q", want)
		}
	}
	if strings.Contains(html, "Ada <Lovelace>") {
		t.Error("name not escaped")
	}
}

func TestReportNamesAndText(t *testing.T) {
	t.Parallel()
	c, h := ReportNames("2025-03-01")
	if c != "billing-2025-03-01.csv" || h != "billing-2025-03-01.html" {
		t.Fatalf("names %s %s", c, h)
	}
	text := NewReport("2025-03-01", sampleResults(), time.Now()).Text()
	for _, want := range []string{"3 charged, 1 failed", "EUR: 2 charged, 39.98 EUR; 1 failed, 14.99 EUR not collected", "s-3", "card declined"} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
}
