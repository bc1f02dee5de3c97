package durable

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
)

// The executor replays one execution of an orchestration: it applies
// history events in order, resuming the orchestrator's coroutines whenever an
// event completes a task, and collects the actions (scheduling events) the
// orchestrator takes. After the committed history it applies the work item's
// new events and turns the new actions into history events and outbound
// messages (an episode). It does no I/O; the worker commits its output.

// maxInlineContinueAsNew bounds how many executions a single work item may
// start through ContinueAsNew without waiting for anything.
const maxInlineContinueAsNew = 100

// maxCustomStatus is the largest custom status, as Durable Functions (16 KB).
const maxCustomStatus = 16 * 1024

// engine holds what executors need from the worker.
type engine struct {
	orchestrators func(name string) (Orchestrator, bool)
	entities      func(name string) (EntityFunc, bool)
	maxEntityOps  int
	logger        *slog.Logger
	watchdog      time.Duration
}

type taskKind int

const (
	kindActivity taskKind = iota
	kindTimer
	kindSubOrchestration
	kindDerived // coroutines, events, combinations, failed-at-creation
)

// task is the Task implementation.
type task struct {
	e    *executor
	kind taskKind
	id   int // EventID of the scheduling event, -1 for derived tasks
	name string
	key  string // idempotency key of activity calls

	done     bool
	resolved bool // its completion event was applied (duplicates are dropped)
	canceled bool // a canceled timer: its firing is ignored
	result   string
	err      error
	order    int64 // history position of the event that completed it
	onDone   []func()
}

func (t *task) Done() bool { return t.done }

func (t *task) Await(out any) error {
	t.e.await(t.Done)
	if t.err != nil {
		return t.err
	}
	if err := decodeJSON(t.result, out); err != nil {
		return fmt.Errorf("decode result of %s: %w", t.describe(), err)
	}
	return nil
}

func (t *task) describe() string {
	switch t.kind {
	case kindActivity:
		return fmt.Sprintf("activity '%s'", t.name)
	case kindSubOrchestration:
		return fmt.Sprintf("sub-orchestrator '%s'", t.name)
	case kindTimer:
		return "timer"
	}
	if t.name != "" {
		return t.name
	}
	return "task"
}

func (t *task) complete(result string, err error) {
	if t.done {
		return
	}
	t.done, t.result, t.err = true, result, err
	t.order = t.e.nextOrder()
	cbs := t.onDone
	t.onDone = nil
	for _, f := range cbs {
		f()
	}
}

func (t *task) whenDone(f func()) {
	if t.done {
		f()
		return
	}
	t.onDone = append(t.onDone, f)
}

// bufferedEvent is an external event that arrived before anyone waited.
type bufferedEvent struct {
	ev  *history.Event
	pos int
}

// executor is one execution of one orchestration instance.
type executor struct {
	g          *engine
	instanceID string

	// from ExecutionStarted
	started     bool
	startEvent  *history.Event
	executionID string
	name        string
	input       string
	fn          Orchestrator

	ctx    *OrchestrationContext
	disp   *dispatcher
	logger *slog.Logger

	now       time.Time
	replaying atomic.Bool
	pos       int // position of the event being applied
	sub       int64
	seq       int // next EventID
	guids     int

	tasks    map[int]*task
	pending  map[int]*history.Event // actions not yet in history
	buffered map[string][]bufferedEvent
	waiters  map[string][]*task

	customStatus string
	suspended    bool
	ent          orchEntities

	finished           bool
	completedInHistory bool
	status             history.Status
	output             string
	failure            *history.FailureDetails
	can                *continueAsNewError
	broken             bool // the dispatcher cannot be trusted (stuck coroutine)
	hardFailed         bool // failed by the runtime (non-determinism, panic, deadlock)
	completedAt        time.Time
	closed             bool
}

func (g *engine) newExecutor(instanceID string) *executor {
	e := &executor{
		g:          g,
		instanceID: instanceID,
		disp:       newDispatcher(g.watchdog),
		pos:        -1,
		tasks:      map[int]*task{},
		pending:    map[int]*history.Event{},
		buffered:   map[string][]bufferedEvent{},
		waiters:    map[string][]*task{},
	}
	e.ctx = &OrchestrationContext{e: e}
	e.logger = slog.New(replayHandler{h: g.logger.Handler(), e: e}).With("instance_id", instanceID)
	return e
}

