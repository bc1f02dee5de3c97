package memory_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/backend/memory"
	"github.com/stratus-dev/stratus/durable/history"
)

func started(id, exec string) *history.Event {
	return &history.Event{EventType: history.ExecutionStarted, EventID: -1, Timestamp: time.Now().UTC(), Name: "O",
		OrchestrationInstance: &history.Instance{InstanceID: id, ExecutionID: exec}}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// commit completes a work item with a Running state and the given history.
func commit(t *testing.T, b *memory.Backend, wi *backend.OrchestrationWorkItem, c *backend.OrchestrationCompletion) {
	t.Helper()
	if c.State.RuntimeStatus == "" {
		c.State = backend.InstanceState{InstanceID: wi.InstanceID, ExecutionID: c.ExecutionID, RuntimeStatus: history.StatusRunning}
	}
	if err := b.CompleteOrchestrationWorkItem(context.Background(), wi, c); err != nil {
		t.Fatalf("complete: %v", err)
	}
}

func TestCreateFetchCompleteAndDuplicates(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := memory.New()
	if err := b.CreateInstance(ctx, started("a", "e1")); err != nil {
		t.Fatal(err)
	}
	if err := b.CreateInstance(ctx, started("a", "e2")); !errors.Is(err, backend.ErrInstanceExists) {
		t.Fatalf("second create: %v", err)
	}
	st, _ := b.GetInstance(ctx, "a", false)
	if st.RuntimeStatus != history.StatusPending {
		t.Errorf("status %s", st.RuntimeStatus)
	}
	wi, err := b.NextOrchestrationWorkItem(ctx)
	if err != nil || wi.ExecutionID != "" || len(wi.NewEvents) != 1 {
		t.Fatalf("work item %v %+v", err, wi)
	}
	ts := &history.Event{EventType: history.TaskScheduled, EventID: 0, Name: "Act"}
	commit(t, b, wi, &backend.OrchestrationCompletion{ExecutionID: "e1", NewHistory: []*history.Event{wi.NewEvents[0], ts},
		Outbound: []backend.Message{{TargetInstanceID: "a", TargetExecutionID: "e1", Event: ts}}})

	aw, err := b.NextActivityWorkItem(ctx)
	if err != nil || aw.Event.Name != "Act" || aw.DequeueCount != 1 {
		t.Fatalf("activity %v %+v", err, aw)
	}
	if err := b.AbandonActivityWorkItem(ctx, aw, 0); err != nil {
		t.Fatal(err)
	}
	aw, _ = b.NextActivityWorkItem(ctx)
	if aw.DequeueCount != 2 {
		t.Errorf("dequeue count %d after redelivery", aw.DequeueCount)
	}
	done := &history.Event{EventType: history.TaskCompleted, EventID: -1, TaskScheduledID: 0}
	if err := b.CompleteActivityWorkItem(ctx, aw, done); err != nil {
		t.Fatal(err)
	}
	if err := b.CompleteActivityWorkItem(ctx, aw, done); !errors.Is(err, backend.ErrWorkItemLost) {
		t.Errorf("second completion: %v", err)
	}
	wi, _ = b.NextOrchestrationWorkItem(ctx)
	if wi.ExecutionID != "e1" || len(wi.History) != 2 || len(wi.NewEvents) != 1 {
		t.Fatalf("second work item %+v", wi)
	}
	commit(t, b, wi, &backend.OrchestrationCompletion{ExecutionID: "e1", NewHistory: wi.NewEvents})

	// A duplicate of a result already in history, and a message for another
	// execution, are dropped.
	b.SendEvent(ctx, backend.Message{TargetInstanceID: "a", TargetExecutionID: "e1", Event: done})
	b.SendEvent(ctx, backend.Message{TargetInstanceID: "a", TargetExecutionID: "old", Event: &history.Event{EventType: history.TimerFired, TimerID: 3}})
	b.SendEvent(ctx, backend.Message{TargetInstanceID: "nobody", Event: &history.Event{EventType: history.EventRaised, Name: "x"}})
	b.SendEvent(ctx, backend.Message{TargetInstanceID: "a", Event: &history.Event{EventType: history.EventRaised, Name: "x"}})
	wi, _ = b.NextOrchestrationWorkItem(ctx)
	if len(wi.NewEvents) != 1 || wi.NewEvents[0].EventType != history.EventRaised {
		t.Fatalf("new events %v", wi.NewEvents)
	}
	if s := b.Stats(); s.DroppedMessages != 3 {
		t.Errorf("dropped %d, want 3", s.DroppedMessages)
	}
}

func TestCarryoverAbandonAndLostWorkItem(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := memory.New()
	b.CreateInstance(ctx, started("a", "e1"))
	wi, _ := b.NextOrchestrationWorkItem(ctx)
	commit(t, b, wi, &backend.OrchestrationCompletion{ExecutionID: "e1", NewHistory: wi.NewEvents})

	b.SendEvent(ctx, backend.Message{TargetInstanceID: "a", Event: &history.Event{EventType: history.EventRaised, Name: "one"}})
	wi, _ = b.NextOrchestrationWorkItem(ctx)
	commit(t, b, wi, &backend.OrchestrationCompletion{ExecutionID: "e1", Carryover: wi.NewEvents})
	b.SendEvent(ctx, backend.Message{TargetInstanceID: "a", Event: &history.Event{EventType: history.EventRaised, Name: "two"}})
	wi, _ = b.NextOrchestrationWorkItem(ctx)
	if len(wi.NewEvents) != 2 || wi.NewEvents[0].Name != "one" || wi.NewEvents[1].Name != "two" {
		t.Fatalf("carryover not redelivered first: %v", wi.NewEvents)
	}
	if err := b.AbandonOrchestrationWorkItem(ctx, wi, 0); err != nil {
		t.Fatal(err)
	}
	wi, _ = b.NextOrchestrationWorkItem(ctx)
	if len(wi.NewEvents) != 2 {
		t.Fatalf("abandoned events not redelivered: %v", wi.NewEvents)
	}
	if err := b.PurgeInstance(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := b.CompleteOrchestrationWorkItem(ctx, wi, &backend.OrchestrationCompletion{}); !errors.Is(err, backend.ErrWorkItemLost) {
		t.Errorf("completion after purge: %v", err)
	}
}

func TestDelayedMessagesAndStop(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := memory.New()
	at := time.Now().Add(20 * time.Millisecond)
	ev := started("later", "e1")
	ev.ScheduledStartTime = &at
	b.CreateInstance(ctx, ev)
	wi, err := b.NextOrchestrationWorkItem(ctx)
	if err != nil || wi.InstanceID != "later" || time.Now().Before(at) {
		t.Fatalf("scheduled start delivered early or not at all: %v", err)
	}
	go b.Stop(ctx)
	if _, err := b.NextActivityWorkItem(ctx); !errors.Is(err, backend.ErrStopped) {
		t.Errorf("next after stop: %v", err)
	}
}

func TestQueryAndPurgeFilters(t *testing.T) {
	t.Parallel()
	ctx := testContext(t)
	b := memory.New()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i, id := range []string{"order-1", "order-2", "order-3", "other", "@counter@x"} {
		ev := started(id, "e")
		ev.Timestamp = base.Add(time.Duration(i) * time.Hour)
		b.CreateInstance(ctx, ev)
	}
	b.SetInstanceState(ctx, &backend.InstanceState{InstanceID: "order-2", RuntimeStatus: history.StatusCompleted, CreatedTime: base.Add(time.Hour)})

	var got []string
	q := backend.InstanceQuery{InstanceIDPrefix: "order-", PageSize: 2}
	for {
		p, err := b.QueryInstances(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range p.Instances {
			got = append(got, s.InstanceID)
		}
		if p.ContinuationToken == "" {
			break
		}
		q.ContinuationToken = p.ContinuationToken
	}
	if len(got) != 3 || got[0] != "order-1" || got[2] != "order-3" {
		t.Errorf("paged prefix query: %v", got)
	}
	p, _ := b.QueryInstances(ctx, backend.InstanceQuery{CreatedFrom: base.Add(time.Hour), CreatedTo: base.Add(3 * time.Hour)})
	if len(p.Instances) != 3 {
		t.Errorf("time range: %d instances", len(p.Instances))
	}
	p, _ = b.QueryInstances(ctx, backend.InstanceQuery{EntitiesOnly: true})
	if len(p.Instances) != 1 || p.Instances[0].InstanceID != "@counter@x" {
		t.Errorf("entities only: %v", p.Instances)
	}
	p, _ = b.QueryInstances(ctx, backend.InstanceQuery{RuntimeStatus: []history.Status{history.StatusCompleted}})
	if len(p.Instances) != 1 {
		t.Errorf("status filter: %d", len(p.Instances))
	}
	n, _ := b.PurgeInstances(ctx, backend.PurgeFilter{})
	if n != 1 {
		t.Errorf("purged %d; only the one terminal instance may go", n)
	}
	if err := b.PurgeInstance(ctx, "order-2"); !errors.Is(err, backend.ErrInstanceNotFound) {
		t.Errorf("purge twice: %v", err)
	}
}
