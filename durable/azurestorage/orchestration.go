package azurestorage

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
)

// session holds the messages of one instance. At most one work item per
// instance is out at a time (locked).
type session struct {
	id        string
	partition int
	pending   []*qmsg // not yet handed out
	parked    []*qmsg // carried over: handed out with the next work item, do not make the session ready
	inflight  []*qmsg // in the work item being processed
	locked    bool
	queued    bool // in Backend.ready
}

func (s *session) empty() bool {
	return !s.locked && len(s.pending) == 0 && len(s.parked) == 0 && len(s.inflight) == 0
}

// cachedInstance is an instance's committed state as this process last
// wrote or read it. It is replaced, never changed, so a work item may keep
// a pointer to it.
type cachedInstance struct {
	partition   int
	executionID string
	history     []*history.Event
	etag        azcore.ETag
	applied     []string // recently consumed message ids, oldest first
	// unacked holds the consumed messages not known to be out of their
	// queue yet; it is shared with the instance's next cached states.
	unacked      *ackBook
	customStatus string
}

func (c *cachedInstance) hasApplied(id string) bool {
	return slices.Contains(c.applied, id) || c.unacked.has(id)
}

// orchState is an orchestration work item's private state.
type orchState struct {
	sess     *session
	msgs     []*qmsg // msgs[i] carried NewEvents[i]
	ci       *cachedInstance
	newStart bool
	done     bool
}

// addToSession adds a fetched or locally delivered control message to its
// instance's session. A message already held (fetched again after its
// visibility ended) only refreshes the receipt.
func (b *Backend) addToSession(m *qmsg) {
	b.mu.Lock()
	defer b.mu.Unlock()
	id := m.env.Instance.InstanceID
	s := b.sessions[id]
	if s == nil {
		s = &session{id: id, partition: m.queue}
		b.sessions[id] = s
	}
	for _, list := range [][]*qmsg{s.pending, s.parked, s.inflight} {
		for _, x := range list {
			if x.id == m.id {
				x.receipt, x.visibleUntil, x.dequeues = m.receipt, m.visibleUntil, m.dequeues
				return
			}
		}
	}
	s.pending = append(s.pending, m)
	b.buffered[s.partition]++
	b.markReadyLocked(s)
}

func (b *Backend) markReadyLocked(s *session) {
	if s.locked || s.queued || len(s.pending) == 0 || b.sessions[s.id] != s {
		return
	}
	s.queued = true
	b.ready = append(b.ready, s)
	select {
	case b.readyCh <- struct{}{}:
	default:
	}
}

// forgetSessionLocked drops a session's pending messages from the backlog
// count (the messages themselves come back when their visibility ends).
func (b *Backend) forgetSessionLocked(s *session) {
	b.buffered[s.partition] -= len(s.pending)
	dropHandovers(b, s.pending)
	dropHandovers(b, s.parked)
	s.pending, s.parked = nil, nil
}

// unlockLocked ends a work item on s.
func (b *Backend) unlockLocked(s *session) {
	s.locked = false
	s.inflight = nil
	b.inflight--
	if b.inflight == 0 && b.idle != nil {
		close(b.idle)
		b.idle = nil
	}
	if !b.ownsLocked(s.partition) {
		b.forgetSessionLocked(s)
	}
	if s.empty() && b.sessions[s.id] == s {
		delete(b.sessions, s.id)
		return
	}
	b.markReadyLocked(s)
}

// requeue returns a work item's messages to its session, ready again after
// delay (the messages stay invisible in their queue).
func (b *Backend) requeue(s *session, msgs []*qmsg, delay time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ownsLocked(s.partition) {
		s.pending = append(slices.Clone(msgs), s.pending...)
		b.buffered[s.partition] += len(msgs)
	} else {
		dropHandovers(b, msgs)
	}
	if delay <= 0 {
		b.unlockLocked(s)
		return
	}
	s.locked = true // keep others off until the delay ends
	s.inflight = nil
	time.AfterFunc(delay, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		b.unlockLocked(s)
	})
}

// release ends a work item whose messages were all dealt with.
func (b *Backend) release(s *session) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.unlockLocked(s)
}

