package billing

import (
	"bytes"
	"cmp"
	"context"
	"encoding/csv"
	"fmt"
	"html/template"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"

	bstorage "github.com/stratus-dev/stratus/bindings/storage"
)

// InvoicesContainer is the blob container of the billing reports.
const InvoicesContainer = "invoices"

// CurrencyTotal sums one currency's results.
type CurrencyTotal struct {
	Currency string `json:"currency"`
	// Charged and Failed count results.
	Charged int `json:"charged"`
	Failed  int `json:"failed"`
	// ChargedMinor is the money taken; FailedMinor what could not be.
	ChargedMinor int64 `json:"chargedMinor"`
	FailedMinor  int64 `json:"failedMinor"`
}

// Report is a billing run's invoice report.
type Report struct {
	// BillingDay is the run's day.
	BillingDay string
	// Generated is when the report was made.
	Generated time.Time
	// Results are the per-subscription results, ordered by subscription id.
	Results []Result
	// Totals are per currency, ordered by currency.
	Totals []CurrencyTotal
	// Charged and Failed count the results.
	Charged, Failed int
}

// NewReport builds the report of day from its results.
func NewReport(day string, results []Result, generated time.Time) Report {
	r := Report{BillingDay: day, Generated: generated, Results: slices.Clone(results)}
	slices.SortFunc(r.Results, func(a, b Result) int { return cmp.Compare(a.SubscriptionID, b.SubscriptionID) })
	r.Totals = Totals(r.Results)
	for _, res := range r.Results {
		if res.Status == Charged {
			r.Charged++
		} else {
			r.Failed++
		}
	}
	return r
}

// Totals sums results per currency, ordered by currency.
func Totals(results []Result) []CurrencyTotal {
	by := map[string]*CurrencyTotal{}
	for _, res := range results {
		t := by[res.Currency]
		if t == nil {
			t = &CurrencyTotal{Currency: res.Currency}
			by[res.Currency] = t
		}
		if res.Status == Charged {
			t.Charged++
			t.ChargedMinor += res.AmountMinor
		} else {
			t.Failed++
			t.FailedMinor += res.AmountMinor
		}
	}
	out := make([]CurrencyTotal, 0, len(by))
	for _, t := range by {
		out = append(out, *t)
	}
	slices.SortFunc(out, func(a, b CurrencyTotal) int { return cmp.Compare(a.Currency, b.Currency) })
	return out
}

// ReportNames returns the blob names of day's report.
func ReportNames(day string) (csvName, htmlName string) {
	return "billing-" + day + ".csv", "billing-" + day + ".html"
}

// csvHeader is the CSV report's header row.
var csvHeader = []string{"subscription_id", "name", "email", "plan", "period", "status", "amount", "currency", "amount_minor", "payment_id", "next_billing_date", "error"}

// CSV renders the report: a header, one row per result, then one "total"
// row per currency (status "total", the charged amount). Cells that a
// spreadsheet would read as a formula are prefixed with a quote.
func (r Report) CSV() ([]byte, error) {
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	rows := [][]string{csvHeader}
	for _, res := range r.Results {
		rows = append(rows, []string{res.SubscriptionID, res.Name, res.Email, string(res.Plan), res.Period, res.Status,
			decimal(res.AmountMinor, res.Currency), res.Currency, strconv.FormatInt(res.AmountMinor, 10), res.PaymentID,
			res.NextBillingDate, res.Error})
	}
	for _, t := range r.Totals {
		rows = append(rows, []string{"", "Total charged " + t.Currency, "", "", r.BillingDay, "total",
			decimal(t.ChargedMinor, t.Currency), t.Currency, strconv.FormatInt(t.ChargedMinor, 10), "", "",
			fmt.Sprintf("%d charged, %d failed", t.Charged, t.Failed)})
	}
	for _, row := range rows {
		for i, cell := range row {
			row[i] = csvSafe(cell)
		}
		if err := w.Write(row); err != nil {
			return nil, fmt.Errorf("write CSV report: %w", err)
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return nil, fmt.Errorf("write CSV report: %w", err)
	}
	return buf.Bytes(), nil
}

// csvSafe defuses cells a spreadsheet would evaluate.
func csvSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		if _, err := strconv.ParseFloat(s, 64); err != nil {
			return "'" + s
		}
	}
	return s
}

// decimal is FormatAmount without the currency.
func decimal(minor int64, currency string) string {
	return strings.TrimSuffix(FormatAmount(minor, currency), " "+currency)
}

