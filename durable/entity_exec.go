package durable

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
)

// DefaultMaxEntityOperationBatchSize is the default of
// WorkerOptions.MaxEntityOperationBatchSize.
const DefaultMaxEntityOperationBatchSize = 5000

// entityRun is one work item of one entity: the scheduler state loaded
// from history, the work item's messages applied one by one, and the
// messages and checkpoint that result.
type entityRun struct {
	ctx      context.Context
	g        *engine
	id       EntityID
	fn       EntityFunc
	fnErr    error
	st       *schedulerState
	now      time.Time
	out      []backend.Message
	ops      int
	maxOps   int
	log      *slog.Logger
	stalled  bool // the batch limit was reached with runnable requests left
	failures int
}

// processEntity runs an entity work item. It does no I/O besides the entity
// function itself; the worker commits the completion.
func (g *engine) processEntity(ctx context.Context, wi *backend.OrchestrationWorkItem, now time.Time) (*backend.OrchestrationCompletion, error) {
	now = now.UTC()
	id, err := ParseEntityID(wi.InstanceID)
	if err != nil {
		return nil, err
	}
	r := &entityRun{ctx: ctx, g: g, id: id, now: now, maxOps: g.maxEntityOps, log: g.logger.With("instance_id", wi.InstanceID, "entity", id.Name)}
	if r.maxOps <= 0 {
		r.maxOps = DefaultMaxEntityOperationBatchSize
	}
	r.st = &schedulerState{}
	for _, ev := range wi.History {
		if ev.EventType == history.ExecutionStarted {
			if r.st, err = parseSchedulerState(ev.Input); err != nil {
				return nil, fmt.Errorf("entity %s: decode scheduler state: %w", id, err)
			}
		}
	}
	if g.entities != nil {
		r.fn, _ = g.entities(id.Name)
	}
	if r.fn == nil {
		r.fnErr = fmt.Errorf("entity function '%s' is not registered with this worker", id.Name)
	}
	for _, ev := range wi.NewEvents {
		r.apply(ev)
		r.drain()
	}
	if r.stalled {
		// More work is queued than one batch may run: continue in the
		// next work item.
		r.out = append(r.out, backend.Message{TargetInstanceID: wi.InstanceID,
			Event: &history.Event{EventType: history.EventRaised, EventID: -1, Timestamp: now, Name: entityContinueEvent}})
	}
	return r.completion(wi), nil
}

// apply takes one message into the scheduler state.
func (r *entityRun) apply(ev *history.Event) {
	if ev.EventType != history.EventRaised {
		return
	}
	switch {
	case ev.Name == entityOpEvent || strings.HasPrefix(ev.Name, entityOpEvent+"@"):
		var req entityRequest
		if err := json.Unmarshal([]byte(ev.Input), &req); err != nil || req.ID == "" {
			r.log.Warn("dropped a malformed entity request", "error", err, "input", truncate(ev.Input, 200))
			return
		}
		for _, d := range r.st.receive(&req) {
			if d.isLock() && (r.st.LockedBy == d.Parent && d.Parent != "" ||
				slices.ContainsFunc(r.st.Queue, func(q *entityRequest) bool { return q.ID == d.ID })) {
				continue // a copy of a lock request already granted or queued
			}
			r.st.Queue = append(r.st.Queue, d)
		}
	case ev.Name == entityReleaseEvent:
		var rel entityRelease
		if err := json.Unmarshal([]byte(ev.Input), &rel); err != nil {
			r.log.Warn("dropped a malformed lock release", "error", err)
			return
		}
		if rel.Parent != "" && r.st.LockedBy == rel.Parent {
			r.st.LockedBy = ""
		}
		// A lock request of that section still waiting here (its
		// orchestration ended before getting the lock) is withdrawn, and
		// one arriving later is ignored.
		r.st.Queue = slices.DeleteFunc(r.st.Queue, func(q *entityRequest) bool { return q.isLock() && q.ID == rel.ID })
		if rel.ID != "" {
			r.st.remember(rel.ID)
		}
	case ev.Name == entityContinueEvent:
	default:
		r.log.Warn("dropped an event an entity does not understand", "event", ev.Name)
	}
}

// drain runs queued requests in order while the lock allows: when the
// entity is locked only the holder's requests run, the others wait.
func (r *entityRun) drain() {
	for i := 0; i < len(r.st.Queue); {
		q := r.st.Queue[i]
		if r.st.LockedBy != "" && q.Parent != r.st.LockedBy {
			i++
			continue
		}
		if q.isLock() {
			r.st.Queue = slices.Delete(r.st.Queue, i, i+1)
			r.grantLock(q)
			continue
		}
		if r.ops >= r.maxOps {
			r.stalled = true
			return
		}
		r.st.Queue = slices.Delete(r.st.Queue, i, i+1)
		r.run(q)
	}
}

