package azurestorage

import (
	"context"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
)

// TestProtocol walks the work-item protocol by hand, as the runtime would:
// start, activity call, activity result, a duplicate result, an early
// completion, an external event before anyone waits for it, completion,
// and events for finished and unknown instances.
func TestProtocol(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	b := env.start(t, env.options())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	started := startedEvent("proto-1", "Proto", `"in"`)
	exec := started.OrchestrationInstance.ExecutionID
	if err := b.CreateInstance(ctx, started); err != nil {
		t.Fatal(err)
	}
	if st, err := b.GetInstance(ctx, "proto-1", true); err != nil || st.RuntimeStatus != history.StatusPending || st.Input != `"in"` {
		t.Fatalf("after create: %+v %v", st, err)
	}
	wi, err := b.NextOrchestrationWorkItem(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if wi.InstanceID != "proto-1" || len(wi.History) != 0 || len(wi.NewEvents) != 1 || wi.NewEvents[0].EventType != history.ExecutionStarted {
		t.Fatalf("first work item: %+v", wi)
	}
	now := time.Now().UTC()
	ts0 := &history.Event{EventType: history.TaskScheduled, EventID: 0, Timestamp: now, Name: "SayHello", Input: `"Tokyo"`}
	ts1 := &history.Event{EventType: history.TaskScheduled, EventID: 1, Timestamp: now, Name: "SayHello", Input: `"Seattle"`}
	err = b.CompleteOrchestrationWorkItem(ctx, wi, &backend.OrchestrationCompletion{
		ExecutionID: exec,
		NewHistory: []*history.Event{{EventType: history.OrchestratorStarted, EventID: -1, Timestamp: now}, wi.NewEvents[0], ts0,
			{EventType: history.OrchestratorCompleted, EventID: -1, Timestamp: now}},
		Outbound: []backend.Message{{TargetInstanceID: "proto-1", TargetExecutionID: exec, Event: ts0}},
		State:    backend.InstanceState{Name: "Proto", RuntimeStatus: history.StatusRunning},
	})
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := b.GetInstance(ctx, "proto-1", false); st.RuntimeStatus != history.StatusRunning || st.ExecutionID != exec {
		t.Fatalf("after first checkpoint: %+v", st)
	}
	awi, err := b.NextActivityWorkItem(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if awi.InstanceID != "proto-1" || awi.ExecutionID != exec || awi.Event.Name != "SayHello" || awi.Event.EventID != 0 || awi.DequeueCount != 1 {
		t.Fatalf("activity work item: %+v %+v", awi, awi.Event)
	}
	result := sayHello(awi)
	if err := b.CompleteActivityWorkItem(ctx, awi, result); err != nil {
		t.Fatal(err)
	}
	wi, err = b.NextOrchestrationWorkItem(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(wi.History) != 4 || len(wi.NewEvents) != 1 || wi.NewEvents[0].EventType != history.TaskCompleted || wi.NewEvents[0].Result != `"Hello Tokyo!"` {
		t.Fatalf("second work item: history %v new %v", wi.History, wi.NewEvents)
	}
	now = time.Now().UTC()
	err = b.CompleteOrchestrationWorkItem(ctx, wi, &backend.OrchestrationCompletion{
		ExecutionID: exec,
		NewHistory: []*history.Event{{EventType: history.OrchestratorStarted, EventID: -1, Timestamp: now}, wi.NewEvents[0], ts1,
			{EventType: history.OrchestratorCompleted, EventID: -1, Timestamp: now}},
		Outbound: []backend.Message{{TargetInstanceID: "proto-1", TargetExecutionID: exec, Event: ts1}},
		State:    backend.InstanceState{Name: "Proto", RuntimeStatus: history.StatusRunning},
	})
	if err != nil {
		t.Fatal(err)
	}

	// A duplicate of the applied result is dropped; a result for a task
	// never scheduled is deferred; an external event is delivered although
	// nothing waits for it yet.
	if err := b.SendEvent(ctx, backend.Message{TargetInstanceID: "proto-1", TargetExecutionID: exec, Event: result}); err != nil {
		t.Fatal(err)
	}
	early := &history.Event{EventType: history.TaskCompleted, EventID: -1, Timestamp: now, TaskScheduledID: 7, Result: `"x"`}
	if err := b.SendEvent(ctx, backend.Message{TargetInstanceID: "proto-1", TargetExecutionID: exec, Event: early}); err != nil {
		t.Fatal(err)
	}
	raised := &history.Event{EventType: history.EventRaised, EventID: -1, Name: "Approval", Input: `{"ok":true}`}
	if err := b.SendEvent(ctx, backend.Message{TargetInstanceID: "proto-1", Event: raised}); err != nil {
		t.Fatal(err)
	}
	wi, err = b.NextOrchestrationWorkItem(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(wi.NewEvents) != 1 || wi.NewEvents[0].EventType != history.EventRaised || wi.NewEvents[0].Name != "Approval" {
		t.Fatalf("event work item: %v", wi.NewEvents)
	}
	if s := b.Stats(); s.Dropped < 1 || s.Deferred < 1 {
		t.Fatalf("duplicate not dropped or early completion not deferred: %+v", s)
	}
	now = time.Now().UTC()
	done := &history.Event{EventType: history.ExecutionCompleted, EventID: -1, Timestamp: now, OrchestrationStatus: history.StatusCompleted, Result: `"done"`}
	err = b.CompleteOrchestrationWorkItem(ctx, wi, &backend.OrchestrationCompletion{
		ExecutionID: exec,
		NewHistory: []*history.Event{{EventType: history.OrchestratorStarted, EventID: -1, Timestamp: now}, wi.NewEvents[0], done,
			{EventType: history.OrchestratorCompleted, EventID: -1, Timestamp: now}},
		State: backend.InstanceState{Name: "Proto", RuntimeStatus: history.StatusCompleted, Output: `"done"`},
	})
	if err != nil {
		t.Fatal(err)
	}
	st, err := b.GetInstance(ctx, "proto-1", true)
	if err != nil || st.RuntimeStatus != history.StatusCompleted || st.Output != `"done"` || st.Input != `"in"` || st.CompletedTime.IsZero() || st.Name != "Proto" {
		t.Fatalf("final status: %+v %v", st, err)
	}
	h, err := b.GetHistory(ctx, "proto-1")
	if err != nil || len(h) != 12 {
		t.Fatalf("history: %d events %v", len(h), err)
	}

	// Events for a finished instance, and for one that never existed, end
	// in the poison queue.
	before := b.Stats().Poisoned
	if err := b.SendEvent(ctx, backend.Message{TargetInstanceID: "proto-1", Event: raised}); err != nil {
		t.Fatal(err)
	}
	if err := b.SendEvent(ctx, backend.Message{TargetInstanceID: "nobody-here", Event: raised}); err != nil {
		t.Fatal(err)
	}
	nctx, ncancel := context.WithCancel(ctx)
	defer ncancel()
	go func() {
		// The dispatcher sorts messages while it is asked for work; none of
		// these may become a work item.
		for {
			wi, err := b.NextOrchestrationWorkItem(nctx)
			if err != nil {
				return
			}
			t.Errorf("unexpected work item for %s: %v", wi.InstanceID, wi.NewEvents)
		}
	}()
	eventually(t, 30*time.Second, "events poisoned", func() bool { return b.Stats().Poisoned >= before+3 })
	props, err := b.poison.PeekMessages(ctx, nil)
	if err != nil || len(props.Messages) == 0 {
		t.Fatalf("poison queue: %v", err)
	}
}
