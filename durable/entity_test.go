package durable_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/durable"
	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
)

// counter is a test entity: a number with add, set-then-fail, get.
var counter = durable.Entity(func(ctx *durable.EntityContext, n *int) (any, error) {
	switch ctx.Operation() {
	case "add":
		var d int
		if err := ctx.Input(&d); err != nil {
			return nil, err
		}
		*n += d
	case "addThenFail":
		*n += 1000
		return nil, errors.New("boom")
	case "panic":
		*n += 1000
		panic("kaboom")
	case "get":
		return *n, nil
	default:
		return nil, fmt.Errorf("unknown operation %q", ctx.Operation())
	}
	return nil, nil
})

// list appends its inputs, to check ordering.
var list = durable.Entity(func(ctx *durable.EntityContext, s *[]int) (any, error) {
	switch ctx.Operation() {
	case "append":
		var v int
		if err := ctx.Input(&v); err != nil {
			return nil, err
		}
		*s = append(*s, v)
	case "get":
		return *s, nil
	}
	return nil, nil
})

// stock is an inventory entity for lock tests.
var stock = durable.Entity(func(ctx *durable.EntityContext, n *int) (any, error) {
	var q int
	_ = ctx.Input(&q)
	switch ctx.Operation() {
	case "restock":
		*n += q
	case "take":
		if *n < q {
			return false, nil
		}
		*n -= q
		return true, nil
	case "get":
		return *n, nil
	}
	return nil, nil
})

type entityRegistry struct {
	registry
	entities map[string]durable.EntityFunc
}

func startEntityWorker(t *testing.T, r entityRegistry, tweak ...func(*durable.WorkerOptions)) *bundle {
	t.Helper()
	return startWorker(t, r.registry, append([]func(*durable.WorkerOptions){func(o *durable.WorkerOptions) {
		o.Entities = func(n string) (durable.EntityFunc, bool) { f, ok := r.entities[n]; return f, ok }
	}}, tweak...)...)
}