func (e *executor) nextOrder() int64 {
	e.sub++
	return int64(e.pos)<<32 | e.sub
}

// close ends the execution's coroutines; the executor is unusable after.
func (e *executor) close() {
	if e.closed {
		return
	}
	e.closed = true
	e.disp.kill()
}

// cacheable reports whether the executor may be parked for the next work item.
func (e *executor) cacheable() bool {
	return e.started && !e.finished && !e.broken && !e.closed
}

// replay applies committed history.
func (e *executor) replay(h []*history.Event) {
	e.replaying.Store(true)
	defer e.replaying.Store(false)
	for _, ev := range h {
		e.apply(ev)
		if e.broken {
			return
		}
	}
}

// episode is the outcome of one step.
type episode struct {
	history   []*history.Event
	outbound  []backend.Message
	carryover []*history.Event
	forward   []*history.Event // events for the execution started by ContinueAsNew
	dropped   int              // duplicates
	ignored   int              // events for a finished execution
}

type verdict int

const (
	accept verdict = iota
	hold           // not applicable yet (not started, suspended)
	drop           // duplicate or meaningless
	ignore         // the execution has finished
)

func (e *executor) classify(ev *history.Event) verdict {
	if e.finished {
		return ignore
	}
	switch ev.EventType {
	case history.ExecutionStarted:
		if e.started {
			return drop
		}
		return accept
	case history.OrchestratorStarted, history.OrchestratorCompleted, history.TaskScheduled,
		history.TimerCreated, history.SubOrchestrationInstanceCreated, history.EventSent,
		history.ExecutionCompleted, history.ContinueAsNew, history.ExecutionFailed, history.HistoryState:
		return drop
	}
	if !e.started {
		return hold
	}
	switch ev.EventType {
	case history.ExecutionTerminated:
		return accept
	case history.ExecutionSuspended:
		if e.suspended {
			return drop
		}
		return accept
	case history.ExecutionResumed:
		if !e.suspended {
			return drop
		}
		return accept
	}
	if e.suspended {
		return hold
	}
	if id, ok := completionID(ev); ok {
		if t := e.tasks[id]; t != nil && t.resolved {
			return drop
		}
	}
	return accept
}

// completionID returns the scheduling EventID a completion event refers to.
func completionID(ev *history.Event) (int, bool) {
	switch ev.EventType {
	case history.TaskCompleted, history.TaskFailed,
		history.SubOrchestrationInstanceCompleted, history.SubOrchestrationInstanceFailed:
		return ev.TaskScheduledID, true
	case history.TimerFired:
		return ev.TimerID, true
	}
	return 0, false
}

// step applies a work item's new events at time now and returns the episode.
func (e *executor) step(now time.Time, events []*history.Event) *episode {
	now = now.UTC()
	out := &episode{}
	osEmitted := false
	emitOS := func() {
		if osEmitted {
			return
		}
		osEmitted = true
		os := &history.Event{EventType: history.OrchestratorStarted, EventID: -1, Timestamp: now}
		out.history = append(out.history, os)
		e.apply(os)
	}
	if e.finished && !e.completedInHistory {
		// Replay failed (non-determinism, a stuck coroutine): record it.
		emitOS()
	}
	var held []*history.Event
	queue := slices.Clone(events)
	for len(queue) > 0 {
		ev := queue[0]
		queue = queue[1:]
		switch e.classify(ev) {
		case accept:
			emitOS()
			if ev.Timestamp.IsZero() {
				ev = ev.Clone()
				ev.Timestamp = now
			}
			out.history = append(out.history, ev)
			e.apply(ev)
			if (ev.EventType == history.ExecutionStarted || ev.EventType == history.ExecutionResumed) && len(held) > 0 {
				queue = append(held, queue...)
				held = nil
			}
		case hold:
			held = append(held, ev)
		case drop:
			out.dropped++
		case ignore:
			e.forwardOrIgnore(out, ev)
		}
	}
	if e.finished {
		for _, ev := range held {
			e.forwardOrIgnore(out, ev)
		}
	} else {
		out.carryover = held
	}
	if !osEmitted {
		return out
	}
	e.flushActions(out, now)
	if e.finished {
		out.outbound = append(out.outbound, e.releaseOnFinish(now)...)
	}
	if e.finished && !e.completedInHistory && e.can == nil {
		e.completedInHistory = true
		e.completedAt = now
		e.pos++
		out.history = append(out.history, &history.Event{
			EventType: history.ExecutionCompleted, EventID: -1, Timestamp: now,
			OrchestrationStatus: e.status, Result: e.output, FailureDetails: e.failure,
		})
		if m, ok := e.parentReply(now); ok {
			out.outbound = append(out.outbound, m)
		}
	}
	out.history = append(out.history, &history.Event{EventType: history.OrchestratorCompleted, EventID: -1, Timestamp: now})
	e.pos++
	return out
}

