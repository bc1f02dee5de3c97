package azurestorage

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/durable/history"
)

// workItemQueue is the queue index of h-workitems in qmsg.queue.
const workItemQueue = -1

// qmsg is one queue message this process holds.
type qmsg struct {
	queue int // control queue index, or workItemQueue
	id    string
	text  string // the body, needed again by UpdateMessage
	env   *envelope
	// Fields below change when the message is fetched again or its
	// visibility is updated; they are guarded by Backend.mu (control
	// messages) or Backend.actMu (activity messages).
	receipt      string
	visibleUntil time.Time
	dequeues     int
	inserted     time.Time
	attempts     int  // local deferrals and abandons
	local        bool // enqueued invisible for local delivery
	// via is set on an activity result handed over in memory (no queue
	// message of its own): acknowledging it deletes the activity message.
	via *actState
}

func (b *Backend) queueClient(i int) *azqueue.QueueClient {
	if i == workItemQueue {
		return b.workItems
	}
	return b.control[i]
}

func (b *Backend) queueName(i int) string {
	if i == workItemQueue {
		return b.names.workItemQueue
	}
	return b.names.controlQueues[i]
}

func (b *Backend) visibility(i int) time.Duration {
	if i == workItemQueue {
		return b.opts.WorkItemQueueVisibilityTimeout
	}
	return b.opts.ControlQueueVisibilityTimeout
}

// notBefore is the time a message's event is due: a timer's FireAt or a
// scheduled start.
func notBefore(e *history.Event) time.Time {
	switch e.EventType {
	case history.TimerFired:
		return e.FireAt
	case history.ExecutionStarted:
		if e.ScheduledStartTime != nil {
			return *e.ScheduledStartTime
		}
	}
	return time.Time{}
}

// encodeMessage builds the queue body of one event, spilling it to a gzip
// blob when it is over 45 KB.
func (b *Backend) encodeMessage(ctx context.Context, target history.Instance, e *history.Event, sender history.Instance) (string, *envelope, error) {
	env := &envelope{ActivityID: bindings.NewGUID(), Instance: target, Event: e, SequenceNumber: b.seq.Add(1), Sender: sender}
	body, err := encodeEnvelope(env)
	if err != nil {
		return "", nil, fmt.Errorf("encode %s message: %w", e.EventType, err)
	}
	if len(body) > maxMessageBytes {
		name := fmt.Sprintf("%s/message-%s-%s.json.gz", escapeKey(target.InstanceID), strings.ReplaceAll(env.ActivityID, "-", ""), e.EventType)
		if err := b.uploadLarge(ctx, name, body); err != nil {
			return "", nil, err
		}
		if body, err = compressedEnvelope(env.ActivityID, name, 0); err != nil {
			return "", nil, err
		}
	}
	return string(body), env, nil
}

// decodeMessage decodes a queue body, downloading a spilled envelope.
func (b *Backend) decodeMessage(ctx context.Context, text string) (*envelope, error) {
	env, err := decodeEnvelope([]byte(text))
	if err != nil {
		return nil, err
	}
	if env.CompressedBlobName == "" {
		return env, nil
	}
	data, err := b.downloadLarge(ctx, env.CompressedBlobName)
	if err != nil {
		return nil, err
	}
	inner, err := decodeEnvelope(data)
	if err != nil {
		return nil, fmt.Errorf("spilled message %s: %w", env.CompressedBlobName, err)
	}
	inner.CompressedBlobName = env.CompressedBlobName
	return inner, nil
}

// queueFor routes an event to a queue: activity calls to h-workitems,
// everything else to the target instance's control queue.
func (b *Backend) queueFor(e *history.Event, targetInstance string) int {
	if e.EventType == history.TaskScheduled {
		return workItemQueue
	}
	return partitionOf(targetInstance, b.opts.PartitionCount)
}

