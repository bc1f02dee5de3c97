package azurestorage

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
)

// checkHistory fails unless h is a clean chain-3 history: every activity
// scheduled and completed exactly once, one start, one completion.
func checkHistory(t *testing.T, h []*history.Event) {
	t.Helper()
	count := map[string]int{}
	for _, e := range h {
		switch e.EventType {
		case history.TaskScheduled:
			count[fmt.Sprintf("scheduled-%d", e.EventID)]++
		case history.TaskCompleted:
			count[fmt.Sprintf("completed-%d", e.TaskScheduledID)]++
		case history.ExecutionStarted, history.ExecutionCompleted:
			count[e.EventType.String()]++
		}
	}
	for k, v := range count {
		if v != 1 {
			t.Errorf("history has %s %d times", k, v)
		}
	}
	if len(count) != 8 {
		t.Errorf("history is incomplete: %v", count)
	}
}

// TestCrashAfterHistoryWrite "kills" a worker right after a checkpoint's
// history write (before its messages, Instances row and acknowledgements),
// at every checkpoint of a chain in turn, and lets a fresh backend on the
// same hub finish: history has no duplicates, the outbound messages are
// resent and the Instances row is repaired.
func TestCrashAfterHistoryWrite(t *testing.T) {
	t.Parallel()
	for crashAt := 1; crashAt <= 4; crashAt++ {
		t.Run(fmt.Sprintf("checkpoint-%d", crashAt), func(t *testing.T) {
			t.Parallel()
			env := newEnv(t)
			id := "crash-me"
			a := env.start(t, env.options())
			var turns atomic.Int32
			crashed := make(chan struct{})
			a.failAfterHistory = func(string, *backend.OrchestrationCompletion) bool {
				if int(turns.Add(1)) == crashAt {
					close(crashed)
					return true
				}
				return false
			}
			stopA := runWorkers(t, a, (&chain{cities: cities}).step, 1)
			if err := a.CreateInstance(context.Background(), startedEvent(id, "HelloSequence", "null")); err != nil {
				t.Fatal(err)
			}
			<-crashed
			stopA()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := a.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			if crashAt == 4 {
				// History says Completed, the row still says Running.
				st, err := a.GetInstance(ctx, id, false)
				if err != nil || st.RuntimeStatus != history.StatusRunning {
					t.Fatalf("row before repair: %+v %v", st, err)
				}
			}

			b := env.start(t, env.options())
			runWorkers(t, b, (&chain{cities: cities}).step, 1)
			st := waitStatus(t, b, id, 60*time.Second, history.StatusCompleted)
			if st.Output != helloOutput {
				t.Fatalf("output %s", st.Output)
			}
			h, err := b.GetHistory(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			checkHistory(t, h)
			s := b.Stats()
			if s.Repaired < 1 || s.Dropped < 1 {
				t.Fatalf("no recovery recorded: %+v", s)
			}
			if crashAt < 4 && s.Resent < 1 {
				t.Fatalf("outbound message not resent: %+v", s)
			}
		})
	}
}

// TestCreateInstance covers ErrInstanceExists and re-creating a finished
// instance (next generation, history reset).
func TestCreateInstance(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	b := env.start(t, env.options())
	ctx := context.Background()
	first := startedEvent("dup", "HelloSequence", `1`)
	if err := b.CreateInstance(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := b.CreateInstance(ctx, startedEvent("dup", "HelloSequence", `2`)); !errors.Is(err, backend.ErrInstanceExists) {
		t.Fatalf("second create: %v, want ErrInstanceExists", err)
	}
	runWorkers(t, b, (&chain{cities: cities}).step, 1)
	st := waitStatus(t, b, "dup", 30*time.Second, history.StatusCompleted)
	if st.Input != `1` || st.ExecutionID != first.OrchestrationInstance.ExecutionID || st.Generation != 0 {
		t.Fatalf("first run: %+v", st)
	}
	second := startedEvent("dup", "HelloSequence", `3`)
	if err := b.CreateInstance(ctx, second); err != nil {
		t.Fatalf("re-create finished instance: %v", err)
	}
	eventually(t, 30*time.Second, "second run", func() bool {
		st, err := b.GetInstance(ctx, "dup", true)
		return err == nil && st.ExecutionID == second.OrchestrationInstance.ExecutionID && st.RuntimeStatus == history.StatusCompleted
	})
	st, _ = b.GetInstance(ctx, "dup", true)
	if st.Input != `3` || st.Generation != 1 || st.Output != helloOutput {
		t.Fatalf("second run: %+v", st)
	}
	h, err := b.GetHistory(ctx, "dup")
	if err != nil {
		t.Fatal(err)
	}
	checkHistory(t, h)
	if h[1].OrchestrationInstance.ExecutionID != second.OrchestrationInstance.ExecutionID || h[1].Generation != 1 {
		t.Fatalf("history not reset: %+v", h[1])
	}
}

// TestTwoBackendsOneHub runs two backends on one hub: no instance is ever
// handed out by both at once, all instances finish, and when one stops the
// other takes its partitions over.
func TestTwoBackendsOneHub(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	o := env.options()
	a := env.start(t, o)
	b := env.start(t, o)
	var mu sync.Mutex
	busy := map[string]string{}
	guard := func(name string, be *Backend) func(*backend.OrchestrationWorkItem) *backend.OrchestrationCompletion {
		ch := &chain{cities: cities}
		return func(wi *backend.OrchestrationWorkItem) *backend.OrchestrationCompletion {
			mu.Lock()
			if other, ok := busy[wi.InstanceID]; ok {
				t.Errorf("%s handed out by %s and %s at once", wi.InstanceID, other, name)
			}
			busy[wi.InstanceID] = name
			mu.Unlock()
			time.Sleep(time.Millisecond)
			c := ch.step(wi)
			mu.Lock()
			delete(busy, wi.InstanceID)
			mu.Unlock()
			return c
		}
	}
	stopA := runWorkers(t, a, guard("a", a), 2)
	runWorkers(t, b, guard("b", b), 2)
	ctx := context.Background()
	const n = 20
	for i := range n {
		if err := a.CreateInstance(ctx, startedEvent(fmt.Sprintf("two-%d", i), "HelloSequence", "null")); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n / 2 {
		waitStatus(t, a, fmt.Sprintf("two-%d", i), 60*time.Second, history.StatusCompleted)
	}
	// a leaves; b must take over a's partitions and finish the rest.
	stopA()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := a.Stop(sctx); err != nil {
		t.Fatal(err)
	}
	for i := n; i < n+6; i++ {
		if err := b.CreateInstance(ctx, startedEvent(fmt.Sprintf("two-%d", i), "HelloSequence", "null")); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n + 6 {
		st := waitStatus(t, b, fmt.Sprintf("two-%d", i), 60*time.Second, history.StatusCompleted)
		if st.Output != helloOutput {
			t.Fatalf("two-%d output %s", i, st.Output)
		}
	}
	if got := len(b.ownedIndexes()); got != b.PartitionCount() {
		t.Fatalf("b owns %d partitions after a stopped", got)
	}
}

// TestLongTimer fires a timer longer than one queue hop (the hop is capped
// at 1 s here): the message is re-delayed until its FireAt and delivered
// no earlier.
func TestLongTimer(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	o := env.options()
	o.MaxMessageDelay = time.Second
	b := env.start(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	started := startedEvent("timer", "Sleepy", "null")
	exec := started.OrchestrationInstance.ExecutionID
	if err := b.CreateInstance(ctx, started); err != nil {
		t.Fatal(err)
	}
	wi, err := b.NextOrchestrationWorkItem(ctx)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	fireAt := now.Add(3500 * time.Millisecond)
	created := &history.Event{EventType: history.TimerCreated, EventID: 0, Timestamp: now, FireAt: fireAt}
	fired := &history.Event{EventType: history.TimerFired, EventID: -1, Timestamp: now, TimerID: 0, FireAt: fireAt}
	err = b.CompleteOrchestrationWorkItem(ctx, wi, &backend.OrchestrationCompletion{
		ExecutionID: exec,
		NewHistory:  []*history.Event{{EventType: history.OrchestratorStarted, EventID: -1, Timestamp: now}, wi.NewEvents[0], created, {EventType: history.OrchestratorCompleted, EventID: -1, Timestamp: now}},
		Outbound:    []backend.Message{{TargetInstanceID: "timer", TargetExecutionID: exec, Event: fired, VisibleAt: fireAt}},
		State:       backend.InstanceState{RuntimeStatus: history.StatusRunning},
	})
	if err != nil {
		t.Fatal(err)
	}
	wi, err = b.NextOrchestrationWorkItem(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := time.Now(); got.Before(fireAt) {
		t.Fatalf("timer delivered %s early", fireAt.Sub(got))
	}
	if len(wi.NewEvents) != 1 || wi.NewEvents[0].EventType != history.TimerFired || wi.NewEvents[0].TimerID != 0 {
		t.Fatalf("timer work item: %v", wi.NewEvents)
	}
	if s := b.Stats(); s.Redelayed < 1 {
		t.Fatalf("timer was not re-delayed: %+v", s)
	}
	if err := b.AbandonOrchestrationWorkItem(ctx, wi, 0); err != nil {
		t.Fatal(err)
	}
	wi, err = b.NextOrchestrationWorkItem(ctx)
	if err != nil || len(wi.NewEvents) != 1 || wi.NewEvents[0].EventType != history.TimerFired {
		t.Fatalf("abandoned work item not redelivered: %v %v", wi, err)
	}
}

// TestHandoverSpilledAtStop stops a backend while an activity result it
// handed over in memory waits for its orchestration: Stop enqueues the
// result, so the next backend finishes the instance without calling the
// activity again.
func TestHandoverSpilledAtStop(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	a := env.start(t, env.options())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	id := "handover-stop"
	if err := a.CreateInstance(ctx, startedEvent(id, "HelloSequence", "null")); err != nil {
		t.Fatal(err)
	}
	wi, err := a.NextOrchestrationWorkItem(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.CompleteOrchestrationWorkItem(ctx, wi, (&chain{cities: cities}).step(wi)); err != nil {
		t.Fatal(err)
	}
	awi, err := a.NextActivityWorkItem(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.CompleteActivityWorkItem(ctx, awi, sayHello(awi)); err != nil {
		t.Fatal(err)
	}
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	b := env.start(t, env.options())
	var mu sync.Mutex
	calls := map[int]int{}
	bctx, bcancel := context.WithCancel(ctx)
	defer bcancel()
	go func() {
		for {
			wi, err := b.NextActivityWorkItem(bctx)
			if err != nil {
				return
			}
			mu.Lock()
			calls[wi.Event.EventID]++
			mu.Unlock()
			_ = b.CompleteActivityWorkItem(bctx, wi, sayHello(wi))
		}
	}()
	go func() {
		for {
			wi, err := b.NextOrchestrationWorkItem(bctx)
			if err != nil {
				return
			}
			_ = b.CompleteOrchestrationWorkItem(bctx, wi, (&chain{cities: cities}).step(wi))
		}
	}()
	st := waitStatus(t, b, id, 30*time.Second, history.StatusCompleted)
	if st.Output != helloOutput {
		t.Fatalf("output %s", st.Output)
	}
	h, err := b.GetHistory(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	checkHistory(t, h)
	mu.Lock()
	defer mu.Unlock()
	if calls[0] != 0 || calls[1] != 1 || calls[2] != 1 {
		t.Fatalf("activity calls after the restart by task: %v, want none for task 0", calls)
	}
}