// forwardOrIgnore handles an event that arrived after the execution ended:
// after ContinueAsNew, control events (and, when kept, external events) go to
// the new execution; anything else is ignored.
func (e *executor) forwardOrIgnore(out *episode, ev *history.Event) {
	if e.can != nil {
		switch ev.EventType {
		case history.ExecutionTerminated, history.ExecutionSuspended, history.ExecutionResumed:
			out.forward = append(out.forward, ev)
			return
		case history.EventRaised:
			if e.can.keep {
				out.forward = append(out.forward, ev)
				return
			}
		}
	}
	out.ignored++
	e.logger.Debug("ignored an event for a finished orchestration", "event", ev.String(), "status", string(e.status))
}

// flushActions turns the pending actions into history events and messages.
func (e *executor) flushActions(out *episode, now time.Time) {
	ids := slices.Sorted(maps.Keys(e.pending))
	for _, id := range ids {
		ev := e.pending[id]
		delete(e.pending, id)
		emit := !e.finished || e.status == history.StatusCompleted ||
			(e.can != nil && ev.EventType == history.EventSent) ||
			(ev.EventType == history.EventSent && ev.Name == entityReleaseEvent && IsEntityInstance(ev.InstanceID))
		if !emit {
			continue
		}
		ev.Timestamp = now
		out.history = append(out.history, ev)
		e.pos++
		switch ev.EventType {
		case history.TaskScheduled:
			out.outbound = append(out.outbound, backend.Message{TargetInstanceID: e.instanceID, TargetExecutionID: e.executionID, Event: ev.Clone()})
		case history.TimerCreated:
			out.outbound = append(out.outbound, backend.Message{
				TargetInstanceID: e.instanceID, TargetExecutionID: e.executionID, VisibleAt: ev.FireAt,
				Event: &history.Event{EventType: history.TimerFired, EventID: -1, Timestamp: ev.FireAt, TimerID: id, FireAt: ev.FireAt},
			})
		case history.SubOrchestrationInstanceCreated:
			childExec := newGUIDN()
			out.outbound = append(out.outbound, backend.Message{
				TargetInstanceID: ev.InstanceID, TargetExecutionID: childExec,
				Event: &history.Event{
					EventType: history.ExecutionStarted, EventID: -1, Timestamp: now,
					OrchestrationInstance: &history.Instance{InstanceID: ev.InstanceID, ExecutionID: childExec},
					ParentInstance: &history.ParentInstance{
						Name: e.name, Version: e.startEvent.Version, TaskScheduleID: id,
						OrchestrationInstance: history.Instance{InstanceID: e.instanceID, ExecutionID: e.executionID},
					},
					Name: ev.Name, Version: ev.Version, Input: ev.Input, Tags: maps.Clone(ev.Tags),
				},
			})
		case history.EventSent:
			out.outbound = append(out.outbound, backend.Message{
				TargetInstanceID: ev.InstanceID,
				VisibleAt:        entityEventVisibleAt(ev),
				Event:            &history.Event{EventType: history.EventRaised, EventID: -1, Timestamp: now, Name: ev.Name, Input: ev.Input},
			})
		}
	}
}

// parentReply is the message telling a parent orchestration how this
// sub-orchestration ended.
func (e *executor) parentReply(now time.Time) (backend.Message, bool) {
	p := e.startEvent.ParentInstance
	if p == nil {
		return backend.Message{}, false
	}
	m := backend.Message{TargetInstanceID: p.OrchestrationInstance.InstanceID, TargetExecutionID: p.OrchestrationInstance.ExecutionID}
	if e.status == history.StatusCompleted {
		m.Event = &history.Event{EventType: history.SubOrchestrationInstanceCompleted, EventID: -1, Timestamp: now, TaskScheduledID: p.TaskScheduleID, Result: e.output}
		return m, true
	}
	fd := e.failure
	if fd == nil {
		fd = &history.FailureDetails{ErrorType: string(e.status), ErrorMessage: fmt.Sprintf("orchestration was %s: %s", strings.ToLower(string(e.status)), e.output)}
	}
	m.Event = &history.Event{EventType: history.SubOrchestrationInstanceFailed, EventID: -1, Timestamp: now, TaskScheduledID: p.TaskScheduleID, Reason: fd.ErrorMessage, FailureDetails: fd}
	return m, true
}

