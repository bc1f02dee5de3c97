package azurestorage

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/bindings/azstorage"
	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
	"github.com/stratus-dev/stratus/tests/azurite"
)

// testEnv is one hub on a shared Azurite.
type testEnv struct {
	inst    *azurite.Instance
	clients *azstorage.Clients
	hub     string
}

func newEnv(t *testing.T) *testEnv {
	t.Helper()
	inst := azurite.Shared(t)
	clients, err := azstorage.Open(inst.ConnectionString)
	if err != nil {
		t.Fatal(err)
	}
	return &testEnv{inst: inst, clients: clients, hub: uniqueHub()}
}

func uniqueHub() string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return "T" + string(b)
}

func testLogger() *slog.Logger {
	level := slog.LevelWarn
	if os.Getenv("STRATUS_TEST_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// testOptions are fast settings: short visibility so that "crashed"
// messages come back quickly, and a short idle poll cap.
func (e *testEnv) options() Options {
	return Options{
		HubName: e.hub, MaxQueuePollingInterval: 200 * time.Millisecond, ControlQueueVisibilityTimeout: 2 * time.Second,
		WorkItemQueueVisibilityTimeout: 3 * time.Second, LeaseDuration: 15 * time.Second, Logger: testLogger(),
	}
}

// open builds a backend; start starts it too. Both stop it at cleanup.
func (e *testEnv) open(t *testing.T, o Options) *Backend {
	t.Helper()
	b, err := New(e.clients, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Stop(ctx)
	})
	return b
}

func (e *testEnv) start(t *testing.T, o Options) *Backend {
	t.Helper()
	b := e.open(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return b
}

func startedEvent(id, name, input string) *history.Event {
	return &history.Event{EventType: history.ExecutionStarted, EventID: -1, Timestamp: time.Now().UTC(), Name: name, Input: input,
		OrchestrationInstance: &history.Instance{InstanceID: id, ExecutionID: strings.ReplaceAll(bindings.NewGUID(), "-", "")}}
}

// chain is a hand-written orchestrator, computed as the runtime would: it
// calls activity SayHello for each city in turn and returns the results as
// a JSON array.
type chain struct {
	cities []string
	// onStep, when set, sees every completion before it is committed.
	onStep func(wi *backend.OrchestrationWorkItem, c *backend.OrchestrationCompletion)
}

func (ch *chain) step(wi *backend.OrchestrationWorkItem) *backend.OrchestrationCompletion {
	now := time.Now().UTC()
	all := append(append([]*history.Event{}, wi.History...), wi.NewEvents...)
	var started *history.Event
	var results []string
	scheduled := 0
	for _, e := range all {
		switch e.EventType {
		case history.ExecutionStarted:
			started = e
		case history.TaskScheduled:
			scheduled++
		case history.TaskCompleted:
			results = append(results, e.Result)
		}
	}
	c := &backend.OrchestrationCompletion{ExecutionID: started.OrchestrationInstance.ExecutionID}
	c.NewHistory = append(c.NewHistory, &history.Event{EventType: history.OrchestratorStarted, EventID: -1, Timestamp: now})
	c.NewHistory = append(c.NewHistory, wi.NewEvents...)
	c.State = backend.InstanceState{Name: started.Name, RuntimeStatus: history.StatusRunning, Input: started.Input}
	if len(results) == scheduled {
		if scheduled < len(ch.cities) {
			ts := &history.Event{EventType: history.TaskScheduled, EventID: scheduled, Timestamp: now, Name: "SayHello", Input: fmt.Sprintf("%q", ch.cities[scheduled])}
			c.NewHistory = append(c.NewHistory, ts)
			c.Outbound = append(c.Outbound, backend.Message{TargetInstanceID: wi.InstanceID, TargetExecutionID: c.ExecutionID, Event: ts})
		} else {
			out := "[" + strings.Join(results, ",") + "]"
			c.NewHistory = append(c.NewHistory, &history.Event{EventType: history.ExecutionCompleted, EventID: -1, Timestamp: now,
				OrchestrationStatus: history.StatusCompleted, Result: out})
			c.State.RuntimeStatus, c.State.Output = history.StatusCompleted, out
		}
	}
	c.NewHistory = append(c.NewHistory, &history.Event{EventType: history.OrchestratorCompleted, EventID: -1, Timestamp: now})
	if ch.onStep != nil {
		ch.onStep(wi, c)
	}
	return c
}

// sayHello is the activity: "Tokyo" -> "Hello Tokyo!".
func sayHello(wi *backend.ActivityWorkItem) *history.Event {
	in := strings.Trim(wi.Event.Input, `"`)
	return &history.Event{EventType: history.TaskCompleted, EventID: -1, Timestamp: time.Now().UTC(), TaskScheduledID: wi.Event.EventID,
		Result: fmt.Sprintf("%q", "Hello "+in+"!")}
}

// runWorkers runs orchestration and activity workers until the returned
// stop function is called.
func runWorkers(t *testing.T, b *Backend, orch func(*backend.OrchestrationWorkItem) *backend.OrchestrationCompletion, workers int, onDone ...func(id string)) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				wi, err := b.NextOrchestrationWorkItem(ctx)
				if err != nil {
					return
				}
				c := orch(wi)
				err = b.CompleteOrchestrationWorkItem(ctx, wi, c)
				if err != nil && ctx.Err() == nil && !errors.Is(err, backend.ErrWorkItemLost) {
					t.Logf("complete %s: %v", wi.InstanceID, err)
				}
				if err == nil && c.State.RuntimeStatus.Terminal() {
					for _, f := range onDone {
						f(wi.InstanceID)
					}
				}
			}
		})
		wg.Go(func() {
			for {
				wi, err := b.NextActivityWorkItem(ctx)
				if err != nil {
					return
				}
				if err := b.CompleteActivityWorkItem(ctx, wi, sayHello(wi)); err != nil && ctx.Err() == nil {
					t.Logf("complete activity: %v", err)
				}
			}
		})
	}
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); wg.Wait() }) }
	t.Cleanup(stop)
	return stop
}

// waitStatus polls GetInstance until the instance reaches a terminal status.
func waitStatus(t *testing.T, b *Backend, id string, timeout time.Duration, want history.Status) *backend.InstanceState {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last *backend.InstanceState
	for time.Now().Before(deadline) {
		st, err := b.GetInstance(context.Background(), id, true)
		if err == nil {
			last = st
			if st.RuntimeStatus == want {
				return st
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("instance %s did not reach %s within %s (last %+v)", id, want, timeout, last)
	return nil
}

// eventually polls cond until it holds.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var cities = []string{"Tokyo", "Seattle", "London"}

const helloOutput = `["Hello Tokyo!","Hello Seattle!","Hello London!"]`