// canDeliverLocally reports whether a message for queue i may skip the
// poll: this process polls that queue and its local backlog is short.
func (b *Backend) canDeliverLocally(i int) bool {
	if !b.started.Load() || b.stopped.Load() {
		return false
	}
	if i == workItemQueue {
		return len(b.activities) < cap(b.activities)/2
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ownsLocked(i) && b.buffered[i] < b.opts.ControlQueueBufferThreshold
}

// send enqueues e for target. A message due now, for a queue this process
// polls, is enqueued invisible and handed to the local dispatcher with the
// receipt the enqueue returned (immediately, or by the caller when
// holdLocal is set; qmsg.local tells). A delayed message is enqueued with
// its delay (at most MaxMessageDelay per hop), the local poller is woken
// when it is due, and no qmsg is returned.
func (b *Backend) send(ctx context.Context, target history.Instance, e *history.Event, sender history.Instance, visibleAt time.Time, holdLocal bool) (*qmsg, error) {
	qi := b.queueFor(e, target.InstanceID)
	text, env, err := b.encodeMessage(ctx, target, e, sender)
	if err != nil {
		return nil, err
	}
	delay := time.Duration(0)
	if !visibleAt.IsZero() {
		delay = visibleAt.Sub(b.now())
	}
	local := delay <= 0 && b.canDeliverLocally(qi)
	var vis time.Duration
	switch {
	case delay > 0:
		vis = min(delay, b.opts.MaxMessageDelay)
	case local:
		vis = b.visibility(qi)
	}
	var res azqueue.EnqueueMessagesResponse
	err = b.retry(ctx, "enqueue to "+b.queueName(qi), func() error {
		var err error
		res, err = b.queueClient(qi).EnqueueMessage(ctx, text, &azqueue.EnqueueMessageOptions{TimeToLive: to.Ptr(int32(-1)), VisibilityTimeout: to.Ptr(seconds(vis))})
		return err
	})
	if err != nil {
		return nil, err
	}
	if delay > 0 {
		if qi == workItemQueue || b.owns(qi) {
			b.wakeLater(qi, vis+50*time.Millisecond)
		}
		return nil, nil
	}
	if !local {
		if qi == workItemQueue {
			b.wakeActivities()
		} else {
			b.wakePartition(qi)
		}
	}
	if len(res.Messages) == 0 {
		return nil, nil
	}
	em := res.Messages[0]
	m := &qmsg{queue: qi, id: *em.MessageID, receipt: *em.PopReceipt, text: text, env: env, local: local, inserted: time.Now()}
	if em.InsertionTime != nil {
		m.inserted = *em.InsertionTime
	}
	m.visibleUntil = time.Now().Add(vis)
	if em.TimeNextVisible != nil {
		m.visibleUntil = *em.TimeNextVisible
	}
	if local && !holdLocal {
		b.deliver(m)
	}
	return m, nil
}

// deliver hands a message to the local dispatcher.
func (b *Backend) deliver(m *qmsg) {
	b.stats.local.Add(1)
	if m.queue == workItemQueue {
		b.deliverActivity(m)
		return
	}
	b.addToSession(m)
}

// sendAll sends messages concurrently (at most 16 at a time), each retried
// through storage outages.
func (b *Backend) sendAll(ctx context.Context, msgs []outMsg, sender history.Instance) error {
	if len(msgs) == 1 {
		_, err := b.send(ctx, msgs[0].target, msgs[0].event, sender, msgs[0].visibleAt, false)
		return err
	}
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for _, m := range msgs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if _, err := b.send(ctx, m.target, m.event, sender, m.visibleAt, false); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return first
}

// outMsg is one message to send.
type outMsg struct {
	target    history.Instance
	event     *history.Event
	visibleAt time.Time
}

// receipt reads m's current pop receipt.
func (b *Backend) receipt(m *qmsg) string {
	if m.queue == workItemQueue {
		b.actMu.Lock()
		defer b.actMu.Unlock()
		return m.receipt
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return m.receipt
}

// deleteMessage acknowledges m. A message already gone, or fetched again
// (receipt changed), is not an error: its copy is recognised as a
// duplicate when it comes back.
func (b *Backend) deleteMessage(ctx context.Context, m *qmsg) error {
	if m.via != nil {
		return b.ackHandover(ctx, m.via)
	}
	err := b.retry(ctx, "delete message from "+b.queueName(m.queue), func() error {
		_, err := b.queueClient(m.queue).DeleteMessage(ctx, m.id, b.receipt(m), nil)
		if isStatus(err, http.StatusNotFound, http.StatusBadRequest) {
			return nil
		}
		return err
	})
	return err
}

// deleteAll acknowledges messages concurrently; failures are logged (the
// messages come back and are dropped as duplicates).
func (b *Backend) deleteAll(ctx context.Context, msgs []*qmsg) {
	if len(msgs) == 1 {
		if err := b.deleteMessage(ctx, msgs[0]); err != nil {
			b.log.Warn("acknowledge message", "queue", b.queueName(msgs[0].queue), "message_id", msgs[0].id, "error", err)
		}
		return
	}
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, m := range msgs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := b.deleteMessage(ctx, m); err != nil {
				b.log.Warn("acknowledge message", "queue", b.queueName(m.queue), "message_id", m.id, "error", err)
			}
		})
	}
	wg.Wait()
}