// apply applies one event (committed or new, already accepted).
func (e *executor) apply(ev *history.Event) {
	e.pos++
	e.sub = 0
	switch ev.EventType {
	case history.OrchestratorStarted:
		e.now = ev.Timestamp.UTC()
	case history.OrchestratorCompleted:
		if e.replaying.Load() {
			e.checkEpisodeEnd()
		}
	case history.ExecutionStarted:
		e.start(ev)
	case history.TaskScheduled, history.TimerCreated, history.SubOrchestrationInstanceCreated, history.EventSent:
		e.confirm(ev)
	case history.TaskCompleted:
		e.resolve(ev, kindActivity, ev.TaskScheduledID, func(t *task) { t.complete(ev.Result, nil) })
	case history.TaskFailed:
		e.resolve(ev, kindActivity, ev.TaskScheduledID, func(t *task) {
			t.complete("", &TaskFailedError{TaskName: t.name, TaskID: t.id, Details: eventFailure(ev)})
		})
	case history.SubOrchestrationInstanceCompleted:
		e.resolve(ev, kindSubOrchestration, ev.TaskScheduledID, func(t *task) { t.complete(ev.Result, nil) })
	case history.SubOrchestrationInstanceFailed:
		e.resolve(ev, kindSubOrchestration, ev.TaskScheduledID, func(t *task) {
			t.complete("", &TaskFailedError{TaskName: t.name, TaskID: t.id, Details: eventFailure(ev), sub: true})
		})
	case history.TimerFired:
		e.resolve(ev, kindTimer, ev.TimerID, func(t *task) { t.complete("", nil) })
	case history.EventRaised:
		e.raise(ev)
	case history.ExecutionTerminated:
		e.finish(history.StatusTerminated, ev.Input, nil)
	case history.ExecutionSuspended:
		e.suspended = true
	case history.ExecutionResumed:
		e.suspended = false
	case history.ExecutionCompleted, history.ContinueAsNew:
		e.completedInHistory = true
		e.completedAt = ev.Timestamp
		if !e.finished {
			e.finish(ev.OrchestrationStatus, ev.Result, ev.FailureDetails)
		}
	}
}

func eventFailure(ev *history.Event) history.FailureDetails {
	if ev.FailureDetails != nil {
		return *ev.FailureDetails
	}
	return history.FailureDetails{ErrorType: "Error", ErrorMessage: ev.Reason, StackTrace: ev.Details}
}

func (e *executor) start(ev *history.Event) {
	e.started = true
	e.startEvent = ev
	e.name = ev.Name
	e.input = ev.Input
	if ev.OrchestrationInstance != nil {
		e.executionID = ev.OrchestrationInstance.ExecutionID
	}
	if e.now.IsZero() {
		e.now = ev.Timestamp.UTC()
	}
	e.logger = e.logger.With("orchestrator", ev.Name)
	var fn Orchestrator
	ok := false
	if e.g.orchestrators != nil {
		fn, ok = e.g.orchestrators(ev.Name)
	}
	if !ok || fn == nil {
		e.fail(fmt.Errorf("orchestrator function '%s' is not registered with this worker", ev.Name))
		return
	}
	e.fn = fn
	e.disp.spawn(func() {
		out, err := fn(e.ctx)
		e.mainReturned(out, err)
	})
	e.run()
}

func (e *executor) mainReturned(out any, err error) {
	if e.finished {
		return
	}
	if err != nil {
		var can *continueAsNewError
		if errors.As(err, &can) {
			e.finish(history.StatusContinuedAsNew, can.input, nil)
			e.can = can
			return
		}
		e.fail(err)
		return
	}
	s, encErr := encodeJSON(out)
	if encErr != nil {
		e.fail(fmt.Errorf("encode output: %w", encErr))
		return
	}
	e.finish(history.StatusCompleted, s, nil)
}

// run resumes the coroutines until they all block.
func (e *executor) run() {
	if e.finished || e.broken {
		return
	}
	p, err := e.disp.runUntilBlocked()
	switch {
	case err != nil:
		e.broken = true
		e.forceFail(&DeadlockError{Orchestrator: e.name, InstanceID: e.instanceID, Timeout: e.g.watchdog.String()})
	case p != nil:
		e.forceFail(p.panic)
	}
}

