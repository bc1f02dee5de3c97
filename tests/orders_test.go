package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/functions/orders"
	"github.com/stratus-dev/stratus/tests/azurite"
	"github.com/stratus-dev/stratus/tests/hosttest"
)

type stock struct {
	Available int `json:"available"`
	Reserved  int `json:"reserved"`
}

// TestOrderSaga drives ProcessOrderOrchestrator through POST /api/orders:
// the happy path and each compensation path, checking the stock left on
// the Inventory entities and the payments at the simulator.
func TestOrderSaga(t *testing.T) {
	t.Parallel()
	az := azurite.Shared(t)
	ports, err := azurite.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	hj, _ := durableHostJSON(t)
	prefix := fmt.Sprintf("o%d", time.Now().UnixNano()%1_000_000_000)
	h := hosttest.Start(t, hosttest.Options{Storage: az.ConnectionString, HostJSON: hj, Port: ports[0], Env: []string{
		"BillingStoragePrefix=" + prefix,
		fmt.Sprintf("PaymentServiceUrl=http://127.0.0.1:%d/api/sim/payments", ports[0]),
	}})
	ctx := context.Background()
	entity := func(sku string) string { return mgmt + "/entities/inventory/" + prefix + sku }
	getStock := func(t *testing.T, sku string) stock {
		t.Helper()
		code, body, _, err := h.Do(ctx, "GET", entity(sku), nil)
		if err != nil || code != http.StatusOK {
			t.Fatalf("read %s: %d %s %v", sku, code, body, err)
		}
		var s stock
		mustJSON(t, body, &s)
		return s
	}
	restock := func(t *testing.T, sku string, n int) {
		t.Helper()
		code, body, _, err := h.Do(ctx, "POST", entity(sku)+"?op=restock", []byte(fmt.Sprint(n)))
		if err != nil || code != http.StatusAccepted {
			t.Fatalf("restock %s: %d %s %v", sku, code, body, err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			code, body, _, _ := h.Do(ctx, "GET", entity(sku), nil)
			var s stock
			if code == http.StatusOK && json.Unmarshal(body, &s) == nil && s.Available >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("restock of %s not visible: %d %s", sku, code, body)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	order := func(id, customer, email, country string, items ...orders.Item) orders.Order {
		for i := range items {
			items[i].SKU = prefix + items[i].SKU
		}
		return orders.Order{OrderID: prefix + id, Customer: customer, Email: email, Items: items, Currency: "EUR", Address: orders.Address{Country: country}}
	}
	run := func(t *testing.T, o orders.Order) (orders.Result, status) {
		t.Helper()
		b, _ := json.Marshal(o)
		code, body, hdr, err := h.Do(ctx, "POST", "/api/orders", b)
		if err != nil || code != http.StatusAccepted || hdr.Get("Location") == "" {
			t.Fatalf("submit: %d %s %v", code, body, err)
		}
		var cs checkStatus
		mustJSON(t, body, &cs)
		st := waitFor(t, h, cs.ID, time.Minute, "Completed", "Failed")
		if st.RuntimeStatus != "Completed" {
			t.Fatalf("saga instance ended %s: %s", st.RuntimeStatus, st.Output)
		}
		var res orders.Result
		mustJSON(t, st.Output, &res)
		return res, st
	}
	charges := func(t *testing.T, customer string) int {
		t.Helper()
		code, body, _, err := h.Do(ctx, "GET", "/api/sim/payments?customer="+customer, nil)
		if err != nil || code != http.StatusOK {
			t.Fatalf("ledger: %d %s %v", code, body, err)
		}
		var l struct {
			Count int `json:"count"`
		}
		mustJSON(t, body, &l)
		return l.Count
	}
	steps := func(r orders.Result) string {
		var s []string
		for _, c := range r.Compensations {
			s = append(s, fmt.Sprintf("%s:%v", strings.Fields(c.Step)[0], c.OK))
		}
		return strings.Join(s, ",")
	}

	t.Run("success ships and charges", func(t *testing.T) {
		t.Parallel()
		restock(t, "a1", 10)
		restock(t, "a2", 5)
		o := order("ok1", "ada", "ada@example.com", "FR", orders.Item{SKU: "a1", Quantity: 3, UnitPriceMinor: 1000}, orders.Item{SKU: "a2", Quantity: 1, UnitPriceMinor: 250})
		res, _ := run(t, o)
		if res.Status != "Completed" || res.PaymentID == "" || res.ShipmentID == "" || len(res.Compensations) != 0 {
			t.Fatalf("result %+v", res)
		}
		if n := charges(t, o.OrderID); n != 1 {
			t.Fatalf("%d charges, want 1", n)
		}
		deadline := time.Now().Add(30 * time.Second)
		for s := getStock(t, "a1"); s != (stock{Available: 7}); s = getStock(t, "a1") {
			if time.Now().After(deadline) {
				t.Fatalf("a1 stock %+v, want 7 available and nothing reserved after shipping", s)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	t.Run("out of stock releases what was reserved", func(t *testing.T) {
		t.Parallel()
		restock(t, "b1", 4)
		restock(t, "b2", 1)
		o := order("oos", "bob", "bob@example.com", "FR", orders.Item{SKU: "b1", Quantity: 2, UnitPriceMinor: 100}, orders.Item{SKU: "b2", Quantity: 3, UnitPriceMinor: 100})
		res, _ := run(t, o)
		if res.Status != "Failed" || res.FailedStep != "reserve" || steps(res) != "release:true" {
			t.Fatalf("result %+v", res)
		}
		if s := getStock(t, "b1"); s != (stock{Available: 4}) {
			t.Fatalf("b1 stock %+v, want all 4 available again", s)
		}
		if n := charges(t, o.OrderID); n != 0 {
			t.Fatalf("%d charges for an order that failed before payment", n)
		}
	})
	t.Run("declined payment releases the stock", func(t *testing.T) {
		t.Parallel()
		restock(t, "c1", 2)
		o := order("decl", "carol", "carol+decline@example.com", "FR", orders.Item{SKU: "c1", Quantity: 2, UnitPriceMinor: 500})
		res, _ := run(t, o)
		if res.Status != "Failed" || res.FailedStep != "payment" || steps(res) != "release:true" {
			t.Fatalf("result %+v", res)
		}
		if s := getStock(t, "c1"); s != (stock{Available: 2}) {
			t.Fatalf("c1 stock %+v", s)
		}
	})
	t.Run("shipping failure refunds, then releases", func(t *testing.T) {
		t.Parallel()
		restock(t, "d1", 3)
		o := order("noship", "dave", "dave@example.com", "Atlantis", orders.Item{SKU: "d1", Quantity: 3, UnitPriceMinor: 700})
		res, _ := run(t, o)
		if res.Status != "Failed" || res.FailedStep != "shipping" || steps(res) != "refund:true,release:true" {
			t.Fatalf("result %+v", res)
		}
		if s := getStock(t, "d1"); s != (stock{Available: 3}) {
			t.Fatalf("d1 stock %+v", s)
		}
		if n := charges(t, o.OrderID); n != 1 {
			t.Fatalf("%d charges, want the one that was refunded", n)
		}
	})
	t.Run("a failing refund is recorded and the release still runs", func(t *testing.T) {
		t.Parallel()
		restock(t, "e1", 1)
		o := order("norefund", "refund-fails", "rf@example.com", "Atlantis", orders.Item{SKU: "e1", Quantity: 1, UnitPriceMinor: 900})
		res, st := run(t, o)
		if res.Status != "Failed" || steps(res) != "refund:false,release:true" || !strings.Contains(res.Compensations[0].Error, "refused to refund") {
			t.Fatalf("result %+v", res)
		}
		if !strings.Contains(string(st.CustomStatus), "refused to refund") {
			t.Fatalf("custom status %s does not record the failed compensation", st.CustomStatus)
		}
		if s := getStock(t, "e1"); s != (stock{Available: 1}) {
			t.Fatalf("e1 stock %+v", s)
		}
	})
	t.Run("bad order is refused", func(t *testing.T) {
		t.Parallel()
		code, body, _, _ := h.Do(ctx, "POST", "/api/orders", []byte(`{"orderId":"x"}`))
		if code != http.StatusBadRequest {
			t.Fatalf("%d %s", code, body)
		}
	})
}
