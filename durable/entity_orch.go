package durable

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
)

// orchEntities is an orchestration's entity bookkeeping: its send clock
// per entity (rebuilt identically on every replay) and its critical
// section.
type orchEntities struct {
	lastSent    map[string]time.Time
	sendHorizon time.Time
	// locks is the lock set of the critical section being acquired or
	// held; lockID its request id; held is set once every lock is granted.
	locks  []EntityID
	lockID string
	held   bool
}

// CallEntity calls operation on entity id with input and returns a task
// that completes with the operation's result. A failed operation surfaces
// from Await as a *[EntityOperationFailedError]. Inside a critical section
// only the locked entities may be called.
func (c *OrchestrationContext) CallEntity(id EntityID, operation string, input any) Task {
	e := c.e
	what := fmt.Sprintf("entity '%s' operation '%s'", id, operation)
	if err := id.validate(); err != nil {
		return e.doneTask(what, "", err)
	}
	if e.ended() {
		return e.doneTask(what, "", ErrCanceled)
	}
	if l := &e.ent; l.locks != nil && !slices.Contains(l.locks, id) {
		return e.doneTask(what, "", &LockingRulesError{msg: fmt.Sprintf("a critical section may only call the entities it locked; %s is not one of %v", id, l.locks)})
	}
	in, err := encodeJSON(input)
	if err != nil {
		return e.doneTask(what, "", fmt.Errorf("encode input of %s: %w", what, err))
	}
	req := &entityRequest{Op: operation, Input: in, ID: e.newGUID(), Parent: e.instanceID, ParentExecution: e.executionID}
	e.sendEntityRequest(id, req, time.Time{})
	wait := e.waitForEvent(req.ID, 0).(*task)
	res := e.newTask(kindDerived, -1, what)
	wait.whenDone(func() {
		var resp entityResponse
		if err := json.Unmarshal([]byte(wait.result), &resp); err != nil {
			res.complete("", fmt.Errorf("decode response of %s: %w", what, err))
			return
		}
		if resp.FailureDetails != nil || resp.ExceptionType != "" {
			fd := history.FailureDetails{ErrorType: resp.ExceptionType, ErrorMessage: resp.Result}
			if resp.FailureDetails != nil {
				fd = *resp.FailureDetails
			}
			res.complete("", &EntityOperationFailedError{Entity: id, Operation: operation, Details: fd})
			return
		}
		res.complete(resp.Result, nil)
	})
	return res
}

// SignalEntity sends a one-way operation to entity id (recorded as
// EventSent; delivered after this episode is committed). Option:
// [WithSignalTime]. Inside a critical section the locked entities may be
// called but not signalled.
func (c *OrchestrationContext) SignalEntity(id EntityID, operation string, input any, opts ...SignalOption) error {
	e := c.e
	if err := id.validate(); err != nil {
		return err
	}
	if e.ended() {
		return ErrCanceled
	}
	if l := &e.ent; l.locks != nil && slices.Contains(l.locks, id) {
		return &LockingRulesError{msg: fmt.Sprintf("a critical section must not signal %s, which it holds locked; call it instead", id)}
	}
	in, err := encodeJSON(input)
	if err != nil {
		return fmt.Errorf("encode input of signal %q to %s: %w", operation, id, err)
	}
	o := applySignalOptions(opts)
	req := &entityRequest{Op: operation, Signal: true, Input: in, ID: e.newGUID(), Parent: e.instanceID, ParentExecution: e.executionID}
	e.sendEntityRequest(id, req, o.at)
	return nil
}

