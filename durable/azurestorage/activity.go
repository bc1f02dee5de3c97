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
	defer b.endActivity(st)
	orch := history.Instance{InstanceID: wi.InstanceID, ExecutionID: wi.ExecutionID}
	if _, err := b.send(ctx, orch, result, orch, time.Time{}, false); err != nil {
		return fmt.Errorf("send activity result for %s: %w", wi.InstanceID, err)
	}
	b.ackLater([]*qmsg{st.m})
	return nil
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