func (b *Backend) invalidate(id string) {
	b.mu.Lock()
	delete(b.cache, id)
	b.mu.Unlock()
}

func (b *Backend) evictLocked() {
	if len(b.cache) <= b.opts.MaxCachedInstances {
		return
	}
	target := b.opts.MaxCachedInstances * 9 / 10
	for id := range b.cache {
		if s := b.sessions[id]; s != nil && s.locked {
			continue
		}
		delete(b.cache, id)
		if len(b.cache) <= target {
			return
		}
	}
}

// NextOrchestrationWorkItem hands out the next instance with messages: its
// history (from the cache, or read from the History table) and its new
// events, with duplicates dropped, early completions deferred and events
// for unknown or finished instances moved to the poison queue.
func (b *Backend) NextOrchestrationWorkItem(ctx context.Context) (*backend.OrchestrationWorkItem, error) {
	for {
		if b.stopped.Load() {
			return nil, backend.ErrStopped
		}
		b.mu.Lock()
		var s *session
		for len(b.ready) > 0 && s == nil {
			c := b.ready[0]
			b.ready = b.ready[1:]
			c.queued = false
			if !c.locked && len(c.pending) > 0 && b.sessions[c.id] == c {
				s = c
			}
		}
		if s == nil {
			b.mu.Unlock()
			select {
			case <-b.readyCh:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-b.stopCh:
				return nil, backend.ErrStopped
			}
		}
		if len(b.ready) > 0 {
			select {
			case b.readyCh <- struct{}{}:
			default:
			}
		}
		s.locked = true
		b.inflight++
		b.buffered[s.partition] -= len(s.pending)
		msgs := append(s.parked, s.pending...)
		s.parked, s.pending = nil, nil
		s.inflight = slices.Clone(msgs) // buildWorkItem sorts msgs without the lock

		ci := b.cache[s.id]
		b.mu.Unlock()

		wi, err := b.buildWorkItem(ctx, s, msgs, ci)
		if err != nil {
			if ctx.Err() != nil {
				b.requeue(s, msgs, 0)
				return nil, ctx.Err()
			}
			if b.logLimit.allow() {
				b.log.Warn("cannot prepare work item; retrying", "instance_id", s.id, "error", err)
			}
			b.requeue(s, msgs, time.Second)
			continue
		}
		if wi == nil {
			b.release(s)
			continue
		}
		return wi, nil
	}
}

// answerOf returns the scheduling event type and id that e answers.
func answerOf(e *history.Event) (history.Type, int, bool) {
	switch e.EventType {
	case history.TaskCompleted, history.TaskFailed:
		return history.TaskScheduled, e.TaskScheduledID, true
	case history.SubOrchestrationInstanceCompleted, history.SubOrchestrationInstanceFailed:
		return history.SubOrchestrationInstanceCreated, e.TaskScheduledID, true
	case history.TimerFired:
		return history.TimerCreated, e.TimerID, true
	}
	return 0, 0, false
}

// isEntityID reports whether an instance id names a durable entity
// ("@name@key"); entities have no start message.
func isEntityID(id string) bool { return strings.HasPrefix(id, "@") }

// answeredIn reports whether e answers a task, timer or sub-orchestration
// whose answer hist already holds.
func answeredIn(hist []*history.Event, e *history.Event) bool {
	t, id, ok := answerOf(e)
	return ok && isAnswered(hist, t, id)
}

func isScheduled(hist []*history.Event, t history.Type, id int) bool {
	return slices.ContainsFunc(hist, func(h *history.Event) bool { return h.EventType == t && h.EventID == id })
}

func isAnswered(hist []*history.Event, t history.Type, id int) bool {
	return slices.ContainsFunc(hist, func(h *history.Event) bool {
		ht, hid, ok := answerOf(h)
		return ok && ht == t && hid == id
	})
}

type verdict int

const (
	keep verdict = iota
	drop
	deferIt
	poisonIt
)