var reportHTML = template.Must(template.New("report").Funcs(template.FuncMap{
	"amount": FormatAmount,
	"when":   func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Billing report {{.BillingDay}}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin-bottom: 2rem; }
th, td { border: 1px solid #ccc; padding: .3rem .6rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed td { background: #fdecea; }
</style>
</head>
<body>
<h1>Billing report {{.BillingDay}}</h1>
<p>{{.Charged}} charged, {{.Failed}} failed. Generated {{when .Generated}}.</p>
<h2>Totals</h2>
<table>
<thead><tr><th>Currency</th><th>Charged</th><th>Amount charged</th><th>Failed</th><th>Amount not collected</th></tr></thead>
<tbody>
{{- range .Totals}}
<tr><td>{{.Currency}}</td><td class="num">{{.Charged}}</td><td class="num">{{amount .ChargedMinor .Currency}}</td><td class="num">{{.Failed}}</td><td class="num">{{amount .FailedMinor .Currency}}</td></tr>
{{- end}}
</tbody>
</table>
<h2>Subscriptions</h2>
<table>
<thead><tr><th>Subscription</th><th>Name</th><th>Email</th><th>Plan</th><th>Period</th><th>Status</th><th>Amount</th><th>Payment</th><th>Next billing date</th><th>Error</th></tr></thead>
<tbody>
{{- range .Results}}
<tr class="{{.Status}}"><td>{{.SubscriptionID}}</td><td>{{.Name}}</td><td>{{.Email}}</td><td>{{.Plan}}</td><td>{{.Period}}</td><td>{{.Status}}</td><td class="num">{{amount .AmountMinor .Currency}}</td><td>{{.PaymentID}}</td><td>{{.NextBillingDate}}</td><td>{{.Error}}</td></tr>
{{- end}}
</tbody>
</table>
</body>
</html>
`))

// HTML renders the report as a standalone HTML page.
func (r Report) HTML() ([]byte, error) {
	var buf bytes.Buffer
	if err := reportHTML.Execute(&buf, r); err != nil {
		return nil, fmt.Errorf("render HTML report: %w", err)
	}
	return buf.Bytes(), nil
}

// Text is the plain-text summary used in the report email.
func (r Report) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Billing run %s: %d charged, %d failed.\n\n", r.BillingDay, r.Charged, r.Failed)
	for _, t := range r.Totals {
		fmt.Fprintf(&b, "  %s: %d charged, %s; %d failed, %s not collected\n", t.Currency, t.Charged,
			FormatAmount(t.ChargedMinor, t.Currency), t.Failed, FormatAmount(t.FailedMinor, t.Currency))
	}
	if r.Failed > 0 {
		b.WriteString("\nFailed charges:\n")
		for _, res := range r.Results {
			if res.Status != Charged {
				fmt.Fprintf(&b, "  %s %s (%s): %s\n", res.SubscriptionID, res.Name, FormatAmount(res.AmountMinor, res.Currency), res.Error)
			}
		}
	}
	b.WriteString("\nThe full report is attached (CSV) and stored in the invoices container.\n")
	return b.String()
}

// WriteReport renders r and writes it to container as
// billing-YYYY-MM-DD.csv and .html (replacing an earlier rendering of the
// same day). It returns the blob names and the rendered CSV.
func WriteReport(ctx context.Context, c *azblob.Client, container string, r Report) (csvName, htmlName string, csvData []byte, err error) {
	csvData, err = r.CSV()
	if err != nil {
		return "", "", nil, err
	}
	htmlData, err := r.HTML()
	if err != nil {
		return "", "", nil, err
	}
	csvName, htmlName = ReportNames(r.BillingDay)
	for _, f := range []struct {
		name, ct string
		data     []byte
	}{{csvName, "text/csv; charset=utf-8", csvData}, {htmlName, "text/html; charset=utf-8", htmlData}} {
		ct := f.ct
		opts := &azblob.UploadBufferOptions{HTTPHeaders: &blob.HTTPHeaders{BlobContentType: &ct}}
		_, err := c.UploadBuffer(ctx, container, f.name, f.data, opts)
		if bstorage.IsNotFound(err) {
			if err = bstorage.CreateContainer(ctx, c, container); err == nil {
				_, err = c.UploadBuffer(ctx, container, f.name, f.data, opts)
			}
		}
		if err != nil {
			return "", "", nil, fmt.Errorf("write report %s/%s: %w", container, f.name, err)
		}
	}
	return csvName, htmlName, csvData, nil
}
