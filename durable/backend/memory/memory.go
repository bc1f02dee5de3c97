// Package memory is an in-memory task hub: a backend.Backend that keeps
// instances, histories, control messages, delayed messages and the activity
// queue in one process. It follows the same contract as the Azure Storage
// backend (work items locked to one worker, outcomes committed before their
// messages are acknowledged, duplicates removed against history, carryover
// redelivered, events for unknown or finished instances dropped and counted,
// entities (ids starting with '@') created by their first event)
// and exists so that the durable runtime can be tested without storage.
package memory

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
)

var _ backend.Backend = (*Backend)(nil)

// Stats are counters of the backend.
type Stats struct {
	// DroppedMessages counts messages for unknown or finished instances, for
	// another execution, and duplicates of events already in history.
	DroppedMessages int
	// RejectedStarts counts ExecutionStarted messages for an id in use.
	RejectedStarts int
}

// Backend is an in-memory task hub. The zero value is not usable; call New.
type Backend struct {
	mu        sync.Mutex
	changed   chan struct{} // closed and replaced on every change
	now       func() time.Time
	instances map[string]*instance
	delayed   []backend.Message
	// activities waiting to run, in order.
	activities []*activity
	running    map[int64]*activity
	stopped    bool
	token      int64
	stats      Stats
}

type queued struct {
	ev   *history.Event
	exec string
}

type instance struct {
	state     backend.InstanceState
	history   []*history.Event
	queue     []queued
	carry     []*history.Event
	lock      int64
	notBefore time.Time
}

type activity struct {
	instanceID, executionID string
	ev                      *history.Event
	dequeues                int
	visibleAt               time.Time
}

type orchLease struct {
	token    int64
	consumed []queued
	carry    []*history.Event
}

type actLease struct{ token int64 }

// New returns an empty, started backend.
func New() *Backend {
	return &Backend{
		changed:   make(chan struct{}),
		now:       time.Now,
		instances: map[string]*instance{},
		running:   map[int64]*activity{},
	}
}

// Stats returns the backend's counters.
func (b *Backend) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stats
}

func (b *Backend) notify() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// Start implements backend.Backend; the memory backend needs no setup.
func (b *Backend) Start(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = false
	return nil
}

// Stop makes pending and future Next calls return backend.ErrStopped.
func (b *Backend) Stop(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
	b.notify()
	return nil
}