func (e *executor) finish(status history.Status, output string, fd *history.FailureDetails) {
	if e.finished {
		return
	}
	e.finished, e.status, e.output, e.failure = true, status, output, fd
	e.disp.halted = true
}

func (e *executor) fail(err error) {
	if e.finished || e.completedInHistory {
		return
	}
	e.setFailed(err)
}

// forceFail fails the execution even if the orchestrator already returned in
// this (uncommitted) episode; the first such failure wins.
func (e *executor) forceFail(err error) {
	if e.completedInHistory || e.hardFailed {
		return
	}
	e.hardFailed = true
	e.setFailed(err)
}

func (e *executor) setFailed(err error) {
	msg, _ := encodeJSON(fmt.Sprintf("Orchestrator function '%s' failed: %s", e.name, err.Error()))
	e.finished = false
	e.can = nil
	e.finish(history.StatusFailed, msg, failureDetails(err))
}

func (e *executor) nondet(pos int, want, got string) {
	e.forceFail(&NonDeterminismError{Orchestrator: e.name, InstanceID: e.instanceID, Position: pos, Want: want, Got: got})
}

// confirm matches a committed scheduling event with the action the
// orchestrator took at the same sequence number.
func (e *executor) confirm(ev *history.Event) {
	if e.completedInHistory {
		return
	}
	a, ok := e.pending[ev.EventID]
	if !ok {
		got := "scheduled nothing there"
		if e.finished {
			got = "had already returned"
		}
		e.nondet(ev.EventID, ev.String(), got)
		return
	}
	if a.EventType != ev.EventType || a.Name != ev.Name {
		e.nondet(ev.EventID, ev.String(), "called "+a.String())
		return
	}
	delete(e.pending, ev.EventID)
}

// checkEpisodeEnd runs at each committed OrchestratorCompleted: every action
// of the episode must have been in history, and the orchestrator must not
// have returned unless history says it did.
func (e *executor) checkEpisodeEnd() {
	if e.completedInHistory {
		return
	}
	if len(e.pending) > 0 {
		id := slices.Min(slices.Collect(maps.Keys(e.pending)))
		e.nondet(id, "nothing more in that episode", "called "+e.pending[id].String())
		return
	}
	if e.finished && e.status != history.StatusTerminated {
		e.nondet(e.seq, "the orchestration still running", "returned")
	}
}

// resolve applies a completion event to the task it names.
func (e *executor) resolve(ev *history.Event, kind taskKind, id int, done func(*task)) {
	if e.finished {
		return
	}
	t := e.tasks[id]
	if t == nil || t.kind != kind {
		got := "never scheduled a task with that id"
		if t != nil {
			got = "scheduled " + t.describe() + " there"
		}
		e.nondet(id, ev.String(), got)
		return
	}
	if t.resolved {
		return
	}
	t.resolved = true
	if t.canceled {
		return
	}
	done(t)
	e.run()
}

func eventKey(name string) string { return strings.ToLower(name) }

// raise delivers an external event to the oldest waiter of that name, or
// buffers it.
func (e *executor) raise(ev *history.Event) {
	if e.finished {
		return
	}
	k := eventKey(ev.Name)
	if ws := e.waiters[k]; len(ws) > 0 {
		w := ws[0]
		e.waiters[k] = ws[1:]
		w.complete(ev.Input, nil)
		e.run()
		return
	}
	e.buffered[k] = append(e.buffered[k], bufferedEvent{ev: ev, pos: e.pos})
}

// await parks the current coroutine until cond holds.
func (e *executor) await(cond func() bool) {
	if cond() {
		return
	}
	c := e.disp.current
	if c == nil {
		panic("durable: Await called outside the orchestrator coroutines of the orchestration that created the task")
	}
	c.park(cond)
}

// newTask registers a task.
func (e *executor) newTask(kind taskKind, id int, name string) *task {
	t := &task{e: e, kind: kind, id: id, name: name}
	if id >= 0 {
		e.tasks[id] = t
	}
	return t
}

// doneTask returns a derived task that is already complete.
func (e *executor) doneTask(name, result string, err error) *task {
	t := e.newTask(kindDerived, -1, name)
	t.complete(result, err)
	return t
}

