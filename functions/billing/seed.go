package billing

import (
	"fmt"
	"strings"
)

// demoPeople are the demo subscribers.
var demoPeople = []string{
	"Ada Lovelace", "Grace Hopper", "Alan Turing", "Katherine Johnson", "Linus Torvalds", "Margaret Hamilton",
	"Dennis Ritchie", "Barbara Liskov", "Ken Thompson", "Frances Allen", "Donald Knuth", "Radia Perlman",
	"Edsger Dijkstra", "Hedy Lamarr", "John Backus", "Adele Goldberg", "Niklaus Wirth", "Sophie Wilson",
	"Tim Berners-Lee", "Karen Spärck Jones", "Bjarne Stroustrup", "Mary Kenneth Keller", "Guido van Rossum", "Annie Easley",
	"Rob Pike", "Evelyn Berezin", "Leslie Lamport", "Jean Bartik", "Tony Hoare", "Joan Clarke",
	"Robert Griesemer", "Shafi Goldwasser", "Ivan Sutherland", "Lynn Conway", "Vint Cerf", "Carol Shaw",
}

// demoPrices are (plan, amount in minor units, currency) triples the demo
// cycles through.
var demoPrices = []struct {
	plan     Plan
	amount   int64
	currency string
}{
	{Monthly, 999, "EUR"}, {Monthly, 1200, "USD"}, {Monthly, 899, "GBP"}, {Monthly, 2999, "EUR"},
	{Yearly, 9900, "USD"}, {Monthly, 1999, "GBP"}, {Monthly, 4900, "USD"}, {Yearly, 14900, "EUR"},
	{Monthly, 1499, "EUR"}, {Yearly, 7900, "GBP"}, {Monthly, 2500, "USD"}, {Monthly, 599, "EUR"},
}

// Shape of the demo data (see [DemoSubscriptions]).
const (
	// DemoCount is the number of demo subscriptions.
	DemoCount = 36
	// DemoDue is how many are active and due on the seed day.
	DemoDue = 22
	// DemoDeclined is how many of the due ones the simulator declines.
	DemoDeclined = 2
	// DemoCancelled is how many are cancelled (due, but never billed).
	DemoCancelled = 2
)

// DemoSubscriptions returns the demo data for a seed on day (YYYY-MM-DD):
// [DemoCount] subscriptions demo-001 ... demo-036 with addresses at
// example.com. Relative to day:
//
//   - demo-001 ... demo-022 are active and due: most on day itself, every
//     sixth one a few days overdue; demo-008 and demo-019 use addresses the
//     payment simulator declines (name+decline@example.com);
//   - demo-023 ... demo-034 are active and due 2 to 24 days later;
//   - demo-035 and demo-036 are cancelled (with billing dates on day, so
//     that skipping them shows).
//
// Plans, amounts and currencies (EUR, USD, GBP) cycle through a price list.
func DemoSubscriptions(day string) ([]Subscription, error) {
	d, err := ParseDay(day)
	if err != nil {
		return nil, err
	}
	subs := make([]Subscription, 0, DemoCount)
	for i, name := range demoPeople {
		p := demoPrices[i%len(demoPrices)]
		next := d
		status := Active
		switch {
		case i >= DemoCount-DemoCancelled:
			status = Cancelled
		case i >= DemoDue:
			next = d.AddDate(0, 0, (i-DemoDue+1)*2)
		case i%6 == 5:
			next = d.AddDate(0, 0, -(i%4 + 1))
		}
		email := demoEmail(name)
		if i == 7 || i == 18 {
			email = strings.Replace(email, "@", "+decline@", 1)
		}
		subs = append(subs, Subscription{
			ID:              fmt.Sprintf("demo-%03d", i+1),
			Name:            name,
			Email:           email,
			Plan:            p.plan,
			AmountMinor:     p.amount,
			Currency:        p.currency,
			NextBillingDate: next.Format(DayLayout),
			Status:          status,
		})
	}
	return subs, nil
}

// demoEmail makes first.last@example.com from a name (ASCII letters only).
func demoEmail(name string) string {
	parts := strings.Fields(strings.ToLower(name))
	for i, p := range parts {
		parts[i] = strings.Map(func(r rune) rune {
			switch {
			case r >= 'a' && r <= 'z':
				return r
			case r == 'ä':
				return 'a'
			}
			return -1
		}, p)
	}
	return strings.Join(parts, ".") + "@example.com"
}