// buildWorkItem loads the instance's state if needed and sorts its
// messages into kept, dropped, deferred and poisoned ones. It returns nil
// when nothing is left to process.
func (b *Backend) buildWorkItem(ctx context.Context, s *session, msgs []*qmsg, ci *cachedInstance) (*backend.OrchestrationWorkItem, error) {
	if ci == nil {
		lh, err := b.readHistory(ctx, s.id)
		if err != nil {
			return nil, err
		}
		b.stats.loads.Add(1)
		if lh.etag != "" {
			if err := b.recoverCheckpoint(ctx, s.id, lh); err != nil {
				return nil, err
			}
		}
		// The consumed messages that the checkpoint left perhaps queued
		// are acknowledged now that it is finished.
		unacked := b.settleUnacked(ctx, s.partition, lh.unacked)
		ci = &cachedInstance{partition: s.partition, executionID: lh.executionID, history: lh.events, etag: lh.etag, applied: lh.applied, unacked: unacked, customStatus: lh.customStatus}
		b.mu.Lock()
		b.cache[s.id] = ci
		b.evictLocked()
		b.mu.Unlock()
	}
	// Starts first, then in enqueue order.
	slices.SortStableFunc(msgs, func(x, y *qmsg) int {
		xs, ys := x.env.Event.EventType == history.ExecutionStarted, y.env.Event.EventType == history.ExecutionStarted
		if xs != ys {
			if xs {
				return -1
			}
			return 1
		}
		if c := x.inserted.Compare(y.inserted); c != 0 {
			return c
		}
		return cmp.Compare(x.env.SequenceNumber, y.env.SequenceNumber)
	})

	hist, curExec := ci.history, ci.executionID
	terminal := terminalHistory(hist)
	newStart := false
	var row *backend.InstanceState
	rowChecked := false
	seen := map[[2]int]bool{}
	var kept, dropped []*qmsg
	var events []*history.Event
	type poisoned struct {
		m      *qmsg
		reason string
	}
	var poisons []poisoned
	var deferred []*qmsg
	for _, m := range msgs {
		e, target := m.env.Event, m.env.Instance.ExecutionID
		v, reason := keep, ""
		switch {
		case ci.hasApplied(m.id):
			v = drop
		case e.EventType == history.ExecutionStarted:
			switch {
			case len(hist) > 0 && curExec == target:
				v = drop
			case newStart:
				v, reason = poisonIt, "a second start in one batch"
			case len(hist) > 0 && !terminal:
				v, reason = poisonIt, fmt.Sprintf("instance is running execution %s", curExec)
			default:
				newStart, curExec, hist, terminal = true, target, nil, false
			}
		case len(hist) == 0 && !newStart && isEntityID(s.id) && e.EventType == history.EventRaised:
			// An entity starts with its first message.
		case len(hist) == 0 && !newStart:
			if !rowChecked {
				var err error
				row, _, err = b.readInstanceRow(ctx, s.id)
				if err != nil && !errors.Is(err, backend.ErrInstanceNotFound) {
					return nil, err
				}
				rowChecked = true
			}
			switch {
			case row != nil && !row.RuntimeStatus.Terminal():
				v = deferIt // created, not started yet (scheduled start, or its start is still queued)
			case row == nil && m.dequeues+m.attempts < 3:
				v = deferIt // its start may be on the way
			case row == nil:
				v, reason = poisonIt, "instance not found"
			default:
				v, reason = poisonIt, fmt.Sprintf("instance has finished (%s)", row.RuntimeStatus)
			}
		case terminal && e.EventType == history.GenericEvent:
			// A rewind request for a failed execution: the client marks the
			// status row running before it sends one.
			if !rowChecked {
				var err error
				row, _, err = b.readInstanceRow(ctx, s.id)
				if err != nil && !errors.Is(err, backend.ErrInstanceNotFound) {
					return nil, err
				}
				rowChecked = true
			}
			if row == nil || row.RuntimeStatus.Terminal() {
				v, reason = poisonIt, "instance has finished"
			}
		case (target == "" || target == curExec) && answeredIn(hist, e):
			v = drop // a duplicate answer, also after the instance finished
		case terminal:
			v, reason = poisonIt, "instance has finished"
		case target != "" && target != curExec:
			v, reason = poisonIt, fmt.Sprintf("execution %s is not the current execution %s", target, curExec)
		default:
			if t, id, ok := answerOf(e); ok {
				switch {
				case isAnswered(hist, t, id) || seen[[2]int{int(t), id}]:
					v = drop
				case !isScheduled(hist, t, id) && m.dequeues < 10:
					v = deferIt
				case !isScheduled(hist, t, id):
					v, reason = poisonIt, fmt.Sprintf("answers %s #%d, which the execution never scheduled", t, id)
				default:
					seen[[2]int{int(t), id}] = true
				}
			}
		}
		switch v {
		case keep:
			kept = append(kept, m)
			events = append(events, e)
		case drop:
			dropped = append(dropped, m)
		case deferIt:
			deferred = append(deferred, m)
		case poisonIt:
			poisons = append(poisons, poisoned{m, reason})
		}
	}
	if len(dropped) > 0 {
		b.stats.dropped.Add(int64(len(dropped)))
		b.log.Debug("duplicate messages dropped", "instance_id", s.id, "count", len(dropped))
		// Copies of consumed messages: once deleted, they leave the book.
		b.ackConsumed(ctx, ci.unacked, dropped, true)
	}
	for _, p := range poisons {
		b.poisonMessage(ctx, p.m, p.reason)
	}
	for _, m := range deferred {
		b.mu.Lock()
		m.attempts++
		a := m.attempts
		b.mu.Unlock()
		b.stats.deferred.Add(1)
		b.hide(ctx, m, min(time.Second<<min(a-1, 5), 30*time.Second))
	}
	b.mu.Lock()
	s.inflight = kept
	b.mu.Unlock()
	if len(kept) == 0 {
		return nil, nil
	}
	wi := &backend.OrchestrationWorkItem{InstanceID: s.id, NewEvents: events, State: &orchState{sess: s, msgs: kept, ci: ci, newStart: newStart}}
	if !newStart {
		wi.ExecutionID = ci.executionID
		wi.History = slices.Clone(ci.history)
	}
	return wi, nil
}