// ended reports whether no new work may be scheduled; tasks created then
// fail with ErrCanceled.
func (e *executor) ended() bool { return e.finished || e.closed }

func (e *executor) schedule(ev *history.Event) int {
	ev.EventID = e.seq
	e.seq++
	e.pending[ev.EventID] = ev
	return ev.EventID
}

func (e *executor) scheduleActivity(name, input, key string) *task {
	if e.ended() {
		return e.doneTask(name, "", ErrCanceled)
	}
	ev := &history.Event{EventType: history.TaskScheduled, Name: name, Input: input}
	id := e.schedule(ev)
	if key == "" {
		key = fmt.Sprintf("%s:%s:%d", e.instanceID, e.executionID, id)
	}
	ev.Tags = map[string]string{IdempotencyKeyTag: key}
	t := e.newTask(kindActivity, id, name)
	t.key = key
	return t
}

func (e *executor) scheduleSubOrchestration(name, instanceID, input string) *task {
	if e.ended() {
		return e.doneTask(name, "", ErrCanceled)
	}
	if instanceID == "" {
		instanceID = e.newGUID()
	} else if err := ValidateInstanceID(instanceID); err != nil {
		return e.doneTask(name, "", fmt.Errorf("sub-orchestrator %q: %w", name, err))
	}
	id := e.schedule(&history.Event{EventType: history.SubOrchestrationInstanceCreated, Name: name, InstanceID: instanceID, Input: input})
	return e.newTask(kindSubOrchestration, id, name)
}

func (e *executor) createTimer(fireAt time.Time) *task {
	if e.ended() {
		return e.doneTask("timer", "", ErrCanceled)
	}
	id := e.schedule(&history.Event{EventType: history.TimerCreated, FireAt: fireAt.UTC()})
	return e.newTask(kindTimer, id, "")
}

// goTask runs body as a new coroutine; the task completes with its result.
func (e *executor) goTask(name string, body func() (string, error)) *task {
	if e.ended() {
		return e.doneTask(name, "", ErrCanceled)
	}
	t := e.newTask(kindDerived, -1, name)
	e.disp.spawn(func() {
		r, err := body()
		t.complete(r, err)
	})
	return t
}

// retry wraps a first attempt in a coroutine that retries it under p, on
// durable timers.
func (e *executor) retry(p RetryPolicy, first *task, again func() *task) Task {
	if err := p.validate(); err != nil {
		return e.doneTask(first.name, "", err)
	}
	firstAt := e.now
	return e.goTask("retry of "+first.describe(), func() (string, error) {
		t := first
		for attempt := 1; ; attempt++ {
			e.await(t.Done)
			if t.err == nil {
				return t.result, nil
			}
			var tf *TaskFailedError
			if !errors.As(t.err, &tf) {
				return "", t.err
			}
			d, ok := p.nextDelay(attempt, firstAt, e.now, tf)
			if !ok {
				return "", t.err
			}
			timer := e.createTimer(e.now.Add(d))
			e.await(timer.Done)
			if timer.err != nil {
				return "", t.err
			}
			t = again()
		}
	})
}

func (e *executor) waitForEvent(name string, timeout time.Duration) Task {
	if e.ended() {
		return e.doneTask("event "+name, "", ErrCanceled)
	}
	k := eventKey(name)
	w := e.newTask(kindDerived, -1, "event '"+name+"'")
	if q := e.buffered[k]; len(q) > 0 {
		b := q[0]
		e.buffered[k] = q[1:]
		w.done, w.result = true, b.ev.Input
		e.sub++
		w.order = int64(b.pos)<<32 | e.sub
		return w
	}
	e.waiters[k] = append(e.waiters[k], w)
	if timeout <= 0 {
		return w
	}
	timer := e.createTimer(e.now.Add(timeout))
	res := e.newTask(kindDerived, -1, w.name)
	w.whenDone(func() {
		timer.canceled = true
		res.complete(w.result, w.err)
	})
	timer.whenDone(func() {
		if res.done {
			return
		}
		ws := e.waiters[k]
		if i := slices.Index(ws, w); i >= 0 {
			e.waiters[k] = slices.Delete(ws, i, i+1)
		}
		res.complete("", fmt.Errorf("event '%s' not received within %s: %w", name, timeout, ErrTimeout))
	})
	return res
}

func (e *executor) newGUID() string {
	name := fmt.Sprintf("%s_%s_%d", e.instanceID, e.now.UTC().Format("2006-01-02T15:04:05.0000000Z"), e.guids)
	e.guids++
	return uuidV5(urlNamespace, name)
}