// ackLater deletes messages whose effects are committed, in the
// background; Stop waits for it. The returned channel is closed when the
// deletes are done (nil when there is nothing to delete).
func (b *Backend) ackLater(msgs []*qmsg) <-chan struct{} {
	if len(msgs) == 0 {
		return nil
	}
	done := make(chan struct{})
	b.acks.Go(func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		b.deleteAll(ctx, msgs)
	})
	return done
}

// hide makes m invisible for d (abandon, defer) and wakes the local poller
// when it is due again. It keeps the body unchanged.
func (b *Backend) hide(ctx context.Context, m *qmsg, d time.Duration) {
	if m.via != nil {
		b.spillHandover(ctx, m, d)
		return
	}
	err := b.retry(ctx, "update message visibility", func() error {
		res, err := b.queueClient(m.queue).UpdateMessage(ctx, m.id, b.receipt(m), m.text, &azqueue.UpdateMessageOptions{VisibilityTimeout: to.Ptr(seconds(d))})
		if err != nil {
			return err
		}
		if res.PopReceipt != nil {
			mu := &b.mu
			if m.queue == workItemQueue {
				mu = &b.actMu
			}
			mu.Lock()
			m.receipt = *res.PopReceipt
			mu.Unlock()
		}
		return nil
	})
	if err != nil && !isStatus(err, http.StatusNotFound, http.StatusBadRequest) {
		b.log.Warn("abandon message", "queue", b.queueName(m.queue), "message_id", m.id, "error", err)
	}
	if m.queue == workItemQueue || b.owns(m.queue) {
		b.wakeLater(m.queue, d+50*time.Millisecond)
	}
}

// poisonRecord is the body of an h-poison message.
type poisonRecord struct {
	Reason     string    `json:"Reason"`
	Queue      string    `json:"Queue"`
	MessageID  string    `json:"MessageId"`
	InstanceID string    `json:"InstanceId,omitempty"`
	EventType  string    `json:"EventType,omitempty"`
	PoisonedAt time.Time `json:"PoisonedAt"`
	Message    string    `json:"Message"`
}

// poisonMessage moves m to h-poison with the reason, then deletes it.
func (b *Backend) poisonMessage(ctx context.Context, m *qmsg, reason string) {
	rec := poisonRecord{Reason: reason, Queue: b.queueName(m.queue), MessageID: m.id, PoisonedAt: b.now(), Message: m.text}
	if m.via != nil {
		body, _ := encodeEnvelope(m.env)
		rec.Message = string(body)
	}
	if m.env != nil && m.env.Event != nil {
		rec.InstanceID, rec.EventType = m.env.Instance.InstanceID, m.env.Event.EventType.String()
	}
	if len(rec.Message) > 40*1024 {
		rec.Message = rec.Message[:40*1024]
	}
	body, _ := json.Marshal(rec)
	b.log.Warn("message moved to poison queue", "queue", rec.Queue, "message_id", m.id, "instance_id", rec.InstanceID, "event", rec.EventType, "reason", reason)
	err := b.retry(ctx, "enqueue poison message", func() error {
		_, err := b.poison.EnqueueMessage(ctx, string(body), &azqueue.EnqueueMessageOptions{TimeToLive: to.Ptr(int32(-1))})
		return err
	})
	if err != nil {
		b.log.Error("poison message not recorded; leaving it in its queue", "message_id", m.id, "error", err)
		dropHandovers(b, []*qmsg{m})
		return
	}
	b.stats.poisoned.Add(1)
	_ = b.deleteMessage(ctx, m)
}

// nextBackoff is the randomized doubling of idle polls, from 50 ms to max.
func nextBackoff(d, maxD time.Duration) time.Duration {
	if d <= 0 {
		return 50 * time.Millisecond
	}
	return min(jitter(2*d), maxD)
}

