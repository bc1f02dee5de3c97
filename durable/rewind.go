package durable

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
)

// rewindData marks the GenericEvent that asks a failed instance to rewind.
const rewindData = "stratus.rewind"

// Rewind asks a Failed instance to run again from its last good state: the
// failures it did not handle are taken out of its history and those
// activity calls are scheduled again (failed sub-orchestrations are started
// again as new executions of the same child id). An instance that failed on
// its own error fails again unless its code changed. Returns an error
// matching [ErrNotFailed] for instances in any other status.
func (c *Client) Rewind(ctx context.Context, id, reason string) error {
	st, err := c.b.GetInstance(ctx, id, true)
	if err != nil {
		return fmt.Errorf("rewind %s: %w", id, err)
	}
	if st.RuntimeStatus != history.StatusFailed {
		return fmt.Errorf("rewind %s: instance is %s: %w", id, st.RuntimeStatus, ErrNotFailed)
	}
	// Mark the row running first, so that the backend delivers the request
	// instead of dropping it as an event for a finished instance.
	st.RuntimeStatus = history.StatusRunning
	st.LastUpdatedTime = c.now().UTC()
	if err := c.b.SetInstanceState(ctx, st); err != nil {
		return fmt.Errorf("rewind %s: %w", id, err)
	}
	ev := &history.Event{EventType: history.GenericEvent, EventID: -1, Timestamp: c.now().UTC(), Data: rewindData, Reason: reason}
	if err := c.b.SendEvent(ctx, backend.Message{TargetInstanceID: id, Event: ev}); err != nil {
		return fmt.Errorf("rewind %s: %w", id, err)
	}
	return nil
}

func isRewind(ev *history.Event) bool {
	return ev.EventType == history.GenericEvent && ev.Data == rewindData
}

// rewind handles a work item that carries a rewind request for a failed
// execution. It finds the largest set of failure events that can be removed
// from history with the orchestrator still replaying consistently (handled
// failures, such as retried attempts, must stay), and commits the rewritten
// history with the removed calls scheduled again.
func (g *engine) rewind(wi *backend.OrchestrationWorkItem, now time.Time) (*backend.OrchestrationCompletion, *executor, *episode, bool) {
	if !slices.ContainsFunc(wi.NewEvents, isRewind) {
		return nil, nil, nil, false
	}
	end := slices.IndexFunc(wi.History, func(e *history.Event) bool {
		return e.EventType == history.ExecutionCompleted && e.OrchestrationStatus == history.StatusFailed
	})
	if end < 0 {
		return nil, nil, nil, false
	}
	base := slices.Delete(slices.Clone(wi.History), end, end+1)
	removed := map[int]bool{}
	for i, e := range base {
		if e.EventType == history.TaskFailed || e.EventType == history.SubOrchestrationInstanceFailed {
			removed[i] = true
		}
	}
	var (
		ex   *executor
		cand []*history.Event
	)
	for {
		cand = cand[:0]
		for i, e := range base {
			if !removed[i] {
				cand = append(cand, e)
			}
		}
		ex = g.newExecutor(wi.InstanceID)
		ex.replay(cand)
		if !ex.finished || len(removed) == 0 {
			break
		}
		ex.close()
		delete(removed, slices.Min(slices.Collect(maps.Keys(removed))))
	}
	scheduled := map[int]*history.Event{}
	for _, e := range base {
		switch e.EventType {
		case history.TaskScheduled, history.SubOrchestrationInstanceCreated:
			scheduled[e.EventID] = e
		}
	}
	var resend []backend.Message
	for _, i := range slices.Sorted(maps.Keys(removed)) {
		s := scheduled[base[i].TaskScheduledID]
		if s == nil {
			continue
		}
		if s.EventType == history.TaskScheduled {
			resend = append(resend, backend.Message{TargetInstanceID: wi.InstanceID, TargetExecutionID: ex.executionID, Event: s.Clone()})
			continue
		}
		childExec := newGUIDN()
		resend = append(resend, backend.Message{TargetInstanceID: s.InstanceID, TargetExecutionID: childExec, Event: &history.Event{
			EventType: history.ExecutionStarted, EventID: -1, Timestamp: now.UTC(),
			OrchestrationInstance: &history.Instance{InstanceID: s.InstanceID, ExecutionID: childExec},
			ParentInstance: &history.ParentInstance{Name: ex.name, TaskScheduleID: s.EventID,
				OrchestrationInstance: history.Instance{InstanceID: wi.InstanceID, ExecutionID: ex.executionID}},
			Name: s.Name, Version: s.Version, Input: s.Input, Tags: maps.Clone(s.Tags),
		}})
	}
	ep := ex.step(now, wi.NewEvents)
	c := &backend.OrchestrationCompletion{
		ExecutionID:  ex.executionID,
		ResetHistory: true,
		NewHistory:   append(slices.Clone(cand), ep.history...),
		Outbound:     append(resend, ep.outbound...),
		Carryover:    ep.carryover,
		State:        ex.state(now),
	}
	return c, ex, ep, true
}
