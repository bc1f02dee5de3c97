package durable

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/durable/history"
)

func expect(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s\n got: %s\nwant: %s", what, got, want)
	}
}

func hello(ctx *OrchestrationContext) (any, error) {
	var out []string
	for _, city := range []string{"Tokyo", "Seattle", "London"} {
		g, err := Await[string](ctx.CallActivity("SayHello", city))
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, nil
}

func TestExecutorSequence(t *testing.T) {
	t.Parallel()
	s := newSim(t, map[string]Orchestrator{"Hello": hello})
	c := s.start("Hello", "")
	expect(t, "episode 1", describeAll(c.NewHistory), `OrchestratorStarted ExecutionStarted(Hello ) TaskScheduled#0(SayHello "Tokyo") OrchestratorCompleted`)
	expect(t, "messages 1", outbound(c), `i1<-TaskScheduled#0(SayHello "Tokyo")`)
	if c.State.RuntimeStatus != history.StatusRunning || c.ExecutionID != "e1" || c.NewHistory[0].Timestamp != t0 {
		t.Errorf("state %s exec %s", c.State.RuntimeStatus, c.ExecutionID)
	}
	if k := c.Outbound[0].Event.Tags[IdempotencyKeyTag]; k != "i1:e1:0" {
		t.Errorf("idempotency key %q", k)
	}
	c = s.step(completed(0, `"Hello Tokyo!"`))
	expect(t, "episode 2", newEvents(c), `TaskCompleted(#0 "Hello Tokyo!") TaskScheduled#1(SayHello "Seattle")`)
	s.step(completed(1, `"Hello Seattle!"`))
	c = s.step(completed(2, `"Hello London!"`))
	expect(t, "episode 4", newEvents(c), `TaskCompleted(#2 "Hello London!") ExecutionCompleted(Completed ["Hello Tokyo!","Hello Seattle!","Hello London!"])`)
	if c.State.RuntimeStatus != history.StatusCompleted || c.State.Output != `["Hello Tokyo!","Hello Seattle!","Hello London!"]` || c.State.CompletedTime.IsZero() {
		t.Errorf("final state %+v", c.State)
	}
}

func TestExecutorNonDeterminism(t *testing.T) {
	t.Parallel()
	callsB := false
	orch := func(ctx *OrchestrationContext) (any, error) {
		name := "A"
		if callsB {
			name = "B"
		}
		return nil, ctx.CallActivity(name, nil).Await(nil)
	}
	s := newSim(t, map[string]Orchestrator{"Flip": orch})
	s.start("Flip", "")
	callsB = true
	s.ex.close()
	s.ex = nil // force a cold replay against history recorded with "A"
	c := s.step(completed(0, ""))
	if c.State.RuntimeStatus != history.StatusFailed || c.State.FailureDetails == nil {
		t.Fatalf("status %s", c.State.RuntimeStatus)
	}
	msg := c.State.FailureDetails.ErrorMessage
	for _, want := range []string{NonDeterminismCode, "'Flip'", "position 0", "TaskScheduled#0(A)", "TaskScheduled#0(B)"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if c.State.FailureDetails.ErrorType != "NonDeterminismError" {
		t.Errorf("error type %q", c.State.FailureDetails.ErrorType)
	}
	expect(t, "episode", newEvents(c), `ExecutionCompleted(Failed "Orchestrator function 'Flip' failed: `+strings.ReplaceAll(msg, `'`, `'`)+`")`)
}

func TestExecutorNonDeterminismCases(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		before  Orchestrator // recorded history
		after   Orchestrator // replayed code
		next    *history.Event
		wantMsg []string
	}{
		{
			name:    "activity replaced by timer",
			before:  func(ctx *OrchestrationContext) (any, error) { return nil, ctx.CallActivity("A", nil).Await(nil) },
			after:   func(ctx *OrchestrationContext) (any, error) { return nil, ctx.Sleep(time.Minute) },
			next:    completed(0, ""),
			wantMsg: []string{"TaskScheduled#0(A)", "called TimerCreated#0"},
		},
		{
			name:    "call removed",
			before:  func(ctx *OrchestrationContext) (any, error) { return nil, ctx.CallActivity("A", nil).Await(nil) },
			after:   func(ctx *OrchestrationContext) (any, error) { return nil, ctx.WaitForExternalEvent("x").Await(nil) },
			next:    raised("x", ""),
			wantMsg: []string{"TaskScheduled#0(A)", "scheduled nothing there"},
		},
		{
			name:   "call added",
			before: func(ctx *OrchestrationContext) (any, error) { return nil, ctx.CallActivity("A", nil).Await(nil) },
			after: func(ctx *OrchestrationContext) (any, error) {
				ctx.CallActivity("A", nil)
				return nil, ctx.CallActivity("B", nil).Await(nil)
			},
			next:    completed(0, ""),
			wantMsg: []string{"position 1", "nothing more in that episode", "TaskScheduled#1(B)"},
		},
		{
			name:    "completion for an unknown task",
			before:  func(ctx *OrchestrationContext) (any, error) { return nil, ctx.CallActivity("A", nil).Await(nil) },
			after:   func(ctx *OrchestrationContext) (any, error) { return nil, ctx.CallActivity("A", nil).Await(nil) },
			next:    completed(7, ""),
			wantMsg: []string{"position 7", "TaskCompleted(for #7)", "never scheduled a task with that id"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cur := tt.before
			s := newSim(t, map[string]Orchestrator{"O": func(ctx *OrchestrationContext) (any, error) { return cur(ctx) }})
			s.start("O", "")
			cur = tt.after
			if s.ex != nil {
				s.ex.close()
				s.ex = nil
			}
			c := s.step(tt.next)
			if c.State.RuntimeStatus != history.StatusFailed {
				t.Fatalf("status %s, want Failed", c.State.RuntimeStatus)
			}
			for _, w := range tt.wantMsg {
				if !strings.Contains(c.State.FailureDetails.ErrorMessage, w) {
					t.Errorf("message %q lacks %q", c.State.FailureDetails.ErrorMessage, w)
				}
			}
		})
	}
}

func TestExecutorActivityFailure(t *testing.T) {
	t.Parallel()
	orch := func(ctx *OrchestrationContext) (any, error) {
		err := ctx.CallActivity("Charge", 5).Await(nil)
		var tf *TaskFailedError
		if !errors.As(err, &tf) {
			return nil, errors.New("not a TaskFailedError")
		}
		return tf.TaskName + "|" + tf.Details.ErrorMessage + "|" + err.Error(), nil
	}
	s := newSim(t, map[string]Orchestrator{"O": orch})
	s.start("O", "")
	c := s.step(failed(0, "card declined"))
	expect(t, "output", c.State.Output, `"Charge|card declined|The activity function 'Charge' failed: \"card declined\". See the function execution logs for additional details."`)
}

func TestExecutorUnhandledFailureAndPanic(t *testing.T) {
	t.Parallel()
	s := newSim(t, map[string]Orchestrator{
		"Err": func(ctx *OrchestrationContext) (any, error) {
			return nil, ctx.CallActivity("Charge", nil).Await(nil)
		},
		"Panic": func(ctx *OrchestrationContext) (any, error) {
			defer ctx.SetCustomStatus("deferred ran")
			var m map[string]int
			m["x"] = 1
			return nil, nil
		},
	})
	s.start("Err", "")
	c := s.step(failed(0, "boom"))
	fd := c.State.FailureDetails
	expect(t, "output", c.State.Output, `"Orchestrator function 'Err' failed: The activity function 'Charge' failed: \"boom\". See the function execution logs for additional details."`)
	if fd == nil || fd.ErrorType != "durable.TaskFailedError" || fd.InnerFailure == nil || fd.InnerFailure.ErrorMessage != "boom" {
		t.Errorf("failure details %+v", fd)
	}

	p := newSim(t, s.orchestrators())
	c = p.start("Panic", "")
	fd = c.State.FailureDetails
	if c.State.RuntimeStatus != history.StatusFailed || fd == nil || fd.ErrorType != "panic" ||
		!strings.Contains(fd.ErrorMessage, "assignment to entry in nil map") || !strings.Contains(fd.StackTrace, "executor_test.go") {
		t.Errorf("status %s failure %+v", c.State.RuntimeStatus, fd)
	}
	if c.State.CustomStatus != `"deferred ran"` {
		t.Errorf("custom status %q: deferred calls must run on panic", c.State.CustomStatus)
	}
}

// orchestrators returns the registry of s (for a second sim).
func (s *sim) orchestrators() map[string]Orchestrator {
	m := map[string]Orchestrator{}
	for _, n := range []string{"Err", "Panic"} {
		if o, ok := s.g.orchestrators(n); ok {
			m[n] = o
		}
	}
	return m
}

func TestExecutorRetries(t *testing.T) {
	t.Parallel()
	p := RetryPolicy{FirstRetryInterval: 10 * time.Second, BackoffCoefficient: 2, MaxAttempts: 3}
	orch := func(ctx *OrchestrationContext) (any, error) {
		r, err := Await[string](ctx.CallActivity("Flaky", "x", WithRetry(p)))
		if err != nil {
			return nil, err
		}
		return r, ctx.CallActivity("Other", nil).Await(nil)
	}
	s := newSim(t, map[string]Orchestrator{"R": orch})
	c := s.start("R", "")
	expect(t, "attempt 1", newEvents(c), `ExecutionStarted(R ) TaskScheduled#0(Flaky "x")`)
	c = s.step(failed(0, "try again"))
	expect(t, "back-off 1", newEvents(c), `TaskFailed(#0 try again) TimerCreated#1(+10s)`)
	expect(t, "timer message", outbound(c), `i1<-TimerFired(#1)@+10s`)
	c = s.at(10 * time.Second).step(fired(1))
	expect(t, "attempt 2", newEvents(c), `TimerFired(#1) TaskScheduled#2(Flaky "x")`)
	c = s.step(failed(2, "try again"))
	expect(t, "back-off 2", newEvents(c), `TaskFailed(#2 try again) TimerCreated#3(+30s)`)
	c = s.at(30 * time.Second).step(fired(3))
	expect(t, "attempt 3", newEvents(c), `TimerFired(#3) TaskScheduled#4(Flaky "x")`)
	c = s.step(completed(4, `"ok"`))
	expect(t, "next call", newEvents(c), `TaskCompleted(#4 "ok") TaskScheduled#5(Other )`)

	keys := map[string]int{}
	for _, e := range s.hist {
		if e.EventType == history.TaskScheduled {
			keys[e.Tags[IdempotencyKeyTag]]++
		}
	}
	if keys["i1:e1:0"] != 3 || keys["i1:e1:5"] != 1 || len(keys) != 2 {
		t.Errorf("idempotency keys %v: want one key for the three attempts and another for the next call", keys)
	}
}

func TestExecutorRetriesGiveUp(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		p    RetryPolicy
		want string // episode after the first failure
	}{
		{"max attempts", RetryPolicy{FirstRetryInterval: time.Second, MaxAttempts: 1}, "ExecutionCompleted(Failed"},
		{"handle false", RetryPolicy{FirstRetryInterval: time.Second, MaxAttempts: 5, Handle: func(e *TaskFailedError) bool {
			return !strings.Contains(e.Details.ErrorMessage, "fatal")
		}}, "ExecutionCompleted(Failed"},
		{"timeout elapsed", RetryPolicy{FirstRetryInterval: time.Second, MaxAttempts: 5, RetryTimeout: time.Minute}, "ExecutionCompleted(Failed"},
		{"retried", RetryPolicy{FirstRetryInterval: time.Second, MaxAttempts: 5, RetryTimeout: 2 * time.Minute}, "TimerCreated#1(+1m1s)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newSim(t, map[string]Orchestrator{"R": func(ctx *OrchestrationContext) (any, error) {
				return nil, ctx.CallActivity("Flaky", nil, WithRetry(tt.p)).Await(nil)
			}})
			s.start("R", "")
			c := s.at(time.Minute).step(failed(0, "fatal error"))
			if !strings.Contains(newEvents(c), tt.want) {
				t.Errorf("episode %s lacks %s", newEvents(c), tt.want)
			}
		})
	}
}

