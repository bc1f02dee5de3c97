package azurestorage

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
)

// actState is an activity work item's private state.
type actState struct {
	m        *qmsg
	stopOnce sync.Once
	stop     chan struct{}
	renewed  chan struct{}
	done     bool
}

func (b *Backend) wakeActivities() {
	select {
	case b.actWake <- struct{}{}:
	default:
	}
}

// deliverActivity queues an activity message for NextActivityWorkItem. A
// message already held (fetched again after its visibility ended) only
// refreshes the receipt.
func (b *Backend) deliverActivity(m *qmsg) {
	b.actMu.Lock()
	if x := b.actHeld[m.id]; x != nil {
		x.receipt, x.visibleUntil, x.dequeues = m.receipt, m.visibleUntil, m.dequeues
		b.actMu.Unlock()
		return
	}
	b.actHeld[m.id] = m
	b.actMu.Unlock()
	select {
	case b.activities <- m:
	default:
		// Full: forget it; it becomes visible again and is polled.
		b.actMu.Lock()
		delete(b.actHeld, m.id)
		b.actMu.Unlock()
	}
}

func (b *Backend) workItemPoller(ctx context.Context) {
	capacity := func() int { return cap(b.activities) - len(b.activities) }
	b.pollLoop(ctx, workItemQueue, b.actWake, capacity, func(ctx context.Context, m *qmsg) {
		if !b.receive(ctx, m) {
			return
		}
		if m.env.Event.EventType != history.TaskScheduled {
			b.poisonMessage(ctx, m, fmt.Sprintf("%s in the work-item queue", m.env.Event.EventType))
			return
		}
		if m.dequeues > 1 && b.alreadyAnswered(ctx, m) {
			b.stats.dropped.Add(1)
			_ = b.deleteMessage(ctx, m)
			return
		}
		b.deliverActivity(m)
	})
}

// NextActivityWorkItem hands out the next activity call. Its message's
// visibility is renewed while the activity runs.
func (b *Backend) NextActivityWorkItem(ctx context.Context) (*backend.ActivityWorkItem, error) {
	for {
		if b.stopped.Load() {
			return nil, backend.ErrStopped
		}
		var m *qmsg
		select {
		case m = <-b.activities:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-b.stopCh:
			return nil, backend.ErrStopped
		}
		b.actMu.Lock()
		held := b.actHeld[m.id] == m
		dequeues := max(m.dequeues, 1)
		b.actMu.Unlock()
		if !held {
			continue
		}
		st := &actState{m: m, stop: make(chan struct{}), renewed: make(chan struct{})}
		go b.renewActivity(st)
		return &backend.ActivityWorkItem{
			InstanceID: m.env.Instance.InstanceID, ExecutionID: m.env.Instance.ExecutionID, Event: m.env.Event,
			DequeueCount: dequeues, State: st,
		}, nil
	}
}