// grantLock locks the entity for the request's orchestration and passes
// the request on to the next entity of the lock set, or tells the
// orchestration that it holds every lock.
func (r *entityRun) grantLock(q *entityRequest) {
	r.st.LockedBy = q.Parent
	if next := q.Pos + 1; next < len(q.LockSet) {
		fwd := *q
		fwd.Pos = next
		target := EntityID{Name: q.LockSet[next].Name, Key: q.LockSet[next].Key}
		r.out = append(r.out, requestMessage(target, &fwd, time.Time{}))
		return
	}
	r.respond(q, entityResponse{Result: lockGrantedResult})
}

func (r *entityRun) respond(q *entityRequest, resp entityResponse) {
	if q.Parent == "" {
		return
	}
	b, _ := json.Marshal(resp)
	r.out = append(r.out, backend.Message{
		TargetInstanceID:  q.Parent,
		TargetExecutionID: q.ParentExecution,
		Event:             &history.Event{EventType: history.EventRaised, EventID: -1, Timestamp: r.now, Name: q.ID, Input: string(b)},
	})
}

// run executes one operation; a failure rolls its effects back.
func (r *entityRun) run(q *entityRequest) {
	r.ops++
	ec := &EntityContext{
		ctx: r.ctx, id: r.id, operation: q.Op, input: q.Input, isSignal: q.Signal, now: r.now,
		logger: r.log.With("operation", q.Op), exists: r.st.Exists, state: r.st.State,
	}
	// Signals an operation sends are stamped with the entity's send clock;
	// work on a copy so that a failed operation leaves it untouched.
	sorterBefore := r.st.Sorter
	if sorterBefore != nil {
		cp := *sorterBefore
		cp.LastSentToInstance = cloneTimes(sorterBefore.LastSentToInstance)
		r.st.Sorter = &cp
	}
	ec.sched = r.st
	res, err := r.call(ec)
	var resp entityResponse
	if err == nil {
		var enc string
		if enc, err = encodeJSON(res); err != nil {
			err = fmt.Errorf("encode result of operation %q: %w", q.Op, err)
		} else {
			resp.Result = enc
		}
	}
	if err != nil {
		r.failures++
		r.st.Sorter = sorterBefore
		fd := failureDetails(err)
		resp = entityResponse{Result: fd.ErrorMessage, ExceptionType: fd.ErrorType, FailureDetails: fd}
		if q.Signal {
			r.log.Warn("entity operation failed; its changes were rolled back", "operation", q.Op, "error", err)
		}
		if !q.Signal {
			r.respond(q, resp)
		}
		return
	}
	r.st.Exists, r.st.State = ec.exists, ec.state
	if !ec.exists {
		r.st.State = ""
	}
	for _, a := range ec.actions {
		r.out = append(r.out, a.msg)
	}
	if !q.Signal {
		r.respond(q, resp)
	}
}

func cloneTimes(m map[string]time.Time) map[string]time.Time {
	if m == nil {
		return nil
	}
	c := make(map[string]time.Time, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// call runs the entity function, turning a panic into an error.
func (r *entityRun) call(ec *EntityContext) (out any, err error) {
	if r.fnErr != nil {
		return nil, r.fnErr
	}
	defer func() {
		if p := recover(); p != nil {
			out, err = nil, &PanicError{Value: p, Stack: string(debug.Stack())}
		}
	}()
	out, err = r.fn(ec)
	if err == nil && out == nil && ec.hasResult {
		out = ec.result
	}
	return out, err
}

// completion is the checkpoint: the entity continues as new with the
// scheduler state as the input of a fresh execution.
func (r *entityRun) completion(wi *backend.OrchestrationWorkItem) *backend.OrchestrationCompletion {
	exec := newGUIDN()
	input := r.st.encode()
	es := &history.Event{
		EventType: history.ExecutionStarted, EventID: -1, Timestamp: r.now, Name: r.id.Name, Input: input,
		OrchestrationInstance: &history.Instance{InstanceID: wi.InstanceID, ExecutionID: exec},
	}
	cs, _ := json.Marshal(entityCustomStatus{EntityExists: r.st.Exists, QueueSize: len(r.st.Queue), LockedBy: r.st.LockedBy})
	return &backend.OrchestrationCompletion{
		ExecutionID:  exec,
		ResetHistory: true,
		NewHistory: []*history.Event{
			{EventType: history.OrchestratorStarted, EventID: -1, Timestamp: r.now},
			es,
			{EventType: history.OrchestratorCompleted, EventID: -1, Timestamp: r.now},
		},
		Outbound: r.out,
		State: backend.InstanceState{
			InstanceID: wi.InstanceID, ExecutionID: exec, Name: r.id.Name, RuntimeStatus: history.StatusRunning,
			Input: r.st.public(), CustomStatus: string(cs), LastUpdatedTime: r.now,
		},
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