func TestRetryDelay(t *testing.T) {
	t.Parallel()
	tf := &TaskFailedError{TaskName: "A"}
	tests := []struct {
		name    string
		p       RetryPolicy
		attempt int
		elapsed time.Duration
		want    time.Duration
		ok      bool
	}{
		{"first retry", RetryPolicy{FirstRetryInterval: time.Second, MaxAttempts: 3}, 1, 0, time.Second, true},
		{"coefficient 1 by default", RetryPolicy{FirstRetryInterval: time.Second, MaxAttempts: 5}, 3, 0, time.Second, true},
		{"exponential", RetryPolicy{FirstRetryInterval: time.Second, BackoffCoefficient: 2, MaxAttempts: 5}, 3, 0, 4 * time.Second, true},
		{"capped", RetryPolicy{FirstRetryInterval: time.Second, BackoffCoefficient: 10, MaxRetryInterval: 30 * time.Second, MaxAttempts: 9}, 4, 0, 30 * time.Second, true},
		{"default cap six days", RetryPolicy{FirstRetryInterval: time.Hour, BackoffCoefficient: 100, MaxAttempts: 9}, 5, 0, DefaultMaxRetryInterval, true},
		{"attempts used", RetryPolicy{FirstRetryInterval: time.Second, MaxAttempts: 3}, 3, 0, 0, false},
		{"zero attempts means one", RetryPolicy{FirstRetryInterval: time.Second}, 1, 0, 0, false},
		{"timeout reached", RetryPolicy{FirstRetryInterval: time.Second, MaxAttempts: 9, RetryTimeout: time.Minute}, 2, time.Minute, 0, false},
		{"within timeout", RetryPolicy{FirstRetryInterval: time.Second, MaxAttempts: 9, RetryTimeout: time.Minute}, 2, 59 * time.Second, time.Second, true},
		{"not handled", RetryPolicy{FirstRetryInterval: time.Second, MaxAttempts: 9, Handle: func(*TaskFailedError) bool { return false }}, 1, 0, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d, ok := tt.p.nextDelay(tt.attempt, t0, t0.Add(tt.elapsed), tf)
			if d != tt.want || ok != tt.ok {
				t.Errorf("nextDelay = %s, %v; want %s, %v", d, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestExecutorWhenAnyTimer(t *testing.T) {
	t.Parallel()
	orch := func(ctx *OrchestrationContext) (any, error) {
		work := ctx.CallActivity("Work", nil)
		deadline := ctx.CreateTimer(ctx.CurrentUTCTime().Add(time.Hour))
		if ctx.WhenAny(work, deadline) == deadline {
			return "deadline", nil
		}
		return "work", nil
	}
	tests := []struct {
		name   string
		events []*history.Event
		want   string
	}{
		{"timer first", []*history.Event{fired(1)}, `"deadline"`},
		{"activity first", []*history.Event{completed(0, "")}, `"work"`},
		{"both ready, timer earlier in history", []*history.Event{fired(1), completed(0, "")}, `"deadline"`},
		{"both ready, activity earlier in history", []*history.Event{completed(0, ""), fired(1)}, `"work"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newSim(t, map[string]Orchestrator{"W": orch})
			c := s.start("W", "")
			expect(t, "scheduled", newEvents(c), `ExecutionStarted(W ) TaskScheduled#0(Work ) TimerCreated#1(+1h0m0s)`)
			c = s.step(tt.events...)
			if c.State.Output != tt.want {
				t.Errorf("output %s, want %s", c.State.Output, tt.want)
			}
		})
	}
}

func approval(ctx *OrchestrationContext) (any, error) {
	var data string
	err := ctx.WaitForExternalEvent("Approval", WithTimeout(time.Hour)).Await(&data)
	if errors.Is(err, ErrTimeout) {
		// Keep waiting, without a timeout, to show that a later event is kept.
		var late string
		if err := ctx.WaitForExternalEvent("Approval").Await(&late); err != nil {
			return nil, err
		}
		return "timed out, then " + late, nil
	}
	if err != nil {
		return nil, err
	}
	// After the event won, the canceled timer's firing must not matter.
	if err := ctx.CallActivity("Notify", data).Await(nil); err != nil {
		return nil, err
	}
	return "approved by " + data, nil
}

func TestExecutorEventWithTimeout(t *testing.T) {
	t.Parallel()
	t.Run("event wins", func(t *testing.T) {
		t.Parallel()
		s := newSim(t, map[string]Orchestrator{"A": approval})
		c := s.start("A", "")
		expect(t, "start", newEvents(c), `ExecutionStarted(A ) TimerCreated#0(+1h0m0s)`)
		c = s.step(raised("approval", `"ann"`))
		expect(t, "event", newEvents(c), `EventRaised(approval "ann") TaskScheduled#1(Notify "ann")`)
		c = s.at(time.Hour).step(fired(0))
		expect(t, "late timer ignored", newEvents(c), `TimerFired(#0)`)
		if c.State.RuntimeStatus != history.StatusRunning {
			t.Errorf("status %s", c.State.RuntimeStatus)
		}
		c = s.step(completed(1, ""))
		expect(t, "output", c.State.Output, `"approved by ann"`)
	})
	t.Run("timer wins", func(t *testing.T) {
		t.Parallel()
		s := newSim(t, map[string]Orchestrator{"A": approval})
		s.start("A", "")
		c := s.at(time.Hour).step(fired(0))
		expect(t, "timeout", newEvents(c), `TimerFired(#0)`)
		c = s.step(raised("Approval", `"bob"`))
		expect(t, "output", c.State.Output, `"timed out, then bob"`)
	})
}

func TestExecutorBufferedEvents(t *testing.T) {
	t.Parallel()
	orch := func(ctx *OrchestrationContext) (any, error) {
		if err := ctx.CallActivity("First", nil).Await(nil); err != nil {
			return nil, err
		}
		var a, b string
		if err := ctx.WaitForExternalEvent("e").Await(&a); err != nil {
			return nil, err
		}
		if err := ctx.WaitForExternalEvent("e").Await(&b); err != nil {
			return nil, err
		}
		return a + b, nil
	}
	s := newSim(t, map[string]Orchestrator{"B": orch})
	s.start("B", "")
	s.step(raised("e", `"1"`))
	s.step(raised("e", `"2"`))
	c := s.step(completed(0, ""))
	expect(t, "output", c.State.Output, `"12"`)
}

func counter(ctx *OrchestrationContext) (any, error) {
	var n int
	if err := ctx.Input(&n); err != nil {
		return nil, err
	}
	if n < 2 {
		if err := ctx.CallActivity("Tick", n).Await(nil); err != nil {
			return nil, err
		}
		return nil, ctx.ContinueAsNew(n + 1)
	}
	var ev string
	if err := ctx.WaitForExternalEvent("stop").Await(&ev); err != nil {
		return nil, err
	}
	return ev, nil
}

func TestExecutorContinueAsNew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		keep   bool
		status history.Status
	}{
		{"events dropped", false, history.StatusRunning},
		{"events kept", true, history.StatusCompleted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			orch := func(ctx *OrchestrationContext) (any, error) {
				var n int
				if err := ctx.Input(&n); err != nil {
					return nil, err
				}
				if n == 0 {
					if err := ctx.CallActivity("Tick", nil).Await(nil); err != nil {
						return nil, err
					}
					var opts []ContinueAsNewOption
					if tt.keep {
						opts = append(opts, KeepUnprocessedEvents())
					}
					return nil, ctx.ContinueAsNew(1, opts...)
				}
				var ev string
				return ev, ctx.WaitForExternalEvent("stop").Await(&ev)
			}
			s := newSim(t, map[string]Orchestrator{"C": orch})
			s.start("C", "0")
			s.step(raised("stop", `"early"`))
			c := s.step(completed(0, ""))
			if !c.ResetHistory || c.ExecutionID == "e1" || c.State.ExecutionID != c.ExecutionID {
				t.Fatalf("reset %v exec %s", c.ResetHistory, c.ExecutionID)
			}
			want := `ExecutionStarted(C 1)`
			if tt.keep {
				want += ` EventRaised(stop "early") ExecutionCompleted(Completed "early")`
			}
			expect(t, "new execution", newEvents(c), want)
			if c.State.RuntimeStatus != tt.status || c.State.Input != "1" || c.State.Generation != 1 {
				t.Errorf("state %s input %s generation %d", c.State.RuntimeStatus, c.State.Input, c.State.Generation)
			}
		})
	}
}

func TestExecutorContinueAsNewLoop(t *testing.T) {
	t.Parallel()
	s := newSim(t, map[string]Orchestrator{"Counter": counter})
	s.start("Counter", "0")
	c := s.step(completed(0, ""))
	expect(t, "generation 1", newEvents(c), `ExecutionStarted(Counter 1) TaskScheduled#0(Tick 1)`)
	c = s.step(completed(0, ""))
	expect(t, "generation 2", newEvents(c), `ExecutionStarted(Counter 2)`)
	c = s.step(raised("stop", `"done"`))
	expect(t, "output", c.State.Output, `"done"`)
	if c.State.Generation != 2 {
		t.Errorf("generation %d", c.State.Generation)
	}
}

// chargeThenNotify is the billing pattern: per item, a two-step branch.
func chargeThenNotify(ctx *OrchestrationContext) (any, error) {
	var items []string
	if err := ctx.Input(&items); err != nil {
		return nil, err
	}
	var ts []Task
	for _, it := range items {
		ts = append(ts, ctx.Go(func(ctx *OrchestrationContext) (any, error) {
			var receipt string
			if err := ctx.CallActivity("Charge", it).Await(&receipt); err != nil {
				return nil, err
			}
			return receipt, ctx.CallActivity("Notify", receipt).Await(nil)
		}))
	}
	if err := ctx.WhenAll(ts...); err != nil {
		return nil, err
	}
	var out []string
	for _, t := range ts {
		r, _ := Await[string](t)
		out = append(out, r)
	}
	return out, nil
}

func TestExecutorCoroutines(t *testing.T) {
	t.Parallel()
	s := newSim(t, map[string]Orchestrator{"Bill": chargeThenNotify})
	c := s.start("Bill", `["a","b"]`)
	expect(t, "charges in parallel", newEvents(c), `ExecutionStarted(Bill ["a","b"]) TaskScheduled#0(Charge "a") TaskScheduled#1(Charge "b")`)
	c = s.step(completed(1, `"rb"`))
	expect(t, "b notifies first", newEvents(c), `TaskCompleted(#1 "rb") TaskScheduled#2(Notify "rb")`)
	c = s.step(completed(0, `"ra"`), completed(2, ""))
	expect(t, "a notifies", newEvents(c), `TaskCompleted(#0 "ra") TaskCompleted(#2 ) TaskScheduled#3(Notify "ra")`)
	c = s.step(completed(3, ""))
	expect(t, "output", c.State.Output, `["ra","rb"]`)
}

func TestExecutorWhenAllErrors(t *testing.T) {
	t.Parallel()
	orch := func(ctx *OrchestrationContext) (any, error) {
		a, b, c := ctx.CallActivity("A", nil), ctx.CallActivity("B", nil), ctx.CallActivity("C", nil)
		err := ctx.WhenAll(a, b, c)
		var tf *TaskFailedError
		if !errors.As(err, &tf) {
			return nil, errors.New("no TaskFailedError")
		}
		return tf.TaskName + " first; " + err.Error(), nil
	}
	s := newSim(t, map[string]Orchestrator{"W": orch})
	s.start("W", "")
	c := s.step(failed(2, "c broke"), completed(1, ""), failed(0, "a broke"))
	if !strings.HasPrefix(c.State.Output, `"C first; The activity function 'C' failed`) || !strings.Contains(c.State.Output, "a broke") {
		t.Errorf("output %s", c.State.Output)
	}
}

func TestExecutorSubOrchestration(t *testing.T) {
	t.Parallel()
	orchs := map[string]Orchestrator{
		"Parent": func(ctx *OrchestrationContext) (any, error) {
			r, err := Await[string](ctx.CallSubOrchestrator("Child", "x"))
			if err != nil {
				var tf *TaskFailedError
				errors.As(err, &tf)
				return "child failed: " + tf.Details.ErrorMessage, nil
			}
			named := ctx.CallSubOrchestrator("Child", "y", WithInstanceID("kid"))
			return r, named.Await(nil)
		},
		"Child": func(ctx *OrchestrationContext) (any, error) {
			var in string
			ctx.Input(&in)
			if in == "bad" {
				return nil, errors.New("child says no")
			}
			return in + "!", nil
		},
	}
	s := newSim(t, orchs)
	c := s.start("Parent", "")
	childID := uuidV5(urlNamespace, "i1_2026-01-02T03:04:05.0000000Z_0")
	expect(t, "created", newEvents(c), `ExecutionStarted(Parent ) SubOrchestrationInstanceCreated#0(Child `+childID+` "x")`)
	m := c.Outbound[0]
	if m.TargetInstanceID != childID || m.Event.EventType != history.ExecutionStarted || m.Event.ParentInstance == nil ||
		m.Event.ParentInstance.TaskScheduleID != 0 || m.Event.ParentInstance.OrchestrationInstance.InstanceID != "i1" ||
		m.Event.OrchestrationInstance.ExecutionID != m.TargetExecutionID || m.TargetExecutionID == "" {
		t.Fatalf("child start message %+v", m)
	}

	// Run the child from that message; its completion is a message to the parent.
	child := newSim(t, orchs)
	child.id, child.exec = childID, m.TargetExecutionID
	cc := child.step(m.Event)
	expect(t, "child reply", outbound(cc), `i1<-SubOrchestrationInstanceCompleted(#0 "x!")`)
	if cc.Outbound[0].TargetExecutionID != "e1" {
		t.Errorf("reply goes to execution %q", cc.Outbound[0].TargetExecutionID)
	}

	c = s.step(cc.Outbound[0].Event)
	expect(t, "second child", newEvents(c), `SubOrchestrationInstanceCompleted(#0 "x!") SubOrchestrationInstanceCreated#1(Child kid "y")`)
	c = s.step(&history.Event{EventType: history.SubOrchestrationInstanceCompleted, EventID: -1, TaskScheduledID: 1, Result: `"y!"`})
	expect(t, "output", c.State.Output, `"x!"`)

	// A failing child surfaces as a TaskFailedError in the parent.
	f := newSim(t, orchs)
	f.id = "kid2"
	fc := f.step(&history.Event{EventType: history.ExecutionStarted, EventID: -1, Timestamp: t0, Name: "Child", Input: `"bad"`,
		OrchestrationInstance: &history.Instance{InstanceID: "kid2", ExecutionID: "k"},
		ParentInstance:        &history.ParentInstance{Name: "Parent", TaskScheduleID: 0, OrchestrationInstance: history.Instance{InstanceID: "p2", ExecutionID: "pe"}}})
	expect(t, "failure reply", outbound(fc), `p2<-SubOrchestrationInstanceFailed(#0 child says no)`)
	p := newSim(t, orchs)
	p.id = "p2"
	p.start("Parent", "")
	pc := p.step(fc.Outbound[0].Event)
	expect(t, "parent output", pc.State.Output, `"child failed: child says no"`)
}

func TestExecutorTerminateSuspendResume(t *testing.T) {
	t.Parallel()
	orch := func(ctx *OrchestrationContext) (any, error) {
		var a string
		if err := ctx.WaitForExternalEvent("a").Await(&a); err != nil {
			return nil, err
		}
		return a, nil
	}
	t.Run("terminate", func(t *testing.T) {
		t.Parallel()
		s := newSim(t, map[string]Orchestrator{"O": orch})
		s.start("O", "")
		c := s.step(terminated(`"enough"`), raised("a", `"late"`))
		expect(t, "episode", newEvents(c), `ExecutionTerminated ExecutionCompleted(Terminated "enough")`)
		if c.State.RuntimeStatus != history.StatusTerminated || c.State.Output != `"enough"` {
			t.Errorf("state %s %s", c.State.RuntimeStatus, c.State.Output)
		}
		c = s.step(raised("a", `"later"`))
		if len(c.NewHistory) != 0 || c.State.RuntimeStatus != history.StatusTerminated {
			t.Errorf("events for a finished instance must be ignored: %s", summarize(c))
		}
	})
	t.Run("suspend and resume", func(t *testing.T) {
		t.Parallel()
		s := newSim(t, map[string]Orchestrator{"O": orch})
		s.start("O", "")
		c := s.step(suspended(), raised("a", `"x"`))
		expect(t, "suspended", newEvents(c), `ExecutionSuspended`)
		expect(t, "carried", describeAll(c.Carryover), `EventRaised(a "x")`)
		if c.State.RuntimeStatus != history.StatusSuspended {
			t.Errorf("status %s", c.State.RuntimeStatus)
		}
		c = s.step(append(c.Carryover, resumed())...)
		expect(t, "resumed", newEvents(c), `ExecutionResumed EventRaised(a "x") ExecutionCompleted(Completed "x")`)
	})
	t.Run("terminate while suspended", func(t *testing.T) {
		t.Parallel()
		s := newSim(t, map[string]Orchestrator{"O": orch})
		s.start("O", "")
		s.step(suspended())
		c := s.step(raised("a", `"x"`), terminated(`"stop"`))
		expect(t, "terminated", newEvents(c), `ExecutionTerminated ExecutionCompleted(Terminated "stop")`)
		if len(c.Carryover) != 0 {
			t.Errorf("carryover of a finished instance: %s", describeAll(c.Carryover))
		}
	})
}

func TestExecutorDuplicates(t *testing.T) {
	t.Parallel()
	orch := func(ctx *OrchestrationContext) (any, error) {
		if err := ctx.CallActivity("A", nil).Await(nil); err != nil {
			return nil, err
		}
		if err := ctx.Sleep(time.Minute); err != nil {
			return nil, err
		}
		return "done", ctx.CallActivity("B", nil).Await(nil)
	}
	s := newSim(t, map[string]Orchestrator{"D": orch})
	c := s.start("D", "")
	es := c.NewHistory[1]
	c = s.step(es, completed(0, ""), completed(0, ""))
	expect(t, "second start and completion dropped", newEvents(c), `TaskCompleted(#0 ) TimerCreated#1(+1m0s)`)
	c = s.at(time.Minute).step(fired(1), fired(1))
	expect(t, "second firing dropped", newEvents(c), `TimerFired(#1) TaskScheduled#2(B )`)
	c = s.step(fired(1), completed(0, ""))
	if len(c.NewHistory) != 0 {
		t.Errorf("stale duplicates changed history: %s", describeAll(c.NewHistory))
	}
}

func TestExecutorDeterministicHelpers(t *testing.T) {
	t.Parallel()
	var logs []string
	orch := func(ctx *OrchestrationContext) (any, error) {
		g1, g2 := ctx.NewGUID(), ctx.NewGUID()
		logs = append(logs, ctx.CurrentUTCTime().Format(time.RFC3339))
		if !ctx.IsReplaying() {
			logs = append(logs, "live")
		}
		if err := ctx.SetCustomStatus(map[string]int{"step": 1}); err != nil {
			return nil, err
		}
		if err := ctx.Sleep(time.Minute); err != nil {
			return nil, err
		}
		return []string{g1, g2, ctx.CurrentUTCTime().Format(time.RFC3339)}, nil
	}
	s := newSim(t, map[string]Orchestrator{"H": orch})
	c := s.start("H", "")
	if c.State.CustomStatus != `{"step":1}` {
		t.Errorf("custom status %s", c.State.CustomStatus)
	}
	c = s.at(time.Minute).step(fired(0))
	want := `["43a041d6-4a1d-5996-ac4b-0c081364ae53","` + uuidV5(urlNamespace, "i1_2026-01-02T03:04:05.0000000Z_1") + `","2026-01-02T03:05:05Z"]`
	expect(t, "output", c.State.Output, want)
	// The sim runs each step cold and cached: the cold replay of episode 2
	// logs the first episode's time with IsReplaying true.
	if strings.Count(strings.Join(logs, " "), "live") < 2 {
		t.Errorf("logs %v", logs)
	}
}

func TestExecutorDeadlockWatchdog(t *testing.T) {
	t.Parallel()
	block := make(chan struct{})
	t.Cleanup(func() { close(block) })
	s := newSim(t, map[string]Orchestrator{"Stuck": func(ctx *OrchestrationContext) (any, error) {
		<-block
		return nil, nil
	}})
	s.g.watchdog = 20 * time.Millisecond
	ex := s.g.newExecutor("i1")
	ep := ex.step(t0, []*history.Event{{EventType: history.ExecutionStarted, EventID: -1, Timestamp: t0, Name: "Stuck",
		OrchestrationInstance: &history.Instance{InstanceID: "i1", ExecutionID: "e1"}}})
	ex.close()
	last := ep.history[len(ep.history)-2]
	if last.EventType != history.ExecutionCompleted || last.OrchestrationStatus != history.StatusFailed ||
		!strings.Contains(last.FailureDetails.ErrorMessage, "without yielding") {
		t.Fatalf("episode %s", describeAll(ep.history))
	}
	if ex.cacheable() {
		t.Error("a stuck execution must not be cached")
	}
}

func TestExecutorUnknownOrchestrator(t *testing.T) {
	t.Parallel()
	s := newSim(t, nil)
	c := s.start("Nope", "")
	if c.State.RuntimeStatus != history.StatusFailed || !strings.Contains(c.State.Output, "'Nope' is not registered") {
		t.Errorf("state %s %s", c.State.RuntimeStatus, c.State.Output)
	}
}

func TestExecutorTypedInputError(t *testing.T) {
	t.Parallel()
	s := newSim(t, map[string]Orchestrator{"T": Orchestration(func(ctx *OrchestrationContext, n int) (int, error) { return n * 2, nil })})
	c := s.start("T", `"not a number"`)
	if c.State.RuntimeStatus != history.StatusFailed || !strings.Contains(c.State.Output, `decode input of orchestrator \"T\"`) {
		t.Errorf("state %s %s", c.State.RuntimeStatus, c.State.Output)
	}
}

// TestExecutorCloseKillsCoroutines is not parallel: it counts goroutines.
func TestExecutorCloseKillsCoroutines(t *testing.T) {
	g := &engine{orchestrators: func(string) (Orchestrator, bool) { return chargeThenNotify, true }, logger: slogDiscard(), watchdog: time.Second}
	deferred := 0
	for i := range 20 {
		ex := g.newExecutor("leak")
		ex.step(t0, []*history.Event{{EventType: history.ExecutionStarted, EventID: -1, Timestamp: t0, Name: "Bill", Input: `["a","b","c"]`,
			OrchestrationInstance: &history.Instance{InstanceID: "leak", ExecutionID: "e"}}})
		if i == 0 && coroutineGoroutines() < 4 {
			t.Errorf("expected parked coroutines, found %d", coroutineGoroutines())
		}
		ex.close()
	}
	g.orchestrators = func(string) (Orchestrator, bool) {
		return func(ctx *OrchestrationContext) (any, error) {
			defer func() { deferred++ }()
			return nil, ctx.CallActivity("A", nil).Await(nil)
		}, true
	}
	ex := g.newExecutor("leak")
	ex.step(t0, []*history.Event{{EventType: history.ExecutionStarted, EventID: -1, Timestamp: t0, Name: "D",
		OrchestrationInstance: &history.Instance{InstanceID: "leak", ExecutionID: "e"}}})
	ex.close()
	if deferred != 1 {
		t.Errorf("deferred calls ran %d times on unload, want 1", deferred)
	}
	waitNoCoroutines(t)
}

func TestValidateInstanceID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id string
		ok bool
	}{
		{"abc", true}, {"order-42_x.y", true}, {strings.Repeat("a", 256), true},
		{"", false}, {strings.Repeat("a", 257), false}, {"@counter@x", false},
		{"a/b", false}, {`a\b`, false}, {"a#b", false}, {"a?b", false}, {"a\nb", false},
	}
	for _, tt := range tests {
		err := ValidateInstanceID(tt.id)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrInvalidInstanceID)) {
			t.Errorf("ValidateInstanceID(%q) = %v", tt.id, err)
		}
	}
}

var _ = context.Background

func TestExecutorFinishedInstanceKeepsCompletedTime(t *testing.T) {
	t.Parallel()
	s := newSim(t, map[string]Orchestrator{"O": func(ctx *OrchestrationContext) (any, error) { return "x", nil }})
	c := s.start("O", "")
	done := c.State.CompletedTime
	c = s.at(time.Hour).step(raised("late", ""))
	if len(c.NewHistory) != 0 || !c.State.CompletedTime.Equal(done) || c.State.Output != `"x"` {
		t.Errorf("late event changed the finished instance: %s completed %s", summarize(c), c.State.CompletedTime)
	}
}