// CreateInstance implements backend.Client.
func (b *Backend) CreateInstance(ctx context.Context, started *history.Event) error {
	if started == nil || started.EventType != history.ExecutionStarted || started.OrchestrationInstance == nil {
		return fmt.Errorf("create instance: need an ExecutionStarted event with OrchestrationInstance")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	id := started.OrchestrationInstance.InstanceID
	if in, ok := b.instances[id]; ok && !in.state.RuntimeStatus.Terminal() {
		return fmt.Errorf("create instance %s: %w", id, backend.ErrInstanceExists)
	}
	b.createRow(started)
	m := backend.Message{TargetInstanceID: id, TargetExecutionID: started.OrchestrationInstance.ExecutionID, Event: started.Clone()}
	if started.ScheduledStartTime != nil {
		m.VisibleAt = *started.ScheduledStartTime
	}
	b.route(m)
	b.notify()
	return nil
}

// createRow creates or replaces an instance row as Pending.
func (b *Backend) createRow(es *history.Event) *instance {
	id := es.OrchestrationInstance.InstanceID
	gen := 0
	if old, ok := b.instances[id]; ok {
		gen = old.state.Generation + 1
	}
	in := &instance{state: backend.InstanceState{
		InstanceID:      id,
		ExecutionID:     es.OrchestrationInstance.ExecutionID,
		Name:            es.Name,
		Version:         es.Version,
		RuntimeStatus:   history.StatusPending,
		Input:           es.Input,
		CreatedTime:     cmp.Or(es.Timestamp, b.now().UTC()),
		LastUpdatedTime: b.now().UTC(),
		Generation:      gen,
		Tags:            es.Tags,
	}}
	if es.ScheduledStartTime != nil {
		in.state.ScheduledStartTime = *es.ScheduledStartTime
	}
	b.instances[id] = in
	return in
}

// route delivers a message (the caller holds mu).
func (b *Backend) route(m backend.Message) {
	if m.VisibleAt.After(b.now()) {
		b.delayed = append(b.delayed, m)
		return
	}
	ev := m.Event
	if ev.EventType == history.TaskScheduled {
		b.activities = append(b.activities, &activity{instanceID: m.TargetInstanceID, executionID: m.TargetExecutionID, ev: ev.Clone()})
		return
	}
	in, ok := b.instances[m.TargetInstanceID]
	if ev.EventType == history.ExecutionStarted {
		switch {
		case !ok || in.state.RuntimeStatus.Terminal() && in.state.ExecutionID != m.TargetExecutionID:
			in = b.createRow(ev)
		case in.state.ExecutionID != m.TargetExecutionID || len(in.history) > 0:
			b.stats.RejectedStarts++
			return
		}
		in.queue = append(in.queue, queued{ev: ev.Clone(), exec: m.TargetExecutionID})
		return
	}
	if !ok && strings.HasPrefix(m.TargetInstanceID, "@") && ev.EventType == history.EventRaised {
		// Entities start on their first message.
		now := b.now().UTC()
		name, _, _ := strings.Cut(m.TargetInstanceID[1:], "@")
		in = &instance{state: backend.InstanceState{InstanceID: m.TargetInstanceID, Name: name,
			RuntimeStatus: history.StatusPending, CreatedTime: now, LastUpdatedTime: now}}
		b.instances[m.TargetInstanceID] = in
		ok = true
	}
	if !ok || in.state.RuntimeStatus.Terminal() {
		b.stats.DroppedMessages++
		return
	}
	in.queue = append(in.queue, queued{ev: ev.Clone(), exec: m.TargetExecutionID})
}

// promote routes delayed messages that are due and returns when the next
// one is (zero if none).
func (b *Backend) promote() time.Time {
	now := b.now()
	var next time.Time
	keep := b.delayed[:0]
	var due []backend.Message
	for _, m := range b.delayed {
		if m.VisibleAt.After(now) {
			keep = append(keep, m)
			if next.IsZero() || m.VisibleAt.Before(next) {
				next = m.VisibleAt
			}
			continue
		}
		due = append(due, m)
	}
	clear(b.delayed[len(keep):])
	b.delayed = keep
	slices.SortStableFunc(due, func(x, y backend.Message) int { return x.VisibleAt.Compare(y.VisibleAt) })
	for _, m := range due {
		m.VisibleAt = time.Time{}
		b.route(m)
	}
	return next
}

// wait blocks until try returns a result, ctx ends or the backend stops.
func wait[T any](ctx context.Context, b *Backend, try func(now time.Time) (T, time.Time, bool)) (T, error) {
	var zero T
	for {
		b.mu.Lock()
		if b.stopped {
			b.mu.Unlock()
			return zero, backend.ErrStopped
		}
		next := b.promote()
		v, retryAt, ok := try(b.now())
		ch := b.changed
		b.mu.Unlock()
		if ok {
			return v, nil
		}
		if next.IsZero() || !retryAt.IsZero() && retryAt.Before(next) {
			next = retryAt
		}
		var (
			timer <-chan time.Time
			t     *time.Timer
		)
		if !next.IsZero() {
			t = time.NewTimer(time.Until(next))
			timer = t.C
		}
		select {
		case <-ctx.Done():
		case <-ch:
		case <-timer:
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return zero, ctx.Err()
		}
	}
}

// NextOrchestrationWorkItem implements backend.Backend.
func (b *Backend) NextOrchestrationWorkItem(ctx context.Context) (*backend.OrchestrationWorkItem, error) {
	return wait(ctx, b, b.tryOrchestration)
}

func (b *Backend) tryOrchestration(now time.Time) (*backend.OrchestrationWorkItem, time.Time, bool) {
	var retryAt time.Time
	for id, in := range b.instances {
		if in.lock != 0 || len(in.queue) == 0 {
			continue
		}
		if in.notBefore.After(now) {
			if retryAt.IsZero() || in.notBefore.Before(retryAt) {
				retryAt = in.notBefore
			}
			continue
		}
		consumed := in.queue
		in.queue = nil
		events := slices.Clone(in.carry)
		for _, q := range consumed {
			if b.duplicate(in, q) {
				b.stats.DroppedMessages++
				continue
			}
			events = append(events, q.ev.Clone())
		}
		lease := &orchLease{consumed: consumed, carry: in.carry}
		in.carry = nil
		if len(events) == 0 {
			continue
		}
		b.token++
		lease.token = b.token
		in.lock = b.token
		execID := in.state.ExecutionID
		if len(in.history) == 0 && slices.ContainsFunc(events, func(e *history.Event) bool { return e.EventType == history.ExecutionStarted }) {
			execID = ""
		}
		return &backend.OrchestrationWorkItem{
			InstanceID:  id,
			ExecutionID: execID,
			History:     cloneEvents(in.history),
			NewEvents:   events,
			State:       lease,
		}, time.Time{}, true
	}
	return nil, retryAt, false
}

// duplicate reports whether q is for another execution or already in history.
func (b *Backend) duplicate(in *instance, q queued) bool {
	ev := q.ev
	if ev.EventType != history.ExecutionStarted && q.exec != "" && q.exec != in.state.ExecutionID {
		return true
	}
	for _, h := range in.history {
		switch ev.EventType {
		case history.ExecutionStarted:
			if h.EventType == history.ExecutionStarted {
				return true
			}
		case history.TaskCompleted, history.TaskFailed, history.SubOrchestrationInstanceCompleted, history.SubOrchestrationInstanceFailed:
			if h.EventType == ev.EventType && h.TaskScheduledID == ev.TaskScheduledID {
				return true
			}
		case history.TimerFired:
			if h.EventType == history.TimerFired && h.TimerID == ev.TimerID {
				return true
			}
		}
	}
	return false
}

func (b *Backend) lease(wi *backend.OrchestrationWorkItem) (*instance, *orchLease, error) {
	l, ok := wi.State.(*orchLease)
	if !ok {
		return nil, nil, fmt.Errorf("work item of %s: foreign state: %w", wi.InstanceID, backend.ErrWorkItemLost)
	}
	in, ok := b.instances[wi.InstanceID]
	if !ok || in.lock != l.token {
		return nil, nil, fmt.Errorf("work item of %s: %w", wi.InstanceID, backend.ErrWorkItemLost)
	}
	return in, l, nil
}

// CompleteOrchestrationWorkItem implements backend.Backend.
func (b *Backend) CompleteOrchestrationWorkItem(ctx context.Context, wi *backend.OrchestrationWorkItem, c *backend.OrchestrationCompletion) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	in, _, err := b.lease(wi)
	if err != nil {
		return err
	}
	if len(in.history) != len(wi.History) {
		return fmt.Errorf("work item of %s: history changed: %w", wi.InstanceID, backend.ErrWorkItemLost)
	}
	if c.ResetHistory {
		in.history = cloneEvents(c.NewHistory)
	} else {
		in.history = append(in.history, cloneEvents(c.NewHistory)...)
	}
	st := c.State
	st.InstanceID = wi.InstanceID
	if st.ExecutionID == "" {
		st.ExecutionID = c.ExecutionID
	}
	if st.CreatedTime.IsZero() {
		st.CreatedTime = in.state.CreatedTime
	}
	if st.Generation < in.state.Generation {
		st.Generation = in.state.Generation
	}
	in.state = st
	in.carry = cloneEvents(c.Carryover)
	in.lock = 0
	for _, m := range c.Outbound {
		m.Event = m.Event.Clone()
		b.route(m)
	}
	b.notify()
	return nil
}

