package durable

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/stratus-dev/stratus/durable/history"
)

// OrchestrationContext is what an orchestrator function uses to call
// activities, sub-orchestrations, timers and events. It is not a
// context.Context: orchestrator code must be deterministic (see the package
// documentation). Only the orchestrator's coroutines may use it.
type OrchestrationContext struct {
	e *executor
}

// InstanceID returns the orchestration instance id.
func (c *OrchestrationContext) InstanceID() string { return c.e.instanceID }

// ExecutionID returns the id of the current execution (a new one after
// each ContinueAsNew).
func (c *OrchestrationContext) ExecutionID() string { return c.e.executionID }

// Name returns the orchestrator function name.
func (c *OrchestrationContext) Name() string { return c.e.name }

// ParentInstanceID returns the instance id of the parent orchestration, or
// "" when this is not a sub-orchestration.
func (c *OrchestrationContext) ParentInstanceID() string {
	if p := c.e.startEvent.ParentInstance; p != nil {
		return p.OrchestrationInstance.InstanceID
	}
	return ""
}

// Input decodes the orchestration input into out.
func (c *OrchestrationContext) Input(out any) error {
	if err := decodeJSON(c.e.input, out); err != nil {
		return fmt.Errorf("decode orchestration input: %w", err)
	}
	return nil
}

// CallActivity schedules activity name with input (JSON-encoded; a
// json.RawMessage or []byte of JSON is passed through). Options: [WithRetry].
// A failure surfaces from Await as a *[TaskFailedError].
func (c *OrchestrationContext) CallActivity(name string, input any, opts ...CallOption) Task {
	e := c.e
	o := applyCallOptions(opts)
	in, err := encodeJSON(input)
	if err != nil {
		return e.doneTask(name, "", fmt.Errorf("encode input of activity %q: %w", name, err))
	}
	first := e.scheduleActivity(name, in, "")
	if o.retry == nil {
		return first
	}
	key := first.key
	return e.retry(*o.retry, first, func() *task { return e.scheduleActivity(name, in, key) })
}

// CallSubOrchestrator starts orchestrator name as a child instance and
// completes with its output. Options: [WithInstanceID] (default: a
// [OrchestrationContext.NewGUID]) and [WithRetry]. A failure surfaces from
// Await as a *[TaskFailedError].
func (c *OrchestrationContext) CallSubOrchestrator(name string, input any, opts ...CallOption) Task {
	e := c.e
	o := applyCallOptions(opts)
	in, err := encodeJSON(input)
	if err != nil {
		return e.doneTask(name, "", fmt.Errorf("encode input of sub-orchestrator %q: %w", name, err))
	}
	first := e.scheduleSubOrchestration(name, o.instanceID, in)
	if o.retry == nil {
		return first
	}
	return e.retry(*o.retry, first, func() *task { return e.scheduleSubOrchestration(name, o.instanceID, in) })
}

func applyCallOptions(opts []CallOption) callOptions {
	var o callOptions
	for _, f := range opts {
		f(&o)
	}
	return o
}

// CreateTimer returns a task that completes at fireAt (orchestration time).
func (c *OrchestrationContext) CreateTimer(fireAt time.Time) Task {
	return c.e.createTimer(fireAt)
}

// Sleep waits for a durable timer of d: shorthand for
// CreateTimer(CurrentUTCTime().Add(d)).Await(nil).
func (c *OrchestrationContext) Sleep(d time.Duration) error {
	return c.CreateTimer(c.CurrentUTCTime().Add(d)).Await(nil)
}

// WaitForExternalEvent returns a task that completes with the data of the
// next external event named name (names match case-insensitively, as in
// Durable Functions). Events that arrive before anyone waits are buffered,
// first in first out per name. With [WithTimeout] the wait races a durable
// timer; if the timer wins, Await returns an error matching [ErrTimeout] and
// a later event stays buffered for the next wait.
func (c *OrchestrationContext) WaitForExternalEvent(name string, opts ...EventOption) Task {
	var o eventOptions
	for _, f := range opts {
		f(&o)
	}
	return c.e.waitForEvent(name, o.timeout)
}

// SendEvent sends an external event to another instance (recorded as
// EventSent; delivered after this episode is committed).
func (c *OrchestrationContext) SendEvent(instanceID, name string, data any) error {
	e := c.e
	in, err := encodeJSON(data)
	if err != nil {
		return fmt.Errorf("encode data of event %q: %w", name, err)
	}
	if e.ended() {
		return ErrCanceled
	}
	e.schedule(&history.Event{EventType: history.EventSent, Name: name, InstanceID: instanceID, Input: in})
	return nil
}

