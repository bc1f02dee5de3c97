package durable_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/durable"
	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/backend/memory"
	"github.com/stratus-dev/stratus/durable/history"
)

// registry maps names to functions for a test worker.
type registry struct {
	orchestrators map[string]durable.Orchestrator
	activities    map[string]durable.ActivityFunc
}

func (r registry) options() durable.WorkerOptions {
	return durable.WorkerOptions{
		Orchestrators: func(n string) (durable.Orchestrator, bool) { o, ok := r.orchestrators[n]; return o, ok },
		Activities:    func(n string) (durable.ActivityFunc, bool) { a, ok := r.activities[n]; return a, ok },
	}
}

type bundle struct {
	b      *memory.Backend
	w      *durable.Worker
	client *durable.Client
	ctx    context.Context
	stop   func()
}

// startWorker runs a worker over a fresh memory backend until the test ends.
func startWorker(t *testing.T, r registry, tweak ...func(*durable.WorkerOptions)) *bundle {
	t.Helper()
	b := memory.New()
	o := r.options()
	for _, f := range tweak {
		f(&o)
	}
	w := durable.NewWorker(b, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("worker: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	tctx, tcancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(tcancel)
	return &bundle{b: b, w: w, client: durable.NewClient(b), ctx: tctx, stop: stop}
}

func (x *bundle) run(t *testing.T, name string, input any, opts ...durable.StartOption) *backend.InstanceState {
	t.Helper()
	id, err := x.client.ScheduleNew(x.ctx, name, input, opts...)
	if err != nil {
		t.Fatalf("ScheduleNew: %v", err)
	}
	st, err := x.client.WaitForCompletion(x.ctx, id)
	if err != nil {
		t.Fatalf("WaitForCompletion: %v", err)
	}
	return st
}

func sayHello(_ context.Context, name string) (string, error) { return "Hello " + name + "!", nil }

func helloSequence(ctx *durable.OrchestrationContext, _ any) ([]string, error) {
	var out []string
	for _, city := range []string{"Tokyo", "Seattle", "London"} {
		g, err := durable.Await[string](ctx.CallActivity("SayHello", city))
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, nil
}

func TestWorkerHelloSequence(t *testing.T) {
	t.Parallel()
	x := startWorker(t, registry{
		orchestrators: map[string]durable.Orchestrator{"HelloSequence": durable.Orchestration(helloSequence)},
		activities:    map[string]durable.ActivityFunc{"SayHello": durable.Activity(sayHello)},
	})
	st := x.run(t, "HelloSequence", nil)
	if st.RuntimeStatus != history.StatusCompleted || st.Output != `["Hello Tokyo!","Hello Seattle!","Hello London!"]` {
		t.Fatalf("status %s output %s failure %+v", st.RuntimeStatus, st.Output, st.FailureDetails)
	}
	h, err := x.client.GetHistory(x.ctx, st.InstanceID)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range h {
		types = append(types, e.EventType.String())
	}
	want := "OrchestratorStarted ExecutionStarted TaskScheduled OrchestratorCompleted " +
		"OrchestratorStarted TaskCompleted TaskScheduled OrchestratorCompleted " +
		"OrchestratorStarted TaskCompleted TaskScheduled OrchestratorCompleted " +
		"OrchestratorStarted TaskCompleted ExecutionCompleted OrchestratorCompleted"
	if got := strings.Join(types, " "); got != want {
		t.Errorf("history\n got %s\nwant %s", got, want)
	}
}

func square(_ context.Context, x int) (int, error) { return x * x, nil }

func fanOut(ctx *durable.OrchestrationContext, n int) (int, error) {
	ts := make([]durable.Task, n)
	for i := range n {
		ts[i] = ctx.CallActivity("Square", i+1)
	}
	if err := ctx.WhenAll(ts...); err != nil {
		return 0, err
	}
	sum := 0
	for _, t := range ts {
		v, err := durable.Await[int](t)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

func TestWorkerFanOut(t *testing.T) {
	t.Parallel()
	x := startWorker(t, registry{
		orchestrators: map[string]durable.Orchestrator{"FanOut": durable.Orchestration(fanOut)},
		activities:    map[string]durable.ActivityFunc{"Square": durable.Activity(square)},
	})
	st := x.run(t, "FanOut", 100)
	if st.RuntimeStatus != history.StatusCompleted || st.Output != "338350" {
		t.Fatalf("status %s output %s", st.RuntimeStatus, st.Output)
	}
}

// TestWorkerCacheAndReplayAgree runs the same workload with the execution
// cache and without it (every work item replays history): outputs and
// histories must be the same.
func TestWorkerCacheAndReplayAgree(t *testing.T) {
	t.Parallel()
	r := registry{
		orchestrators: map[string]durable.Orchestrator{"Bill": durable.Orchestration(billing)},
		activities: map[string]durable.ActivityFunc{
			"Charge": durable.Activity(func(_ context.Context, s string) (string, error) { return "r-" + s, nil }),
			"Notify": durable.Activity(func(_ context.Context, s string) (string, error) { return "", nil }),
		},
	}
	results := map[string]string{}
	for _, cache := range []int{0, -1} {
		x := startWorker(t, r, func(o *durable.WorkerOptions) { o.CacheSize = cache })
		st := x.run(t, "Bill", []string{"a", "b", "c", "d"}, durable.WithStartInstanceID("bill-run"))
		if st.RuntimeStatus != history.StatusCompleted {
			t.Fatalf("cache %d: status %s %s", cache, st.RuntimeStatus, st.Output)
		}
		h, err := x.client.GetHistory(x.ctx, "bill-run")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range h {
			if e.EventType == history.TaskScheduled {
				names = append(names, fmt.Sprintf("%s %s", e.Name, e.Input))
			}
		}
		slicesSort(names)
		results[fmt.Sprint(cache)] = st.Output + " | " + strings.Join(names, ", ")
		stats := x.w.Stats()
		if cache == 0 && stats.CacheHits == 0 {
			t.Errorf("cache enabled but never hit: %+v", stats)
		}
		if cache == -1 && stats.CacheHits != 0 {
			t.Errorf("cache disabled but hit: %+v", stats)
		}
	}
	if results["0"] != results["-1"] {
		t.Errorf("cached and replayed runs differ:\n%s\n%s", results["0"], results["-1"])
	}
}

func billing(ctx *durable.OrchestrationContext, subs []string) ([]string, error) {
	ts := make([]durable.Task, len(subs))
	for i, s := range subs {
		ts[i] = ctx.Go(func(ctx *durable.OrchestrationContext) (any, error) {
			receipt, err := durable.Await[string](ctx.CallActivity("Charge", s))
			if err != nil {
				return nil, err
			}
			return receipt, ctx.CallActivity("Notify", receipt).Await(nil)
		})
	}
	if err := ctx.WhenAll(ts...); err != nil {
		return nil, err
	}
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i], _ = durable.Await[string](t)
	}
	return out, nil
}

func slicesSort(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func TestWorkerRetriesAndIdempotencyKey(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	keys := map[string]int{}
	attempts := 0
	flaky := func(ctx context.Context, _ any) (int, error) {
		info, _ := durable.ActivityInfoFrom(ctx)
		mu.Lock()
		defer mu.Unlock()
		keys[info.IdempotencyKey]++
		attempts++
		if attempts < 3 {
			return 0, errors.New("transient")
		}
		return attempts, nil
	}
	x := startWorker(t, registry{
		orchestrators: map[string]durable.Orchestrator{"Retry": func(ctx *durable.OrchestrationContext) (any, error) {
			p := durable.RetryPolicy{FirstRetryInterval: 5 * time.Millisecond, BackoffCoefficient: 2, MaxAttempts: 5}
			n, err := durable.Await[int](ctx.CallActivity("Flaky", nil, durable.WithRetry(p)))
			if err != nil {
				return nil, err
			}
			return n, ctx.CallActivity("Flaky", nil).Await(nil)
		}},
		activities: map[string]durable.ActivityFunc{"Flaky": durable.Activity(flaky)},
	})
	st := x.run(t, "Retry", nil)
	if st.RuntimeStatus != history.StatusCompleted || st.Output != "3" {
		t.Fatalf("status %s output %s", st.RuntimeStatus, st.Output)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(keys) != 2 {
		t.Fatalf("keys %v: want one for the retried call (3 attempts) and one for the second call", keys)
	}
	for k, n := range keys {
		if n != 3 && n != 1 {
			t.Errorf("key %s used %d times", k, n)
		}
	}
}

func TestWorkerActivityFailures(t *testing.T) {
	t.Parallel()
	x := startWorker(t, registry{
		orchestrators: map[string]durable.Orchestrator{
			"Missing": func(ctx *durable.OrchestrationContext) (any, error) {
				return nil, ctx.CallActivity("NoSuchActivity", nil).Await(nil)
			},
			"Panics": func(ctx *durable.OrchestrationContext) (any, error) {
				return nil, ctx.CallActivity("Boom", nil).Await(nil)
			},
		},
		activities: map[string]durable.ActivityFunc{"Boom": func(context.Context, json.RawMessage) (any, error) { panic("kaboom") }},
	})
	st := x.run(t, "Missing", nil)
	if st.RuntimeStatus != history.StatusFailed || !strings.Contains(st.Output, "activity function 'NoSuchActivity' is not registered") {
		t.Errorf("missing activity: %s %s", st.RuntimeStatus, st.Output)
	}
	st = x.run(t, "Panics", nil)
	fd := st.FailureDetails
	if st.RuntimeStatus != history.StatusFailed || fd == nil || fd.InnerFailure == nil || fd.InnerFailure.ErrorType != "panic" ||
		!strings.Contains(fd.InnerFailure.ErrorMessage, "kaboom") || fd.InnerFailure.StackTrace == "" {
		t.Errorf("panicking activity: %s %s %+v", st.RuntimeStatus, st.Output, fd)
	}
}

func TestWorkerTimersEventsAndControl(t *testing.T) {
	t.Parallel()
	x := startWorker(t, registry{
		orchestrators: map[string]durable.Orchestrator{
			"Approval": func(ctx *durable.OrchestrationContext) (any, error) {
				if err := ctx.Sleep(10 * time.Millisecond); err != nil {
					return nil, err
				}
				if err := ctx.SetCustomStatus("waiting"); err != nil {
					return nil, err
				}
				var v string
				err := ctx.WaitForExternalEvent("Approval", durable.WithTimeout(time.Hour)).Await(&v)
				return v, err
			},
			"Quick": func(ctx *durable.OrchestrationContext) (any, error) {
				_, err := durable.Await[string](ctx.WaitForExternalEvent("go", durable.WithTimeout(5*time.Millisecond)))
				if errors.Is(err, durable.ErrTimeout) {
					return "timeout", nil
				}
				return "event", err
			},
		},
	})
	ctx := x.ctx
	waitStatus := func(id string, want string) {
		t.Helper()
		for {
			st, err := x.client.GetInstance(ctx, id, false)
			if err != nil {
				t.Fatal(err)
			}
			if string(st.RuntimeStatus)+"/"+st.CustomStatus == want {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("instance %s never reached %s (now %s/%s)", id, want, st.RuntimeStatus, st.CustomStatus)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}

	// Raise: a 10 ms timer, then an event that beats the one-hour timeout.
	id, err := x.client.ScheduleNew(ctx, "Approval", nil, durable.WithStartInstanceID("approve-1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x.client.ScheduleNew(ctx, "Approval", nil, durable.WithStartInstanceID("approve-1")); !errors.Is(err, backend.ErrInstanceExists) {
		t.Errorf("second start: %v, want ErrInstanceExists", err)
	}
	waitStatus(id, `Running/"waiting"`)
	if err := x.client.RaiseEvent(ctx, id, "Approval", json.RawMessage(`"yes"`)); err != nil {
		t.Fatal(err)
	}
	st, err := x.client.WaitForCompletion(ctx, id)
	if err != nil || st.Output != `"yes"` {
		t.Fatalf("approval: %v %+v", err, st)
	}
	if err := x.client.RaiseEvent(ctx, id, "Approval", "again"); !errors.Is(err, durable.ErrInstanceFinished) {
		t.Errorf("raise on a finished instance: %v", err)
	}

	// Timeout.
	if st := x.run(t, "Quick", nil); st.Output != `"timeout"` {
		t.Errorf("quick: %s", st.Output)
	}

	// Suspend, raise while suspended, resume.
	id2, _ := x.client.ScheduleNew(ctx, "Approval", nil)
	waitStatus(id2, `Running/"waiting"`)
	if err := x.client.Suspend(ctx, id2, "hold on"); err != nil {
		t.Fatal(err)
	}
	waitStatus(id2, `Suspended/"waiting"`)
	if err := x.client.RaiseEvent(ctx, id2, "Approval", "while suspended"); err != nil {
		t.Fatal(err)
	}
	if err := x.client.Resume(ctx, id2, "go"); err != nil {
		t.Fatal(err)
	}
	st, err = x.client.WaitForCompletion(ctx, id2)
	if err != nil || st.Output != `"while suspended"` {
		t.Fatalf("resume: %v %+v", err, st)
	}

	// Terminate while suspended.
	id3, _ := x.client.ScheduleNew(ctx, "Approval", nil)
	waitStatus(id3, `Running/"waiting"`)
	if err := x.client.Suspend(ctx, id3, ""); err != nil {
		t.Fatal(err)
	}
	waitStatus(id3, `Suspended/"waiting"`)
	if err := x.client.Terminate(ctx, id3, "no longer needed"); err != nil {
		t.Fatal(err)
	}
	st, err = x.client.WaitForCompletion(ctx, id3)
	if err != nil || st.RuntimeStatus != history.StatusTerminated || st.Output != `"no longer needed"` {
		t.Fatalf("terminate: %v %+v", err, st)
	}

	// Query and purge.
	page, err := x.client.Query(ctx, backend.InstanceQuery{RuntimeStatus: []history.Status{history.StatusTerminated}})
	if err != nil || len(page.Instances) != 1 || page.Instances[0].InstanceID != id3 {
		t.Fatalf("query: %v %+v", err, page)
	}
	if err := x.client.Purge(ctx, id3); err != nil {
		t.Fatal(err)
	}
	if _, err := x.client.GetInstance(ctx, id3, false); !errors.Is(err, backend.ErrInstanceNotFound) {
		t.Errorf("after purge: %v", err)
	}
	n, err := x.client.PurgeBy(ctx, backend.PurgeFilter{RuntimeStatus: []history.Status{history.StatusCompleted}})
	if err != nil || n != 3 {
		t.Errorf("purge by filter: %d, %v (want the 3 completed instances)", n, err)
	}
}

func TestWorkerSubOrchestrationAndContinueAsNew(t *testing.T) {
	t.Parallel()
	x := startWorker(t, registry{
		orchestrators: map[string]durable.Orchestrator{
			"Parent": func(ctx *durable.OrchestrationContext) (any, error) {
				a, err := durable.Await[int](ctx.CallSubOrchestrator("Count", 0))
				if err != nil {
					return nil, err
				}
				b, err := durable.Await[int](ctx.CallSubOrchestrator("Count", 5, durable.WithInstanceID("counter-child")))
				return a + b, err
			},
			"Count": durable.Orchestration(func(ctx *durable.OrchestrationContext, n int) (int, error) {
				if n < 10 {
					if err := ctx.CallActivity("Inc", n).Await(&n); err != nil {
						return 0, err
					}
					return 0, ctx.ContinueAsNew(n)
				}
				return n, nil
			}),
		},
		activities: map[string]durable.ActivityFunc{"Inc": durable.Activity(func(_ context.Context, n int) (int, error) { return n + 1, nil })},
	})
	st := x.run(t, "Parent", nil)
	if st.RuntimeStatus != history.StatusCompleted || st.Output != "20" {
		t.Fatalf("status %s output %s", st.RuntimeStatus, st.Output)
	}
	child, err := x.client.GetInstance(x.ctx, "counter-child", true)
	if err != nil || child.RuntimeStatus != history.StatusCompleted || child.Input != "10" || child.Generation != 5 {
		t.Errorf("child %v %+v", err, child)
	}
}

// TestWorkerNoGoroutineLeaks is not parallel: it counts goroutines.
func TestWorkerNoGoroutineLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	x := startWorker(t, registry{
		orchestrators: map[string]durable.Orchestrator{
			"Bill": durable.Orchestration(billing),
			"Never": func(ctx *durable.OrchestrationContext) (any, error) {
				return nil, ctx.WaitForExternalEvent("x").Await(nil)
			},
		},
		activities: map[string]durable.ActivityFunc{
			"Charge": durable.Activity(func(_ context.Context, s string) (string, error) { return s, nil }),
			"Notify": durable.Activity(func(_ context.Context, s string) (string, error) { return s, nil }),
		},
	})
	for range 10 {
		x.run(t, "Bill", []string{"a", "b", "c"})
	}
	// A finished instance's coroutines exit once its work item is committed,
	// which can be just after its status reads Completed.
	if n := eventually(func() int { return coroutines() }, 0); n != 0 {
		t.Errorf("%d coroutine goroutines left after the instances finished", n)
	}
	// Parked instances are unloaded when the worker stops.
	for range 5 {
		if _, err := x.client.ScheduleNew(x.ctx, "Never", nil); err != nil {
			t.Fatal(err)
		}
	}
	for {
		page, err := x.client.Query(x.ctx, backend.InstanceQuery{RuntimeStatus: []history.Status{history.StatusRunning}})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Instances) == 5 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if n := eventually(func() int { return coroutines() }, 5); n != 5 {
		t.Errorf("%d parked coroutines, want 5", n)
	}
	x.stop()
	deadline := time.Now().Add(10 * time.Second)
	for coroutines() > 0 || runtime.NumGoroutine() > before+2 {
		if time.Now().After(deadline) {
			t.Fatalf("goroutines leaked: %d coroutines, %d goroutines (before %d)", coroutines(), runtime.NumGoroutine(), before)
		}
		time.Sleep(time.Millisecond)
	}
}

// eventually polls f for up to 10 s until it returns want, and returns its
// last value.
func eventually(f func() int, want int) int {
	deadline := time.Now().Add(10 * time.Second)
	n := f()
	for n != want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
		n = f()
	}
	return n
}

func coroutines() int {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	return strings.Count(string(buf[:n]), "durable.(*coroutine).run")
}

func TestWorkerRewind(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	broken := true
	x := startWorker(t, registry{
		orchestrators: map[string]durable.Orchestrator{"Chain": func(ctx *durable.OrchestrationContext) (any, error) {
			a, err := durable.Await[string](ctx.CallActivity("Step", "a"))
			if err != nil {
				return nil, err
			}
			p := durable.RetryPolicy{FirstRetryInterval: time.Millisecond, MaxAttempts: 2}
			b, err := durable.Await[string](ctx.CallActivity("Step", "b", durable.WithRetry(p)))
			if err != nil {
				return nil, err
			}
			return a + b, nil
		}},
		activities: map[string]durable.ActivityFunc{"Step": durable.Activity(func(_ context.Context, s string) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			if s == "b" && broken {
				return "", errors.New("b is broken")
			}
			return s, nil
		})},
	})
	st := x.run(t, "Chain", nil, durable.WithStartInstanceID("rewind-me"))
	if st.RuntimeStatus != history.StatusFailed {
		t.Fatalf("status %s", st.RuntimeStatus)
	}
	if err := x.client.Rewind(x.ctx, "rewind-me", "fixed"); err != nil {
		t.Fatal(err)
	}
	// Still broken: the rewound call fails again and so does the instance.
	st, err := x.client.WaitForCompletion(x.ctx, "rewind-me")
	if err != nil || st.RuntimeStatus != history.StatusFailed {
		t.Fatalf("%v %+v", err, st)
	}
	mu.Lock()
	broken = false
	mu.Unlock()
	if err := x.client.Rewind(x.ctx, "rewind-me", "fixed"); err != nil {
		t.Fatal(err)
	}
	st, err = x.client.WaitForCompletion(x.ctx, "rewind-me")
	if err != nil || st.RuntimeStatus != history.StatusCompleted || st.Output != `"ab"` {
		t.Fatalf("after rewind: %v %+v", err, st)
	}
	if err := x.client.Rewind(x.ctx, "rewind-me", "again"); !errors.Is(err, durable.ErrNotFailed) {
		t.Errorf("rewind of a completed instance: %v", err)
	}
}