// LockEntities enters a critical section: it locks every entity in ids
// and returns once all are locked. Until unlock is called (or the
// orchestration ends, fails or continues as new) no other orchestration or
// client operation runs on them; this orchestration may call them (and
// only them). Locks are acquired one entity at a time in sorted order, so
// two critical sections cannot deadlock. Critical sections do not nest.
//
//	unlock, err := ctx.LockEntities(from, to)
//	if err != nil {
//		return nil, err
//	}
//	defer unlock()
func (c *OrchestrationContext) LockEntities(ids ...EntityID) (unlock func(), err error) {
	e := c.e
	noop := func() {}
	if len(ids) == 0 {
		return noop, fmt.Errorf("lock entities: no entity given")
	}
	if e.ended() {
		return noop, ErrCanceled
	}
	if e.ent.locks != nil {
		return noop, &LockingRulesError{msg: "critical sections must not be nested: this orchestration already holds (or is acquiring) locks on " + fmt.Sprint(e.ent.locks)}
	}
	set := slices.Clone(ids)
	for _, id := range set {
		if err := id.validate(); err != nil {
			return noop, err
		}
	}
	slices.SortFunc(set, func(a, b EntityID) int { return cmp.Or(strings.Compare(a.Name, b.Name), strings.Compare(a.Key, b.Key)) })
	set = slices.Compact(set)
	refs := make([]entityRef, len(set))
	for i, id := range set {
		refs[i] = entityRef{Name: id.Name, Key: id.Key}
	}
	req := &entityRequest{ID: e.newGUID(), Parent: e.instanceID, ParentExecution: e.executionID, LockSet: refs}
	e.ent.locks, e.ent.lockID, e.ent.held = set, req.ID, false
	e.sendEntityRequest(set[0], req, time.Time{})
	if err := e.waitForEvent(req.ID, 0).Await(nil); err != nil {
		return noop, err
	}
	e.ent.held = true
	lockID := req.ID
	return func() {
		if e.ended() || e.ent.lockID != lockID {
			return // released when the orchestration ended, or already
		}
		for _, id := range e.ent.locks {
			e.schedule(&history.Event{EventType: history.EventSent, Name: entityReleaseEvent, InstanceID: id.String(), Input: releaseInput(e.instanceID, lockID)})
		}
		e.ent.locks, e.ent.lockID, e.ent.held = nil, "", false
	}, nil
}

// InCriticalSection reports whether the orchestration holds entity locks,
// and which.
func (c *OrchestrationContext) InCriticalSection() (bool, []EntityID) {
	l := &c.e.ent
	if !l.held {
		return false, nil
	}
	return true, slices.Clone(l.locks)
}

func releaseInput(parent, id string) string {
	b, _ := json.Marshal(entityRelease{Parent: parent, ID: id})
	return string(b)
}

// sendEntityRequest records an EventSent carrying req to entity id.
func (e *executor) sendEntityRequest(id EntityID, req *entityRequest, at time.Time) {
	if at.IsZero() || !at.After(e.now) {
		at = time.Time{}
		req.Timestamp, req.Predecessor = labelRequest(&e.ent.lastSent, &e.ent.sendHorizon, id.String(), e.now)
	}
	b, _ := json.Marshal(req)
	e.schedule(&history.Event{EventType: history.EventSent, Name: requestEventName(at), InstanceID: id.String(), Input: string(b)})
}

// releaseOnFinish returns the release messages for locks the execution
// still holds or is acquiring when it ends (completed, failed, terminated
// or continued as new), so that no entity stays locked by it.
func (e *executor) releaseOnFinish(now time.Time) []backend.Message {
	l := &e.ent
	if l.locks == nil {
		return nil
	}
	var out []backend.Message
	for _, id := range l.locks {
		out = append(out, backend.Message{TargetInstanceID: id.String(), Event: &history.Event{
			EventType: history.EventRaised, EventID: -1, Timestamp: now, Name: entityReleaseEvent, Input: releaseInput(e.instanceID, l.lockID),
		}})
	}
	l.locks, l.lockID, l.held = nil, "", false
	return out
}

// entityEventVisibleAt returns when an EventSent to an entity is due:
// the time in an "op@<time>" name, zero otherwise.
func entityEventVisibleAt(ev *history.Event) time.Time {
	if !IsEntityInstance(ev.InstanceID) || !strings.HasPrefix(ev.Name, entityOpEvent+"@") {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, ev.Name[len(entityOpEvent)+1:])
	if err != nil {
		return time.Time{}
	}
	return t
}