// Go runs fn as a deterministic coroutine of this orchestration and returns
// a task that completes with fn's result. Coroutines run one at a time, in
// the order they were created, each until it awaits something not yet done;
// use them for multi-step work per item (charge, then notify, for each
// subscription, all in parallel).
func (c *OrchestrationContext) Go(fn func(ctx *OrchestrationContext) (any, error)) Task {
	return c.e.goTask("coroutine", func() (string, error) {
		out, err := fn(c)
		if err != nil {
			return "", err
		}
		return encodeJSON(out)
	})
}

// WhenAll waits until every task is done and returns the errors of the
// failed ones joined (errors.Join), in the order they failed in history.
func (c *OrchestrationContext) WhenAll(ts ...Task) error {
	c.e.await(func() bool {
		for _, t := range ts {
			if !t.Done() {
				return false
			}
		}
		return true
	})
	type failed struct {
		order int64
		i     int
		err   error
	}
	var fs []failed
	for i, t := range ts {
		if err := t.Await(nil); err != nil {
			fs = append(fs, failed{taskOrder(t), i, err})
		}
	}
	slices.SortFunc(fs, func(a, b failed) int { return cmp.Or(cmp.Compare(a.order, b.order), cmp.Compare(a.i, b.i)) })
	errs := make([]error, len(fs))
	for i, f := range fs {
		errs[i] = f.err
	}
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

// WhenAny waits until at least one task is done and returns the winner.
// When several are done, the one completed earliest in history wins (ties,
// such as tasks that were already done before the call, go to the first in
// the argument list). The other tasks keep running.
func (c *OrchestrationContext) WhenAny(ts ...Task) Task {
	if len(ts) == 0 {
		return c.e.doneTask("WhenAny", "", fmt.Errorf("WhenAny needs at least one task"))
	}
	c.e.await(func() bool {
		return slices.ContainsFunc(ts, Task.Done)
	})
	var win Task
	for _, t := range ts {
		if t.Done() && (win == nil || taskOrder(t) < taskOrder(win)) {
			win = t
		}
	}
	return win
}

// ContinueAsNew returns the error an orchestrator returns to restart itself
// with a fresh history and input:
//
//	return nil, ctx.ContinueAsNew(next)
//
// External events that arrived but were not awaited are dropped unless
// [KeepUnprocessedEvents] is given. Calls started and not awaited are
// abandoned (only SendEvent messages are still sent).
func (c *OrchestrationContext) ContinueAsNew(input any, opts ...ContinueAsNewOption) error {
	in, err := encodeJSON(input)
	if err != nil {
		return fmt.Errorf("encode ContinueAsNew input: %w", err)
	}
	var o continueOptions
	for _, f := range opts {
		f(&o)
	}
	return &continueAsNewError{input: in, keep: o.keep}
}

// SetCustomStatus sets the instance's custom status (JSON, at most 16 KB; nil
// clears it). It is saved with the next checkpoint.
func (c *OrchestrationContext) SetCustomStatus(v any) error {
	s, err := encodeJSON(v)
	if err != nil {
		return fmt.Errorf("encode custom status: %w", err)
	}
	if len(s) > maxCustomStatus {
		return fmt.Errorf("custom status is %d bytes; the limit is %d", len(s), maxCustomStatus)
	}
	c.e.customStatus = s
	return nil
}

// CurrentUTCTime returns the orchestration's current time: the time of the
// episode being (re)played, the same on every replay.
func (c *OrchestrationContext) CurrentUTCTime() time.Time { return c.e.now }

// NewGUID returns a deterministic UUID: the name-based (SHA-1, URL
// namespace) UUID of "{instanceId}_{CurrentUTCTime}_{counter}", as Durable
// Functions' NewGuid.
func (c *OrchestrationContext) NewGUID() string { return c.e.newGUID() }

// IsReplaying reports whether the orchestrator is re-executing code whose
// effects are already in history.
func (c *OrchestrationContext) IsReplaying() bool { return c.e.replaying.Load() }

// Logger returns a logger with the instance id and orchestrator name that
// discards records while replaying, so each line is logged once.
func (c *OrchestrationContext) Logger() *slog.Logger { return c.e.logger }

// replayHandler mutes a handler while the executor replays.
type replayHandler struct {
	h slog.Handler
	e *executor
}

func (r replayHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return !r.e.replaying.Load() && r.h.Enabled(ctx, l)
}

func (r replayHandler) Handle(ctx context.Context, rec slog.Record) error {
	if r.e.replaying.Load() {
		return nil
	}
	return r.h.Handle(ctx, rec)
}

func (r replayHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return replayHandler{h: r.h.WithAttrs(as), e: r.e}
}

func (r replayHandler) WithGroup(name string) slog.Handler {
	return replayHandler{h: r.h.WithGroup(name), e: r.e}
}