// AbandonOrchestrationWorkItem implements backend.Backend.
func (b *Backend) AbandonOrchestrationWorkItem(ctx context.Context, wi *backend.OrchestrationWorkItem, delay time.Duration) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	in, l, err := b.lease(wi)
	if err != nil {
		return err
	}
	in.queue = append(slices.Clone(l.consumed), in.queue...)
	in.carry = l.carry
	in.lock = 0
	in.notBefore = b.now().Add(delay)
	b.notify()
	return nil
}

// NextActivityWorkItem implements backend.Backend.
func (b *Backend) NextActivityWorkItem(ctx context.Context) (*backend.ActivityWorkItem, error) {
	return wait(ctx, b, func(now time.Time) (*backend.ActivityWorkItem, time.Time, bool) {
		var retryAt time.Time
		for i, a := range b.activities {
			if a.visibleAt.After(now) {
				if retryAt.IsZero() || a.visibleAt.Before(retryAt) {
					retryAt = a.visibleAt
				}
				continue
			}
			b.activities = slices.Delete(b.activities, i, i+1)
			a.dequeues++
			b.token++
			b.running[b.token] = a
			return &backend.ActivityWorkItem{
				InstanceID: a.instanceID, ExecutionID: a.executionID, Event: a.ev.Clone(),
				DequeueCount: a.dequeues, State: &actLease{token: b.token},
			}, time.Time{}, true
		}
		return nil, retryAt, false
	})
}