// taskOrder is the history position that completed t (foreign Task
// implementations sort last).
func taskOrder(t Task) int64 {
	if tt, ok := t.(*task); ok {
		return tt.order
	}
	return 1<<63 - 1
}

// kept returns the buffered external events in history order.
func (e *executor) kept() []*history.Event {
	var all []bufferedEvent
	for _, q := range e.buffered {
		all = append(all, q...)
	}
	slices.SortFunc(all, func(a, b bufferedEvent) int { return cmp.Compare(a.pos, b.pos) })
	out := make([]*history.Event, len(all))
	for i, b := range all {
		out[i] = b.ev
	}
	return out
}

// state is the instance status row after this executor's last step.
func (e *executor) state(now time.Time) backend.InstanceState {
	s := backend.InstanceState{
		InstanceID:      e.instanceID,
		ExecutionID:     e.executionID,
		Name:            e.name,
		Input:           e.input,
		CustomStatus:    e.customStatus,
		LastUpdatedTime: now.UTC(),
		RuntimeStatus:   history.StatusRunning,
	}
	if ev := e.startEvent; ev != nil {
		s.Version = ev.Version
		s.CreatedTime = ev.Timestamp
		s.Generation = ev.Generation
		s.Tags = maps.Clone(ev.Tags)
		if ev.ScheduledStartTime != nil {
			s.ScheduledStartTime = *ev.ScheduledStartTime
		}
	}
	switch {
	case e.finished:
		s.RuntimeStatus = e.status
		s.Output = e.output
		s.FailureDetails = e.failure
		s.CompletedTime = cmp.Or(e.completedAt, now.UTC())
	case e.suspended:
		s.RuntimeStatus = history.StatusSuspended
	}
	return s
}

// process runs a work item: ex is a cached executor that has seen exactly
// wi.History, or nil to replay. It returns the completion to commit and the
// executor to keep (the last one, after ContinueAsNew).
func (g *engine) process(ex *executor, wi *backend.OrchestrationWorkItem, now time.Time) (*backend.OrchestrationCompletion, *executor, *episode) {
	if ex == nil {
		if c, rex, ep, ok := g.rewind(wi, now); ok {
			return c, rex, ep
		}
		ex = g.newExecutor(wi.InstanceID)
		ex.replay(wi.History)
	}
	ep := ex.step(now, wi.NewEvents)
	c := &backend.OrchestrationCompletion{
		ExecutionID: cmp.Or(ex.executionID, wi.ExecutionID),
		NewHistory:  ep.history,
		Outbound:    ep.outbound,
		Carryover:   ep.carryover,
		State:       ex.state(now),
	}
	total := &episode{dropped: ep.dropped, ignored: ep.ignored}
	for n := 0; ex.can != nil; n++ {
		old := ex
		es := old.startEvent.Clone()
		es.Timestamp = now.UTC()
		es.Input = old.can.input
		es.Generation = old.startEvent.Generation + 1
		es.OrchestrationInstance = &history.Instance{InstanceID: wi.InstanceID, ExecutionID: newGUIDN()}
		es.ScheduledStartTime = nil
		events := []*history.Event{es}
		if old.can.keep {
			events = append(events, old.kept()...)
		}
		events = append(events, ep.forward...)
		old.close()
		ex = g.newExecutor(wi.InstanceID)
		if n == maxInlineContinueAsNew {
			ex.orchestratorOverride(fmt.Errorf("orchestrator continued as new %d times within one work item without waiting for anything", n))
		}
		ep = ex.step(now, events)
		c.ExecutionID = ex.executionID
		c.ResetHistory = true
		c.NewHistory = ep.history
		c.Outbound = append(c.Outbound, ep.outbound...)
		c.Carryover = append(c.Carryover, ep.carryover...)
		c.State = ex.state(now)
		total.dropped += ep.dropped
		total.ignored += ep.ignored
	}
	return c, ex, total
}

// orchestratorOverride makes the next ExecutionStarted fail with err instead
// of running the orchestrator.
func (e *executor) orchestratorOverride(err error) {
	inner := e.g
	e.g = &engine{logger: inner.logger, watchdog: inner.watchdog, orchestrators: func(string) (Orchestrator, bool) {
		return func(*OrchestrationContext) (any, error) { return nil, err }, true
	}}
}
