package billing

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DayLayout is how billing days and billing dates are written: YYYY-MM-DD.
const DayLayout = "2006-01-02"

// Plan is how often a subscription is billed.
type Plan string

// Plans.
const (
	// Monthly plans are billed every month on the anchor day.
	Monthly Plan = "monthly"
	// Yearly plans are billed every year on the anchor date.
	Yearly Plan = "yearly"
)

// Status is a subscription's status.
type Status string

// Subscription statuses.
const (
	// Active subscriptions are billed.
	Active Status = "active"
	// Cancelled subscriptions are never billed.
	Cancelled Status = "cancelled"
)

// Subscription is one subscriber's subscription, a row of the Subscriptions
// table (PartitionKey [SubscriptionPartition], RowKey ID).
type Subscription struct {
	// ID identifies the subscription (and the subscriber): letters, digits,
	// '-' and '_'.
	ID string `json:"id"`
	// Name is the subscriber's name.
	Name string `json:"name"`
	// Email is where notices go.
	Email string `json:"email"`
	// Plan is monthly or yearly.
	Plan Plan `json:"plan"`
	// AmountMinor is the price per period in the currency's minor unit
	// (cents, pence).
	AmountMinor int64 `json:"amountMinor"`
	// Currency is the ISO 4217 code (EUR, USD, GBP, ...).
	Currency string `json:"currency"`
	// NextBillingDate is the first day of the next period to bill
	// (YYYY-MM-DD). The period a charge is for is named by this date.
	NextBillingDate string `json:"nextBillingDate"`
	// AnchorDay is the day of the month the subscription renews on (1-31);
	// months without that day renew on their last day. Zero means the day of
	// NextBillingDate.
	AnchorDay int `json:"anchorDay,omitempty"`
	// Status is active or cancelled.
	Status Status `json:"status"`
}

// Validate checks that the subscription can be stored and billed.
func (s Subscription) Validate() error {
	var problems []string
	if !validKey(s.ID) {
		problems = append(problems, fmt.Sprintf("id %q must be 1-100 letters, digits, '-' or '_'", s.ID))
	}
	if s.Plan != Monthly && s.Plan != Yearly {
		problems = append(problems, fmt.Sprintf("plan %q is not monthly or yearly", s.Plan))
	}
	if s.Status != Active && s.Status != Cancelled {
		problems = append(problems, fmt.Sprintf("status %q is not active or cancelled", s.Status))
	}
	if s.AmountMinor <= 0 {
		problems = append(problems, fmt.Sprintf("amount %d must be positive", s.AmountMinor))
	}
	if !validCurrency(s.Currency) {
		problems = append(problems, fmt.Sprintf("currency %q is not a three-letter ISO 4217 code", s.Currency))
	}
	if _, err := ParseDay(s.NextBillingDate); err != nil {
		problems = append(problems, err.Error())
	}
	if s.AnchorDay < 0 || s.AnchorDay > 31 {
		problems = append(problems, fmt.Sprintf("anchor day %d is not 0-31", s.AnchorDay))
	}
	if !strings.Contains(s.Email, "@") {
		problems = append(problems, fmt.Sprintf("email %q is not an address", s.Email))
	}
	if len(problems) > 0 {
		return fmt.Errorf("subscription %s: %s", s.ID, strings.Join(problems, "; "))
	}
	return nil
}

func validKey(s string) bool {
	if s == "" || len(s) > 100 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

func validCurrency(c string) bool {
	if len(c) != 3 {
		return false
	}
	for _, r := range c {
		if r < 'A' || r > 'Z' {
			return false
		}
	}
	return true
}

// ParseDay parses a YYYY-MM-DD day as midnight UTC.
func ParseDay(s string) (time.Time, error) {
	t, err := time.Parse(DayLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("day %q is not YYYY-MM-DD", s)
	}
	return t, nil
}

// Advance returns the billing date that follows date under plan: one month
// later for monthly plans, one year later for yearly plans, on anchorDay
// (the day of date when zero), or on the last day of the month when that
// month is shorter (31 January → 28 or 29 February → 31 March with anchor
// day 31).
func Advance(plan Plan, date string, anchorDay int) (string, error) {
	d, err := ParseDay(date)
	if err != nil {
		return "", err
	}
	if anchorDay == 0 {
		anchorDay = d.Day()
	}
	y, m := d.Year(), d.Month()
	switch plan {
	case Monthly:
		m++
		if m > time.December {
			m, y = time.January, y+1
		}
	case Yearly:
		y++
	default:
		return "", fmt.Errorf("plan %q is not monthly or yearly", plan)
	}
	day := min(anchorDay, daysIn(y, m))
	return time.Date(y, m, day, 0, 0, 0, 0, time.UTC).Format(DayLayout), nil
}

func daysIn(y int, m time.Month) int {
	return time.Date(y, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// Due returns the active subscriptions whose next billing date is on or
// before billingDay, ordered by id (so that a billing run's fan-out has a
// stable order).
func Due(subs []Subscription, billingDay string) ([]Subscription, error) {
	if _, err := ParseDay(billingDay); err != nil {
		return nil, err
	}
	var out []Subscription
	for _, s := range subs {
		// YYYY-MM-DD compares in date order as a string.
		if s.Status == Active && s.NextBillingDate != "" && s.NextBillingDate <= billingDay {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b Subscription) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// ChargeKey is the idempotency key of the charge of subscription id for the
// period starting on period: the same subscription and period always give
// the same key, so no retry, replay or second run can charge twice.
func ChargeKey(id, period string) string { return id + ":" + period }

// minorDigits is the number of minor-unit digits of currencies that do not
// use two.
var minorDigits = map[string]int{"JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "BHD": 3, "KWD": 3, "JOD": 3, "TND": 3}

// FormatAmount writes an amount in minor units with the currency's decimals:
// FormatAmount(1999, "EUR") is "19.99 EUR".
func FormatAmount(minor int64, currency string) string {
	digits, ok := minorDigits[currency]
	if !ok {
		digits = 2
	}
	neg := minor < 0
	if neg {
		minor = -minor
	}
	s := strconv.FormatInt(minor, 10)
	if digits > 0 {
		for len(s) <= digits {
			s = "0" + s
		}
		s = s[:len(s)-digits] + "." + s[len(s)-digits:]
	}
	if neg {
		s = "-" + s
	}
	return s + " " + currency
}

// int64Value decodes an integer written as a JSON number or, as the Table
// service returns Edm.Int64 values, as a string.
type int64Value int64

func (v *int64Value) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		*v = 0
		return nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		var f float64
		if jerr := json.Unmarshal([]byte(s), &f); jerr != nil {
			return fmt.Errorf("integer value %s: %w", b, err)
		}
		n = int64(f)
	}
	*v = int64Value(n)
	return nil
}