// renewActivity keeps an activity message invisible while it runs,
// extending the visibility when a third of it remains.
func (b *Backend) renewActivity(st *actState) {
	defer close(st.renewed)
	vt := b.opts.WorkItemQueueVisibilityTimeout
	for {
		b.actMu.Lock()
		until := st.m.visibleUntil
		b.actMu.Unlock()
		wait := time.Until(until) - vt/3
		if until.IsZero() {
			wait = vt / 2
		}
		t := time.NewTimer(max(wait, 0))
		select {
		case <-st.stop:
			t.Stop()
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		res, err := b.workItems.UpdateMessage(ctx, st.m.id, b.receipt(st.m), st.m.text, &azqueue.UpdateMessageOptions{VisibilityTimeout: to.Ptr(seconds(vt))})
		cancel()
		if err != nil {
			b.log.Warn("renew activity message", "message_id", st.m.id, "instance_id", st.m.env.Instance.InstanceID, "error", err)
			if isStatus(err, http.StatusNotFound, http.StatusBadRequest) {
				return // someone else holds it now; the duplicate result is dropped
			}
			b.actMu.Lock()
			st.m.visibleUntil = time.Now().Add(vt / 2)
			b.actMu.Unlock()
			continue
		}
		b.actMu.Lock()
		if res.PopReceipt != nil {
			st.m.receipt = *res.PopReceipt
		}
		st.m.visibleUntil = time.Now().Add(vt)
		if res.TimeNextVisible != nil {
			st.m.visibleUntil = *res.TimeNextVisible
		}
		b.actMu.Unlock()
	}
}

func (b *Backend) endActivity(st *actState) {
	st.stopOnce.Do(func() { close(st.stop) })
	<-st.renewed
	b.actMu.Lock()
	if b.actHeld[st.m.id] == st.m {
		delete(b.actHeld, st.m.id)
	}
	b.actMu.Unlock()
}

// CompleteActivityWorkItem sends result to the orchestration's control
// queue, then deletes the activity message.
func (b *Backend) CompleteActivityWorkItem(ctx context.Context, wi *backend.ActivityWorkItem, result *history.Event) error {
	st, ok := wi.State.(*actState)
	if !ok || st.done {
		return errors.New("complete activity work item: not an outstanding work item of this backend")
	}
	if result == nil || (result.EventType != history.TaskCompleted && result.EventType != history.TaskFailed) {
		return fmt.Errorf("complete activity work item: result must be TaskCompleted or TaskFailed")
	}
	st.done = true
	orch := history.Instance{InstanceID: wi.InstanceID, ExecutionID: wi.ExecutionID}
	if qi := partitionOf(wi.InstanceID, b.opts.PartitionCount); b.canHandOver(qi, result) {
		// Hand the result over in memory. The activity message stays
		// invisible (still renewed) until the checkpoint that records the
		// result deletes it; should this process die first, the message
		// comes back and the call is made again.
		env := &envelope{ActivityID: bindings.NewGUID(), Instance: orch, Event: result, SequenceNumber: b.seq.Add(1), Sender: orch}
		m := &qmsg{queue: qi, id: handoverPrefix + st.m.id, env: env, via: st, inserted: time.Now(), local: true}
		b.stats.local.Add(1)
		b.addToSession(m)
		return nil
	}
	defer b.endActivity(st)
	if _, err := b.send(ctx, orch, result, orch, time.Time{}, false); err != nil {
		return fmt.Errorf("send activity result for %s: %w", wi.InstanceID, err)
	}
	b.ackLater([]*qmsg{st.m})
	return nil
}

// handoverPrefix marks the ids of activity results handed over in memory.
const handoverPrefix = "handover:"

// Results handed over in memory count in their partition's backlog. Past
// ControlQueueBufferThreshold, small results are still handed over, up to
// handoverBacklog times the threshold: enqueued instead, they would only
// wait in the queue (its poller pauses at the threshold) at the cost of an
// enqueue, a poll share and a delete each.
const (
	handoverBacklog   = 4
	handoverSmallSize = 16 << 10
)

// canHandOver reports whether an activity result for partition i may be
// handed over in memory.
func (b *Backend) canHandOver(i int, result *history.Event) bool {
	if !b.started.Load() || b.stopped.Load() {
		return false
	}
	small := len(result.Result)+len(result.Details)+len(result.Reason) <= handoverSmallSize
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.ownsLocked(i) {
		return false
	}
	n, limit := b.buffered[i], b.opts.ControlQueueBufferThreshold
	return n < limit || (small && n < handoverBacklog*limit)
}

// ackHandover acknowledges a result handed over in memory, once the
// checkpoint that recorded it is written: it stops the renewal and deletes
// the activity message.
func (b *Backend) ackHandover(ctx context.Context, st *actState) error {
	b.endActivity(st)
	m := st.m
	err := b.retry(ctx, "delete message from "+b.queueName(m.queue), func() error {
		_, err := b.workItems.DeleteMessage(ctx, m.id, b.receipt(m), nil)
		if isStatus(err, http.StatusNotFound, http.StatusBadRequest) {
			return nil
		}
		return err
	})
	return err
}

// dropHandovers forgets the results handed over in memory among msgs
// without acknowledging them: their activity messages are no longer
// renewed, come back after their visibility timeout and are run again. It
// does not block (callers may hold b.mu).
func dropHandovers(b *Backend, msgs []*qmsg) {
	for _, m := range msgs {
		if m.via != nil {
			go b.endActivity(m.via)
		}
	}
}

// spillHandover makes a result handed over in memory durable on its own:
// it enqueues the result to the instance's control queue, visible after
// delay, and then deletes the activity message. Should the enqueue fail,
// the activity message comes back and the call is made again.
func (b *Backend) spillHandover(ctx context.Context, m *qmsg, delay time.Duration) {
	var visibleAt time.Time
	if delay > 0 {
		visibleAt = b.now().Add(delay)
	}
	_, err := b.send(ctx, m.env.Instance, m.env.Event, m.env.Sender, visibleAt, false)
	if err != nil {
		b.log.Warn("activity result not enqueued; the call will be repeated", "instance_id", m.env.Instance.InstanceID, "error", err)
		b.endActivity(m.via)
		return
	}
	if err := b.ackHandover(ctx, m.via); err != nil {
		b.log.Warn("acknowledge activity message", "message_id", m.via.m.id, "error", err)
	}
}

// spillHandovers spills every result handed over in memory that no work
// item has taken (at Stop).
func (b *Backend) spillHandovers(ctx context.Context) {
	b.mu.Lock()
	var held []*qmsg
	for _, s := range b.sessions {
		for _, list := range [][]*qmsg{s.pending, s.parked} {
			for _, m := range list {
				if m.via != nil {
					held = append(held, m)
				}
			}
		}
	}
	b.mu.Unlock()
	for _, m := range held {
		b.spillHandover(ctx, m, 0)
	}
}

// alreadyAnswered reports whether a redelivered activity message's result
// is already in its instance's history: the process that held the result
// died between the checkpoint that recorded it and the deletion of the
// message. Then the call is not made again. When the history comes from
// storage and the checkpoint looks interrupted (the Instances row is older),
// a copy of the recorded answer goes to the instance's control queue, so
// that its owner loads the history, finishes the checkpoint and drops the
// copy. Any failure to tell returns false: the call is made again.
func (b *Backend) alreadyAnswered(ctx context.Context, m *qmsg) bool {
	id, exec, task := m.env.Instance.InstanceID, m.env.Instance.ExecutionID, m.env.Event.EventID
	b.mu.Lock()
	ci := b.cache[id]
	b.mu.Unlock()
	if ci != nil && ci.executionID == exec {
		// Cached histories are fully committed checkpoints.
		return isAnswered(ci.history, history.TaskScheduled, task)
	}
	lh, err := b.readHistory(ctx, id)
	if err != nil || lh.executionID != exec {
		return false
	}
	var answer *history.Event
	for _, e := range lh.events {
		if t, tid, ok := answerOf(e); ok && t == history.TaskScheduled && tid == task {
			answer = e
		}
	}
	if answer == nil {
		return false
	}
	row, _, err := b.readInstanceRow(ctx, id)
	if err != nil && !errors.Is(err, backend.ErrInstanceNotFound) {
		return false
	}
	if row == nil || row.LastUpdatedTime.Before(lh.checkpointAt) {
		target := history.Instance{InstanceID: id, ExecutionID: exec}
		if _, err := b.send(ctx, target, answer.Clone(), target, time.Time{}, false); err != nil {
			return false
		}
	}
	return true
}

// AbandonActivityWorkItem makes the activity message visible again after
// delay (at least the back-off of its delivery count).
func (b *Backend) AbandonActivityWorkItem(ctx context.Context, wi *backend.ActivityWorkItem, delay time.Duration) error {
	st, ok := wi.State.(*actState)
	if !ok || st.done {
		return errors.New("abandon activity work item: not an outstanding work item of this backend")
	}
	st.done = true
	b.endActivity(st)
	b.actMu.Lock()
	st.m.attempts++
	n := st.m.attempts
	b.actMu.Unlock()
	b.hide(ctx, st.m, max(delay, abandonBackoff(n)))
	return nil
}
