// Package entities holds the durable entity samples: Counter (a plain JSON
// number) and Inventory (the stock of one product), and the orchestrations
// that drive them: CounterLoop calls Counter repeatedly, TransferStock
// moves stock between two products inside a critical section.
//
//	curl -X POST 'localhost:7071/runtime/webhooks/durabletask/entities/Counter/c1?op=add' -H 'Content-Type: application/json' -d 5
//	curl localhost:7071/runtime/webhooks/durabletask/entities/Counter/c1
//	curl -X POST localhost:7071/api/orchestrators/TransferStock -d '{"from":"p1","to":"p2","quantity":3}'
package entities

import (
	"errors"
	"fmt"

	"github.com/stratus-dev/stratus/durable"
	"github.com/stratus-dev/stratus/host/registry"
)

// Register adds the entities and their orchestrations.
func Register(r *registry.Registry) error {
	return errors.Join(
		durable.RegisterEntity(r, "Counter", Counter),
		durable.RegisterEntity(r, "Inventory", Inventory),
		durable.RegisterOrchestrator(r, "CounterLoop", durable.Orchestration(counterLoop)),
		durable.RegisterOrchestrator(r, "TransferStock", durable.Orchestration(transferStock)),
	)
}

// Counter is a number. Operations: add (a number), reset, get (returns
// the value); delete removes it.
var Counter = durable.Entity(func(ctx *durable.EntityContext, n *float64) (any, error) {
	switch ctx.Operation() {
	case "add":
		var d float64
		if err := ctx.Input(&d); err != nil {
			return nil, err
		}
		*n += d
		return nil, nil
	case "reset":
		*n = 0
		return nil, nil
	case "get":
		return *n, nil
	}
	return nil, fmt.Errorf("counter has no operation %q (add, reset, get, delete)", ctx.Operation())
})

// Stock is an Inventory entity's state.
type Stock struct {
	// Available can be reserved.
	Available int `json:"available"`
	// Reserved is held for orders until shipped or released.
	Reserved int `json:"reserved"`
}

// Inventory is the stock of one product, keyed by product id.
// Operations take a quantity: restock adds to Available; reserve moves
// quantity from Available to Reserved and returns whether there was
// enough (it never goes negative); release moves reserved stock back;
// ship removes reserved stock; get returns the Stock.
var Inventory = durable.Entity(func(ctx *durable.EntityContext, s *Stock) (any, error) {
	var q int
	if ctx.Operation() != "get" {
		if err := ctx.Input(&q); err != nil {
			return nil, err
		}
		if q < 0 {
			return nil, fmt.Errorf("quantity must not be negative, got %d", q)
		}
	}
	switch ctx.Operation() {
	case "restock":
		s.Available += q
		return nil, nil
	case "reserve":
		if s.Available < q {
			return false, nil
		}
		s.Available -= q
		s.Reserved += q
		return true, nil
	case "release":
		q = min(q, s.Reserved)
		s.Reserved -= q
		s.Available += q
		return nil, nil
	case "ship":
		if s.Reserved < q {
			return nil, fmt.Errorf("cannot ship %d: only %d reserved", q, s.Reserved)
		}
		s.Reserved -= q
		return nil, nil
	case "get":
		return *s, nil
	}
	return nil, fmt.Errorf("inventory has no operation %q (restock, reserve, release, ship, get, delete)", ctx.Operation())
})

// LoopInput is CounterLoop's input.
type LoopInput struct {
	// Key is the counter's key (default "c1").
	Key string `json:"key"`
	// Times is how many calls to make (default 10).
	Times int `json:"times"`
	// Amount is added by each call (default 1).
	Amount float64 `json:"amount"`
}

// counterLoop calls Counter@key add Amount, Times times, one after the
// other, and returns the counter's final value.
func counterLoop(ctx *durable.OrchestrationContext, in LoopInput) (float64, error) {
	if in.Key == "" {
		in.Key = "c1"
	}
	if in.Times <= 0 {
		in.Times = 10
	}
	if in.Amount == 0 {
		in.Amount = 1
	}
	id := durable.NewEntityID("Counter", in.Key)
	for range in.Times {
		if err := ctx.CallEntity(id, "add", in.Amount).Await(nil); err != nil {
			return 0, err
		}
	}
	return durable.Await[float64](ctx.CallEntity(id, "get", nil))
}

// TransferInput is TransferStock's input.
type TransferInput struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Quantity int    `json:"quantity"`
}

// transferStock moves Quantity from product From to product To inside a
// critical section: it checks the source's stock, then reserves, ships and
// restocks; the locks guarantee that nothing changes the two products in
// between. It returns false when the source has too little.
func transferStock(ctx *durable.OrchestrationContext, in TransferInput) (bool, error) {
	if in.From == "" || in.To == "" || in.From == in.To {
		return false, fmt.Errorf("transfer needs two different products, got %q and %q", in.From, in.To)
	}
	from, to := durable.NewEntityID("Inventory", in.From), durable.NewEntityID("Inventory", in.To)
	unlock, err := ctx.LockEntities(from, to)
	if err != nil {
		return false, err
	}
	defer unlock()
	src, err := durable.Await[Stock](ctx.CallEntity(from, "get", nil))
	if err != nil {
		return false, err
	}
	if src.Available < in.Quantity {
		return false, nil
	}
	ok, err := durable.Await[bool](ctx.CallEntity(from, "reserve", in.Quantity))
	if err != nil {
		return false, err
	}
	if !ok {
		return false, fmt.Errorf("%s had %d available inside the critical section but could not reserve %d", from, src.Available, in.Quantity)
	}
	if err := ctx.CallEntity(from, "ship", in.Quantity).Await(nil); err != nil {
		return false, err
	}
	if err := ctx.CallEntity(to, "restock", in.Quantity).Await(nil); err != nil {
		return false, err
	}
	return true, nil
}