// waitEntity polls the entity's state until cond holds.
func waitEntity(t *testing.T, x *bundle, id durable.EntityID, cond func(state json.RawMessage, exists bool) bool) json.RawMessage {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s, ok, err := x.client.ReadEntityState(x.ctx, id)
		if err != nil {
			t.Fatalf("ReadEntityState: %v", err)
		}
		if cond(s, ok) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("entity %s: state %s (exists %v) never met the condition", id, s, ok)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func equalsJSON(want string) func(json.RawMessage, bool) bool {
	return func(s json.RawMessage, ok bool) bool { return ok && string(s) == want }
}

func TestEntityClientSignalsReadListDelete(t *testing.T) {
	t.Parallel()
	x := startEntityWorker(t, entityRegistry{entities: map[string]durable.EntityFunc{"counter": counter}},
		func(o *durable.WorkerOptions) { o.MaxEntityOperationBatchSize = 7 })
	id := durable.NewEntityID("Counter", "c1")
	if id.String() != "@counter@c1" {
		t.Fatalf("id %s", id)
	}
	if _, ok, err := x.client.ReadEntityState(x.ctx, id); err != nil || ok {
		t.Fatalf("before any signal: exists %v err %v", ok, err)
	}
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			if err := x.client.SignalEntity(x.ctx, id, "add", 1); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	waitEntity(t, x, id, equalsJSON("100"))
	// A failing signal changes nothing.
	if err := x.client.SignalEntity(x.ctx, id, "addThenFail", nil); err != nil {
		t.Fatal(err)
	}
	if err := x.client.SignalEntity(x.ctx, id, "add", 1); err != nil {
		t.Fatal(err)
	}
	waitEntity(t, x, id, equalsJSON("101"))
	if x.w.Stats().EntityWorkItems < 2 {
		t.Errorf("entity work items %d", x.w.Stats().EntityWorkItems)
	}

	other := durable.NewEntityID("counter", "c2")
	if err := x.client.SignalEntity(x.ctx, other, "add", 5); err != nil {
		t.Fatal(err)
	}
	waitEntity(t, x, other, equalsJSON("5"))
	page, err := x.client.ListEntities(x.ctx, durable.EntityQuery{Name: "Counter", FetchState: true})
	if err != nil || len(page.Entities) != 2 {
		t.Fatalf("list: %v %+v", err, page)
	}
	if err := x.client.SignalEntity(x.ctx, other, "delete", nil); err != nil {
		t.Fatal(err)
	}
	waitEntity(t, x, other, func(_ json.RawMessage, ok bool) bool { return !ok })
	page, err = x.client.ListEntities(x.ctx, durable.EntityQuery{})
	if err != nil || len(page.Entities) != 1 || page.Entities[0].ID != id || string(page.Entities[0].State) != "" {
		t.Fatalf("list after delete: %v %+v", err, page)
	}
}

func TestEntityCallResultErrorAndRollback(t *testing.T) {
	t.Parallel()
	x := startEntityWorker(t, entityRegistry{
		registry: registry{orchestrators: map[string]durable.Orchestrator{
			"Calls": func(ctx *durable.OrchestrationContext) (any, error) {
				id := durable.NewEntityID("counter", "k")
				if err := ctx.CallEntity(id, "add", 5).Await(nil); err != nil {
					return nil, err
				}
				errFail := ctx.CallEntity(id, "addThenFail", nil).Await(nil)
				errPanic := ctx.CallEntity(id, "panic", nil).Await(nil)
				errUnknown := ctx.CallEntity(durable.NewEntityID("nobody", "x"), "get", nil).Await(nil)
				n, err := durable.Await[int](ctx.CallEntity(id, "get", nil))
				var fe *durable.EntityOperationFailedError
				return map[string]any{
					"n": n, "err": err == nil, "fail": errFail.Error(), "failTyped": errors.As(errFail, &fe),
					"panic": errPanic != nil, "unknown": errUnknown != nil,
				}, nil
			},
		}},
		entities: map[string]durable.EntityFunc{"counter": counter},
	})
	st := x.run(t, "Calls", nil)
	want := `{"err":true,"fail":"operation 'addThenFail' of entity '@counter@k' failed: boom","failTyped":true,"n":5,"panic":true,"unknown":true}`
	if st.RuntimeStatus != history.StatusCompleted || st.Output != want {
		t.Fatalf("status %s output %s", st.RuntimeStatus, st.Output)
	}
}

func TestEntityOrderPerSender(t *testing.T) {
	t.Parallel()
	x := startEntityWorker(t, entityRegistry{
		registry: registry{orchestrators: map[string]durable.Orchestrator{
			"Appender": func(ctx *durable.OrchestrationContext) (any, error) {
				id := durable.NewEntityID("list", "l")
				for i := range 30 {
					if err := ctx.SignalEntity(id, "append", i); err != nil {
						return nil, err
					}
					if i%10 == 9 {
						if err := ctx.Sleep(time.Millisecond); err != nil {
							return nil, err
						}
					}
				}
				return durable.Await[[]int](ctx.CallEntity(id, "get", nil))
			},
		}},
		entities: map[string]durable.EntityFunc{"list": list},
	})
	st := x.run(t, "Appender", nil)
	var got []int
	if err := json.Unmarshal([]byte(st.Output), &got); err != nil || len(got) != 30 {
		t.Fatalf("output %s: %v", st.Output, err)
	}
	for i, v := range got {
		if v != i {
			t.Fatalf("out of order: %v", got)
		}
	}
}

// TestEntityDropsRedeliveredRequests sends copies of the same request, as
// a queue does after a crash or a sender's recovery resends them.
func TestEntityDropsRedeliveredRequests(t *testing.T) {
	t.Parallel()
	x := startEntityWorker(t, entityRegistry{entities: map[string]durable.EntityFunc{"counter": counter}})
	id := durable.NewEntityID("counter", "dup")
	ts := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	reqs := []string{
		`{"op":"add","signal":true,"input":"1","id":"6f1c2a4e-0000-4000-8000-000000000001"}`,
		`{"op":"add","signal":true,"input":"10","id":"6f1c2a4e-0000-4000-8000-000000000002","parent":"orch-1","Timestamp":"` + ts.Format(time.RFC3339Nano) + `"}`,
		`{"op":"add","signal":true,"input":"100","id":"6f1c2a4e-0000-4000-8000-000000000003","parent":"orch-1","Timestamp":"` + ts.Add(time.Second).Format(time.RFC3339Nano) + `","Predecessor":"` + ts.Format(time.RFC3339Nano) + `"}`,
	}
	send := func(r string) {
		t.Helper()
		err := x.b.SendEvent(x.ctx, backend.Message{TargetInstanceID: id.String(), Event: &history.Event{EventType: history.EventRaised, EventID: -1, Name: "op", Input: r}})
		if err != nil {
			t.Fatal(err)
		}
	}
	// The third arrives before its predecessor: it waits for it.
	send(reqs[0])
	send(reqs[2])
	waitEntity(t, x, id, equalsJSON("1"))
	send(reqs[1])
	waitEntity(t, x, id, equalsJSON("111"))
	for _, r := range reqs {
		send(r)
	}
	if err := x.client.SignalEntity(x.ctx, id, "add", 1000); err != nil {
		t.Fatal(err)
	}
	waitEntity(t, x, id, equalsJSON("1111"))
}

func transfer(ctx *durable.OrchestrationContext, in [2]string) (bool, error) {
	from, to := durable.NewEntityID("stock", in[0]), durable.NewEntityID("stock", in[1])
	unlock, err := ctx.LockEntities(from, to)
	if err != nil {
		return false, err
	}
	defer unlock()
	if ok, _ := ctx.InCriticalSection(); !ok {
		return false, errors.New("not in a critical section")
	}
	took, err := durable.Await[bool](ctx.CallEntity(from, "take", 1))
	if err != nil || !took {
		return false, err
	}
	// A lost update shows as a total that is not conserved.
	return true, ctx.CallEntity(to, "restock", 1).Await(nil)
}

func TestEntityCriticalSectionsConserveStock(t *testing.T) {
	t.Parallel()
	x := startEntityWorker(t, entityRegistry{
		registry: registry{orchestrators: map[string]durable.Orchestrator{"Transfer": durable.Orchestration(transfer)}},
		entities: map[string]durable.EntityFunc{"stock": stock},
	})
	a, b := durable.NewEntityID("stock", "a"), durable.NewEntityID("stock", "b")
	for _, id := range []durable.EntityID{a, b} {
		if err := x.client.SignalEntity(x.ctx, id, "restock", 20); err != nil {
			t.Fatal(err)
		}
	}
	waitEntity(t, x, a, equalsJSON("20"))
	waitEntity(t, x, b, equalsJSON("20"))
	var ids []string
	for i := range 40 {
		in := [2]string{"a", "b"}
		if i%2 == 1 {
			in = [2]string{"b", "a"} // opposite order: sorted acquisition avoids a deadlock
		}
		id, err := x.client.ScheduleNew(x.ctx, "Transfer", in)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for _, id := range ids {
		st, err := x.client.WaitForCompletion(x.ctx, id)
		if err != nil || st.RuntimeStatus != history.StatusCompleted {
			t.Fatalf("%s: %v %+v", id, err, st)
		}
	}
	sa, _, _ := x.client.ReadEntityState(x.ctx, a)
	sb, _, _ := x.client.ReadEntityState(x.ctx, b)
	var na, nb int
	_ = json.Unmarshal(sa, &na)
	_ = json.Unmarshal(sb, &nb)
	if na+nb != 40 {
		t.Fatalf("stock a=%d b=%d: total %d, want 40", na, nb, na+nb)
	}
	// The lock request went to the first entity in sorted order.
	h, err := x.client.GetHistory(x.ctx, ids[1])
	if err != nil {
		t.Fatal(err)
	}
	first := slices.IndexFunc(h, func(e *history.Event) bool { return e.EventType == history.EventSent })
	if first < 0 || h[first].InstanceID != "@stock@a" {
		t.Fatalf("first message of a (b, a) section went to %+v", h[first])
	}
	// The last section's release messages reach the entities after its
	// orchestration completed: every lock is released soon after.
	for _, id := range []durable.EntityID{a, b} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			es, err := x.client.GetEntity(x.ctx, id)
			if err == nil && es.LockedBy == "" && es.QueueSize == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s after the sections: %v %+v", id, err, es)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

func TestEntityLockingRulesAndReleaseOnFailure(t *testing.T) {
	t.Parallel()
	a, b := durable.NewEntityID("counter", "a"), durable.NewEntityID("counter", "b")
	x := startEntityWorker(t, entityRegistry{
		registry: registry{orchestrators: map[string]durable.Orchestrator{
			"Rules": func(ctx *durable.OrchestrationContext) (any, error) {
				unlock, err := ctx.LockEntities(a)
				if err != nil {
					return nil, err
				}
				defer unlock()
				_, nested := ctx.LockEntities(b)
				other := ctx.CallEntity(b, "get", nil).Await(nil)
				signal := ctx.SignalEntity(a, "add", 1)
				var le *durable.LockingRulesError
				return []bool{errors.As(nested, &le), errors.As(other, &le), errors.As(signal, &le)}, nil
			},
			"FailLocked": func(ctx *durable.OrchestrationContext) (any, error) {
				if _, err := ctx.LockEntities(a, b); err != nil {
					return nil, err
				}
				if err := ctx.CallEntity(a, "add", 1).Await(nil); err != nil {
					return nil, err
				}
				return nil, errors.New("failed inside the critical section")
			},
		}},
		entities: map[string]durable.EntityFunc{"counter": counter},
	})
	if st := x.run(t, "Rules", nil); st.RuntimeStatus != history.StatusCompleted || st.Output != "[true,true,true]" {
		t.Fatalf("rules: %s %s", st.RuntimeStatus, st.Output)
	}
	if st := x.run(t, "FailLocked", nil); st.RuntimeStatus != history.StatusFailed {
		t.Fatalf("FailLocked: %s %s", st.RuntimeStatus, st.Output)
	}
	// The locks were released: signals run.
	for _, id := range []durable.EntityID{a, b} {
		if err := x.client.SignalEntity(x.ctx, id, "add", 10); err != nil {
			t.Fatal(err)
		}
	}
	waitEntity(t, x, a, equalsJSON("11"))
	waitEntity(t, x, b, equalsJSON("10"))
}

func TestEntitySignalsEntitiesStartsOrchestrationsAndDelays(t *testing.T) {
	t.Parallel()
	relay := func(ctx *durable.EntityContext) (any, error) {
		switch ctx.Operation() {
		case "relay":
			if err := ctx.SignalEntity(durable.NewEntityID("counter", "target"), "add", 2); err != nil {
				return nil, err
			}
			_, err := ctx.StartNewOrchestration("Child", nil, durable.WithStartInstanceID("started-by-entity"))
			return nil, err
		case "relayThenFail":
			_ = ctx.SignalEntity(durable.NewEntityID("counter", "target"), "add", 1000)
			return nil, errors.New("no")
		}
		return nil, nil
	}
	x := startEntityWorker(t, entityRegistry{
		registry: registry{orchestrators: map[string]durable.Orchestrator{
			"Child": func(ctx *durable.OrchestrationContext) (any, error) { return "child done", nil },
		}},
		entities: map[string]durable.EntityFunc{"counter": counter, "relay": relay},
	})
	r := durable.NewEntityID("relay", "r")
	if err := x.client.SignalEntity(x.ctx, r, "relayThenFail", nil); err != nil {
		t.Fatal(err)
	}
	if err := x.client.SignalEntity(x.ctx, r, "relay", nil); err != nil {
		t.Fatal(err)
	}
	waitEntity(t, x, durable.NewEntityID("counter", "target"), equalsJSON("2"))
	st, err := x.client.WaitForCompletion(x.ctx, "started-by-entity")
	if err != nil || st.Output != `"child done"` {
		t.Fatalf("started orchestration: %v %+v", err, st)
	}
	at := time.Now().Add(300 * time.Millisecond)
	d := durable.NewEntityID("counter", "delayed")
	if err := x.client.SignalEntity(x.ctx, d, "add", 3, durable.WithSignalTime(at)); err != nil {
		t.Fatal(err)
	}
	waitEntity(t, x, d, equalsJSON("3"))
	if time.Now().Before(at) {
		t.Fatalf("a delayed signal ran early")
	}
}
