package durable_test

import (
	"context"
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

var _ = errors.New
var _ = fmt.Sprint
var _ = runtime.NumGoroutine