// pollLoop polls q until ctx ends. capacity says how many messages may be
// taken now (0: wait); handle takes each fetched message.
func (b *Backend) pollLoop(ctx context.Context, qi int, wake <-chan struct{}, capacity func() int, handle func(context.Context, *qmsg)) {
	q := b.queueClient(qi)
	var idle, failing time.Duration
	for ctx.Err() == nil {
		n := min(capacity(), b.opts.ControlQueueBatchSize)
		if n <= 0 {
			if alive, _ := waitWake(ctx, wake, 50*time.Millisecond); !alive {
				return
			}
			continue
		}
		res, err := q.DequeueMessages(ctx, &azqueue.DequeueMessagesOptions{NumberOfMessages: to.Ptr(int32(n)), VisibilityTimeout: to.Ptr(seconds(b.visibility(qi)))})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failing = min(max(2*failing, 200*time.Millisecond), 10*time.Second)
			if b.logLimit.allow() {
				b.log.Warn("queue poll failed; backing off", "queue", b.queueName(qi), "error", err, "retry_in", failing)
			}
			sleep(ctx, jitter(failing))
			continue
		}
		failing = 0
		if len(res.Messages) == 0 {
			idle = nextBackoff(idle, b.opts.MaxQueuePollingInterval)
			alive, woken := waitWake(ctx, wake, idle)
			if !alive {
				return
			}
			if woken {
				idle = 0 // a message this process sent, or a timer, is due
			}
			continue
		}
		idle = 0
		for _, dm := range res.Messages {
			m := &qmsg{queue: qi, id: *dm.MessageID, receipt: *dm.PopReceipt, text: *dm.MessageText}
			if dm.DequeueCount != nil {
				m.dequeues = int(*dm.DequeueCount)
			}
			if dm.InsertionTime != nil {
				m.inserted = *dm.InsertionTime
			}
			if dm.TimeNextVisible != nil {
				m.visibleUntil = *dm.TimeNextVisible
			}
			handle(ctx, m)
		}
	}
}

// waitWake waits for d or a wake-up; it reports whether ctx is still live
// and whether a wake-up came.
func waitWake(ctx context.Context, wake <-chan struct{}, d time.Duration) (alive, woken bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false, false
	case <-t.C:
		return true, false
	case <-wake:
		return true, true
	}
}

// receive decodes a fetched message and re-delays it when it came early;
// it returns false when the message was consumed here.
func (b *Backend) receive(ctx context.Context, m *qmsg) bool {
	env, err := b.decodeMessage(ctx, m.text)
	if err != nil {
		b.poisonMessage(ctx, m, "undecodable message: "+err.Error())
		return false
	}
	m.env = env
	if due := notBefore(env.Event); !due.IsZero() {
		if wait := due.Sub(b.now()); wait > 50*time.Millisecond {
			b.redelay(ctx, m, wait)
			return false
		}
	}
	return true
}

// redelay re-enqueues a message that came before its time (a timer longer
// than one hop) with the remaining delay, then deletes the early copy.
func (b *Backend) redelay(ctx context.Context, m *qmsg, wait time.Duration) {
	vis := min(wait, b.opts.MaxMessageDelay)
	err := b.retry(ctx, "re-delay message", func() error {
		_, err := b.queueClient(m.queue).EnqueueMessage(ctx, m.text, &azqueue.EnqueueMessageOptions{TimeToLive: to.Ptr(int32(-1)), VisibilityTimeout: to.Ptr(seconds(vis))})
		return err
	})
	if err != nil {
		return // the early copy comes back after its visibility timeout
	}
	b.stats.redelayed.Add(1)
	b.log.Debug("message re-delayed", "queue", b.queueName(m.queue), "event", m.env.Event.EventType.String(), "instance_id", m.env.Instance.InstanceID, "remaining", wait)
	_ = b.deleteMessage(ctx, m)
	if m.queue == workItemQueue || b.owns(m.queue) {
		b.wakeLater(m.queue, vis+50*time.Millisecond)
	}
}

func (b *Backend) controlPoller(ctx context.Context, p *partition) {
	capacity := func() int {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.opts.ControlQueueBufferThreshold - b.buffered[p.index]
	}
	b.pollLoop(ctx, p.index, p.wake, capacity, func(ctx context.Context, m *qmsg) {
		if b.receive(ctx, m) {
			b.addToSession(m)
		}
	})
}