func (b *Backend) activityLease(wi *backend.ActivityWorkItem) (int64, *activity, error) {
	l, ok := wi.State.(*actLease)
	if !ok {
		return 0, nil, fmt.Errorf("activity work item: foreign state: %w", backend.ErrWorkItemLost)
	}
	a, ok := b.running[l.token]
	if !ok {
		return 0, nil, fmt.Errorf("activity work item: %w", backend.ErrWorkItemLost)
	}
	return l.token, a, nil
}

// CompleteActivityWorkItem implements backend.Backend.
func (b *Backend) CompleteActivityWorkItem(ctx context.Context, wi *backend.ActivityWorkItem, result *history.Event) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	tok, a, err := b.activityLease(wi)
	if err != nil {
		return err
	}
	delete(b.running, tok)
	b.route(backend.Message{TargetInstanceID: a.instanceID, TargetExecutionID: a.executionID, Event: result.Clone()})
	b.notify()
	return nil
}

// AbandonActivityWorkItem implements backend.Backend.
func (b *Backend) AbandonActivityWorkItem(ctx context.Context, wi *backend.ActivityWorkItem, delay time.Duration) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	tok, a, err := b.activityLease(wi)
	if err != nil {
		return err
	}
	delete(b.running, tok)
	a.visibleAt = b.now().Add(delay)
	b.activities = append(b.activities, a)
	b.notify()
	return nil
}