// splitCarryover separates the work item's messages the runtime consumed
// from those it carried over; carried-over events that match no message are
// returned for re-sending.
func splitCarryover(wi *backend.OrchestrationWorkItem, st *orchState, carry []*history.Event) (consumed, parked []*qmsg, unmatched []*history.Event) {
	taken := make([]bool, len(st.msgs))
	for _, e := range carry {
		found := -1
		for i, ne := range wi.NewEvents {
			if !taken[i] && ne == e {
				found = i
				break
			}
		}
		if found < 0 {
			for i, ne := range wi.NewEvents {
				if !taken[i] && reflect.DeepEqual(ne, e) {
					found = i
					break
				}
			}
		}
		if found < 0 || found >= len(st.msgs) {
			unmatched = append(unmatched, e)
			continue
		}
		taken[found] = true
	}
	for i, m := range st.msgs {
		if taken[i] {
			parked = append(parked, m)
		} else {
			consumed = append(consumed, m)
		}
	}
	return consumed, parked, unmatched
}

// appendRecent adds the ids of the messages a checkpoint consumed to the
// recent ids and keeps the last recentIDs of them. (Every consumed message
// that may still be queued is also in the instance's ackBook, which has
// no such bound.)
func appendRecent(applied []string, msgs []*qmsg) []string {
	out := slices.Clone(applied)
	for _, m := range msgs {
		if m.via == nil { // a hand-over never comes back as a control message
			out = append(out, m.id)
		}
	}
	if len(out) > recentIDs {
		out = out[len(out)-recentIDs:]
	}
	return out
}