// SendEvent implements backend.Client.
func (b *Backend) SendEvent(ctx context.Context, m backend.Message) error {
	if m.Event == nil {
		return fmt.Errorf("send event: nil event")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	m.Event = m.Event.Clone()
	b.route(m)
	b.notify()
	return nil
}

// GetInstance implements backend.Client.
func (b *Backend) GetInstance(ctx context.Context, id string, fetchInput bool) (*backend.InstanceState, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	in, ok := b.instances[id]
	if !ok {
		return nil, fmt.Errorf("instance %s: %w", id, backend.ErrInstanceNotFound)
	}
	return copyState(&in.state, fetchInput), nil
}

func copyState(s *backend.InstanceState, fetchInput bool) *backend.InstanceState {
	c := *s
	if !fetchInput {
		c.Input = ""
	}
	if s.FailureDetails != nil {
		fd := *s.FailureDetails
		c.FailureDetails = &fd
	}
	return &c
}

// GetHistory implements backend.Client.
func (b *Backend) GetHistory(ctx context.Context, id string) ([]*history.Event, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	in, ok := b.instances[id]
	if !ok {
		return nil, fmt.Errorf("instance %s: %w", id, backend.ErrInstanceNotFound)
	}
	return cloneEvents(in.history), nil
}

// QueryInstances implements backend.Client. Instances are ordered by
// creation time, then id; the continuation token is an offset.
func (b *Backend) QueryInstances(ctx context.Context, q backend.InstanceQuery) (*backend.InstancePage, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var all []*backend.InstanceState
	for id, in := range b.instances {
		entity := strings.HasPrefix(id, "@")
		switch {
		case q.EntitiesOnly && !entity, !q.EntitiesOnly && !q.IncludeEntities && entity:
			continue
		case len(q.RuntimeStatus) > 0 && !slices.Contains(q.RuntimeStatus, in.state.RuntimeStatus):
			continue
		case !q.CreatedFrom.IsZero() && in.state.CreatedTime.Before(q.CreatedFrom):
			continue
		case !q.CreatedTo.IsZero() && in.state.CreatedTime.After(q.CreatedTo):
			continue
		case !strings.HasPrefix(id, q.InstanceIDPrefix):
			continue
		}
		all = append(all, copyState(&in.state, q.FetchInput))
	}
	slices.SortFunc(all, func(x, y *backend.InstanceState) int {
		return cmp.Or(x.CreatedTime.Compare(y.CreatedTime), cmp.Compare(x.InstanceID, y.InstanceID))
	})
	start := 0
	if q.ContinuationToken != "" {
		n, err := strconv.Atoi(q.ContinuationToken)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("query instances: bad continuation token %q", q.ContinuationToken)
		}
		start = min(n, len(all))
	}
	size := q.PageSize
	if size <= 0 {
		size = 100
	}
	end := min(start+size, len(all))
	page := &backend.InstancePage{Instances: all[start:end]}
	if end < len(all) {
		page.ContinuationToken = strconv.Itoa(end)
	}
	return page, nil
}

// PurgeInstance implements backend.Client; a work item in flight for the
// instance is lost.
func (b *Backend) PurgeInstance(ctx context.Context, id string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.instances[id]; !ok {
		return fmt.Errorf("purge %s: %w", id, backend.ErrInstanceNotFound)
	}
	b.purge(id)
	return nil
}

func (b *Backend) purge(id string) {
	delete(b.instances, id)
	b.delayed = slices.DeleteFunc(b.delayed, func(m backend.Message) bool { return m.TargetInstanceID == id })
}

// PurgeInstances implements backend.Client.
func (b *Backend) PurgeInstances(ctx context.Context, f backend.PurgeFilter) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for id, in := range b.instances {
		s := &in.state
		switch {
		case !s.RuntimeStatus.Terminal(),
			len(f.RuntimeStatus) > 0 && !slices.Contains(f.RuntimeStatus, s.RuntimeStatus),
			!f.CreatedFrom.IsZero() && s.CreatedTime.Before(f.CreatedFrom),
			!f.CreatedTo.IsZero() && s.CreatedTime.After(f.CreatedTo):
			continue
		}
		b.purge(id)
		n++
	}
	return n, nil
}

// SetInstanceState implements backend.Client.
func (b *Backend) SetInstanceState(ctx context.Context, s *backend.InstanceState) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	in, ok := b.instances[s.InstanceID]
	if !ok {
		return fmt.Errorf("set state of %s: %w", s.InstanceID, backend.ErrInstanceNotFound)
	}
	in.state = *copyState(s, true)
	b.notify()
	return nil
}

func cloneEvents(es []*history.Event) []*history.Event {
	out := make([]*history.Event, len(es))
	for i, e := range es {
		out[i] = e.Clone()
	}
	return out
}