// completeState fills the status row from history where the runtime left
// fields empty.
func completeState(id, executionID string, c *backend.OrchestrationCompletion, full []*history.Event) backend.InstanceState {
	st := c.State
	st.InstanceID, st.ExecutionID = id, executionID
	d := deriveState(id, full, c.State.CustomStatus)
	if st.Name == "" {
		st.Name, st.Version = d.Name, d.Version
	}
	if st.RuntimeStatus == "" {
		st.RuntimeStatus = d.RuntimeStatus
	}
	if st.Input == "" {
		st.Input = d.Input
	}
	if st.CreatedTime.IsZero() {
		st.CreatedTime = d.CreatedTime
	}
	if st.ScheduledStartTime.IsZero() {
		st.ScheduledStartTime = d.ScheduledStartTime
	}
	if st.Generation == 0 {
		st.Generation = d.Generation
	}
	if st.Tags == nil {
		st.Tags = d.Tags
	}
	if st.RuntimeStatus.Terminal() {
		if st.Output == "" && st.FailureDetails == nil {
			st.Output, st.FailureDetails = d.Output, d.FailureDetails
		}
		if st.CompletedTime.IsZero() {
			st.CompletedTime = d.CompletedTime
		}
	}
	return st
}

// CompleteOrchestrationWorkItem commits c: (1) the new history rows and the
// sentinel (optimistic concurrency on the sentinel ETag; the sentinel also
// records the outbound messages and the consumed message ids), (2) the
// outbound messages, (3) the Instances row, (4) deletion of the consumed
// messages. ErrWorkItemLost means step 1 did not happen; the messages are
// redelivered.
func (b *Backend) CompleteOrchestrationWorkItem(ctx context.Context, wi *backend.OrchestrationWorkItem, c *backend.OrchestrationCompletion) error {
	st, ok := wi.State.(*orchState)
	if !ok || st.done {
		return errors.New("complete orchestration work item: not an outstanding work item of this backend")
	}
	st.done = true
	s, ci, id := st.sess, st.ci, wi.InstanceID
	if !b.owns(s.partition) {
		b.invalidate(id)
		dropHandovers(b, st.msgs)
		b.release(s)
		return fmt.Errorf("%w: partition %s is no longer owned", backend.ErrWorkItemLost, b.names.controlQueues[s.partition])
	}
	execID := c.ExecutionID
	if execID == "" {
		execID = wi.ExecutionID
		for _, e := range c.NewHistory {
			if e.EventType == history.ExecutionStarted && e.OrchestrationInstance != nil {
				execID = e.OrchestrationInstance.ExecutionID
			}
		}
	}
	reset := st.newStart || c.ResetHistory || execID != ci.executionID
	base := len(ci.history)
	if reset {
		base = 0
	}
	consumed, parked, unmatched := splitCarryover(wi, st, c.Carryover)
	applied := appendRecent(ci.applied, consumed)
	// The sentinel lists every consumed message not known to be deleted:
	// the earlier ones still in the book and this checkpoint's, whose
	// deletes start only once the checkpoint is complete. A copy of any of
	// them is recognised when it comes back, here or in the next owner.
	receipts := b.consumedReceipts(consumed)
	book := ci.unacked
	if book == nil {
		book = newAckBook(nil)
	}
	unacked := book.with(receipts)
	t0 := time.Now()
	at := b.now().Truncate(time.Millisecond)
	etag := ci.etag
	if len(c.NewHistory) > 0 || reset || len(consumed) > 0 {
		pending, err := encodeOutbound(c.Outbound, c.NewHistory, base)
		if err != nil {
			b.requeue(s, st.msgs, time.Second)
			return fmt.Errorf("%w: %v", backend.ErrWorkItemLost, err)
		}
		recent, _ := json.Marshal(applied)
		ua, _ := json.Marshal(unacked)
		extra := map[string]any{colPending: pending, colPending + "BlobName": "", colRecent: string(recent), colRecent + "BlobName": "",
			colUnacked: string(ua), colUnacked + "BlobName": "",
			colCustomStatus: c.State.CustomStatus, colCustomStatus + "BlobName": ""}
		if etag, err = b.writeCheckpoint(ctx, escapeKey(id), ci.etag, execID, base, c.NewHistory, extra, at); err != nil {
			b.invalidate(id)
			var ce *conflictError
			if errors.As(err, &ce) {
				b.log.Info("checkpoint conflict; the work item will be retried", "instance_id", id, "error", err)
				b.requeue(s, st.msgs, 0)
			} else {
				b.requeue(s, st.msgs, time.Second)
			}
			return fmt.Errorf("%w: %v", backend.ErrWorkItemLost, err)
		}
	}
	// The messages are consumed by a committed checkpoint: until their
	// deletes are seen, their copies are dropped.
	book.add(receipts)
	if b.failAfterHistory != nil && b.failAfterHistory(id, c) {
		// Simulated crash: nothing after the history write happens.
		b.invalidate(id)
		dropHandovers(b, st.msgs)
		b.mu.Lock()
		b.forgetSessionLocked(s)
		b.unlockLocked(s)
		b.mu.Unlock()
		return errors.New("simulated crash after the history write")
	}
	var full []*history.Event
	if reset {
		full = slices.Clone(c.NewHistory)
	} else {
		full = append(slices.Clip(ci.history), c.NewHistory...)
	}
	// From here on history is committed: failures leave the messages to be
	// redelivered, and the next history load finishes the checkpoint.
	fail := func(err error) error {
		b.invalidate(id)
		dropHandovers(b, st.msgs)
		b.release(s)
		return err
	}
	sender := history.Instance{InstanceID: id, ExecutionID: execID}
	out := make([]outMsg, 0, len(c.Outbound))
	for _, m := range c.Outbound {
		out = append(out, outMsg{target: history.Instance{InstanceID: m.TargetInstanceID, ExecutionID: m.TargetExecutionID}, event: m.Event, visibleAt: m.VisibleAt})
	}
	if err := b.sendAll(ctx, out, sender); err != nil {
		return fail(fmt.Errorf("send messages of %s: %w", id, err))
	}
	for _, e := range unmatched {
		m, err := b.send(ctx, history.Instance{InstanceID: id}, e, sender, time.Time{}, true)
		if err != nil {
			return fail(fmt.Errorf("carry over events of %s: %w", id, err))
		}
		if m != nil && m.local {
			parked = append(parked, m)
		}
	}
	t1 := time.Now()
	state := completeState(id, execID, c, full)
	newExec := slices.ContainsFunc(c.NewHistory, func(e *history.Event) bool { return e.EventType == history.ExecutionStarted })
	if err := b.writeInstanceRow(ctx, &state, newExec, at); err != nil {
		return fail(err)
	}
	b.log.Debug("checkpoint committed", "instance_id", id, "events", len(c.NewHistory), "outbound", len(c.Outbound),
		"history_and_send", t1.Sub(t0), "instance_row", time.Since(t1))
	// The commit is durable: acknowledge in the background, so that the
	// instance's next work item need not wait. A message whose delete is
	// lost comes back and is dropped by its id (UnackedMessages).
	b.ackConsumed(context.Background(), book, consumed, false)

	nci := &cachedInstance{partition: s.partition, executionID: execID, history: full, etag: etag, applied: applied, unacked: book,
		customStatus: c.State.CustomStatus}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cache[id] = nci
	b.evictLocked()
	s.parked = append(s.parked, parked...)
	b.unlockLocked(s)
	return nil
}

// AbandonOrchestrationWorkItem returns the work item's messages: at once
// (delay 0, first abandon) or made invisible in their queue for the delay,
// which grows with repeated abandons (1 s, 2 s, … 5 min).
func (b *Backend) AbandonOrchestrationWorkItem(ctx context.Context, wi *backend.OrchestrationWorkItem, delay time.Duration) error {
	st, ok := wi.State.(*orchState)
	if !ok || st.done {
		return errors.New("abandon orchestration work item: not an outstanding work item of this backend")
	}
	st.done = true
	b.mu.Lock()
	attempts := 0
	for _, m := range st.msgs {
		m.attempts++
		attempts = max(attempts, m.attempts)
	}
	b.mu.Unlock()
	d := max(delay, abandonBackoff(attempts))
	if d <= 0 {
		b.requeue(st.sess, st.msgs, 0)
		return nil
	}
	for _, m := range st.msgs {
		b.hide(ctx, m, d)
	}
	b.release(st.sess)
	return nil
}

// abandonBackoff is the minimum redelivery delay after n abandons.
func abandonBackoff(n int) time.Duration {
	if n <= 1 {
		return 0
	}
	return min(time.Second<<min(n-2, 10), 5*time.Minute)
}
