package queue

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/bindings/azstorage"
	"github.com/stratus-dev/stratus/bindings/storage"
	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/triggers"
)

// Defaults, as in the Azure Functions host.
const (
	DefaultBatchSize          = 16
	DefaultMaxDequeueCount    = 5
	DefaultMaxPollingInterval = time.Minute
	minPollingInterval        = 100 * time.Millisecond
	// leaseVisibility is how long a fetched message stays invisible; it is
	// renewed at half that while the handler runs.
	leaseVisibility = 10 * time.Minute
)

// Options are the listener's settings (host.json extensions.queues).
type Options struct {
	BatchSize          int
	NewBatchThreshold  int
	MaxDequeueCount    int
	MaxPollingInterval time.Duration
	VisibilityTimeout  time.Duration
	// Encoding is storage.EncodingBase64 or storage.EncodingNone.
	Encoding string
}

// OptionsFrom reads extensions.queues from env with the host's defaults.
func OptionsFrom(env *bindings.Env) Options {
	q := env.HostJSON().Extensions.Queues
	o := Options{
		BatchSize:          q.BatchSize,
		NewBatchThreshold:  q.NewBatchThreshold,
		MaxDequeueCount:    q.MaxDequeueCount,
		MaxPollingInterval: DefaultMaxPollingInterval,
		Encoding:           storage.MessageEncoding(env),
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	o.BatchSize = min(o.BatchSize, 32)
	if o.NewBatchThreshold <= 0 {
		o.NewBatchThreshold = max(1, o.BatchSize/2*runtime.NumCPU())
	}
	if o.MaxDequeueCount <= 0 {
		o.MaxDequeueCount = DefaultMaxDequeueCount
	}
	if q.MaxPollingInterval != nil {
		o.MaxPollingInterval = max(q.MaxPollingInterval.Duration(), minPollingInterval)
	}
	if q.VisibilityTimeout != nil && *q.VisibilityTimeout > 0 {
		o.VisibilityTimeout = q.VisibilityTimeout.Duration()
	}
	return o
}

// Listener polls one queue for one function.
type Listener struct {
	fn       *registry.Function
	clients  *azstorage.Clients
	queue    *azqueue.QueueClient
	name     string
	poison   string // "" when the queue has no poison queue
	opts     Options
	log      *slog.Logger
	leaseFor time.Duration // visibility while running; renewed at half

	mu       sync.Mutex
	inflight int
	finished chan struct{} // signalled (non-blocking) when a message is done
	onPoll   func(inflight int)
}

var (
	_ triggers.Listener      = (*Listener)(nil)
	_ triggers.ManualTrigger = (*Listener)(nil)
)

// New is the queueTrigger factory.
func New(env *bindings.Env, fn *registry.Function) (triggers.Listener, error) {
	return NewListener(env, fn)
}

// NewListener builds a listener for fn's queue trigger.
func NewListener(env *bindings.Env, fn *registry.Function) (*Listener, error) {
	b := fn.Trigger
	raw := b.String("queueName")
	if raw == "" {
		return nil, fmt.Errorf("queueTrigger: property queueName is required")
	}
	name, err := env.Settings.Resolve(raw)
	if err != nil {
		return nil, fmt.Errorf("queueTrigger queueName %q: %w", raw, err)
	}
	name = strings.ToLower(name)
	if err := storage.ValidateQueueName(name); err != nil {
		return nil, fmt.Errorf("queueTrigger: %w", err)
	}
	c, err := env.Storage(b.String("connection"))
	if err != nil {
		return nil, fmt.Errorf("queueTrigger: %w", err)
	}
	log := env.Logger
	if log == nil {
		log = slog.Default()
	}
	l := &Listener{
		fn: fn, clients: c, queue: c.Queue.NewQueueClient(name), name: name,
		opts: OptionsFrom(env), leaseFor: leaseVisibility,
		log:      log.With("component", "queueTrigger", "function", fn.Name, "queue", name),
		finished: make(chan struct{}, 1),
	}
	if p := name + "-poison"; !strings.HasSuffix(name, "-poison") && len(p) <= 63 {
		l.poison = p
	}
	return l, nil
}

// Queue returns the queue name.
func (l *Listener) Queue() string { return l.name }

// ManualInvocation builds an invocation for the admin endpoint: the input is
// the message text.
func (l *Listener) ManualInvocation(input string) (*registry.Invocation, error) {
	m := &Message{ID: bindings.NewGUID(), Text: input, DequeueCount: 1, InsertionTime: time.Now().UTC()}
	return &registry.Invocation{Function: l.fn, Trigger: m, Data: bindingData(m)}, nil
}

// Listen polls until ctx is done, then waits for in-flight messages.
func (l *Listener) Listen(ctx context.Context, deliver triggers.Deliver) error {
	wake := make(chan struct{}, 1)
	unsubscribe := storage.NotifierFor(l.clients).Subscribe(storage.QueueTopic(l.name), func(string) {
		select {
		case wake <- struct{}{}:
		default:
		}
	})
	defer unsubscribe()
	var wg sync.WaitGroup
	defer wg.Wait()

	empties := 0
	var lastErr time.Time
	for {
		// Wait until few enough messages are in flight.
		for l.inFlight() > l.opts.NewBatchThreshold {
			select {
			case <-ctx.Done():
				return nil
			case <-l.finished:
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if l.onPoll != nil {
			l.onPoll(l.inFlight())
		}
		res, err := l.queue.DequeueMessages(ctx, &azqueue.DequeueMessagesOptions{
			NumberOfMessages:  to.Ptr(int32(l.opts.BatchSize)),
			VisibilityTimeout: to.Ptr(int32(l.leaseFor / time.Second)),
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if storage.IsNotFound(err) {
				if cerr := storage.CreateQueue(ctx, l.queue); cerr == nil {
					l.log.Info("created queue")
					continue
				}
			}
			if time.Since(lastErr) > 30*time.Second {
				l.log.Warn("poll failed; backing off", "error", err)
				lastErr = time.Now()
			}
		}
		if err != nil || len(res.Messages) == 0 {
			empties++
			t := time.NewTimer(PollDelay(empties, l.opts.MaxPollingInterval, rand.Float64()))
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-wake:
				empties = 0
			case <-t.C:
			}
			t.Stop()
			continue
		}
		empties = 0
		for _, dm := range res.Messages {
			l.add(1)
			wg.Go(func() {
				defer l.add(-1)
				l.process(ctx, deliver, dm)
			})
		}
	}
}

func (l *Listener) inFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inflight
}

func (l *Listener) add(n int) {
	l.mu.Lock()
	l.inflight += n
	l.mu.Unlock()
	if n < 0 {
		select {
		case l.finished <- struct{}{}:
		default:
		}
	}
}

// PollDelay is the wait after the n-th empty poll in a row (n >= 1):
// 100 ms + r'·2^(n−1)·100 ms with r' = 0.8 + 0.4·r (r in [0,1)), capped at max.
func PollDelay(n int, maxDelay time.Duration, r float64) time.Duration {
	if n < 1 {
		return 0
	}
	exp := math.Pow(2, float64(min(n-1, 30)))
	d := minPollingInterval + time.Duration((0.8+0.4*r)*exp*float64(minPollingInterval))
	return min(d, max(maxDelay, minPollingInterval))
}

// receipt is the message's current pop receipt, which renewals change.
type receipt struct {
	mu  sync.Mutex
	pop string
}

func (r *receipt) get() string  { r.mu.Lock(); defer r.mu.Unlock(); return r.pop }
func (r *receipt) set(p string) { r.mu.Lock(); r.pop = p; r.mu.Unlock() }

func (l *Listener) process(ctx context.Context, deliver triggers.Deliver, dm *azqueue.DequeuedMessage) {
	raw := deref(dm.MessageText)
	m := &Message{
		ID: deref(dm.MessageID), DequeueCount: deref(dm.DequeueCount), PopReceipt: deref(dm.PopReceipt),
		InsertionTime: derefTime(dm.InsertionTime), ExpirationTime: derefTime(dm.ExpirationTime), NextVisibleTime: derefTime(dm.TimeNextVisible),
	}
	log := l.log.With("message_id", m.ID, "dequeue_count", m.DequeueCount)
	body, ok := storage.DecodeMessage(raw, l.opts.Encoding)
	if !ok {
		log.Debug("message is not base64; delivering its raw text")
	}
	m.Text = string(body)
	rc := &receipt{pop: m.PopReceipt}
	// Storage calls after the handler must finish even during shutdown.
	after := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	}

	if m.DequeueCount > int64(l.opts.MaxDequeueCount) && l.poison != "" {
		actx, cancel := after()
		defer cancel()
		l.moveToPoison(actx, log, m.ID, rc.get(), raw)
		return
	}

	rctx, stopRenew := context.WithCancel(ctx)
	var renewer sync.WaitGroup
	renewer.Go(func() { l.renew(rctx, log, m.ID, rc, raw) })
	inv := &registry.Invocation{Function: l.fn, Trigger: m, Data: bindingData(m)}
	_, err := deliver(ctx, inv)
	stopRenew()
	renewer.Wait()

	actx, cancel := after()
	defer cancel()
	switch {
	case err == nil:
		if _, derr := l.queue.DeleteMessage(actx, m.ID, rc.get(), nil); derr != nil {
			log.Warn("delete after success failed; the message may run again", "error", derr)
		}
	case ctx.Err() != nil:
		// Shutting down: give the message back now, without counting it
		// towards poison.
		l.release(actx, log, m.ID, rc.get(), raw, 0)
	case m.DequeueCount >= int64(l.opts.MaxDequeueCount) && l.poison != "":
		log.Warn("message failed its last attempt; moving it to the poison queue", "poison_queue", l.poison, "error", err)
		l.moveToPoison(actx, log, m.ID, rc.get(), raw)
	default:
		l.release(actx, log, m.ID, rc.get(), raw, l.opts.VisibilityTimeout)
	}
}

// renew keeps the message invisible while the handler runs.
func (l *Listener) renew(ctx context.Context, log *slog.Logger, id string, rc *receipt, raw string) {
	t := time.NewTicker(l.leaseFor / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			res, err := l.queue.UpdateMessage(ctx, id, rc.get(), raw, &azqueue.UpdateMessageOptions{VisibilityTimeout: to.Ptr(int32(l.leaseFor / time.Second))})
			if err != nil {
				if ctx.Err() == nil {
					log.Warn("renew message visibility failed", "error", err)
				}
				continue
			}
			rc.set(deref(res.PopReceipt))
		}
	}
}

func (l *Listener) release(ctx context.Context, log *slog.Logger, id, pop, raw string, after time.Duration) {
	_, err := l.queue.UpdateMessage(ctx, id, pop, raw, &azqueue.UpdateMessageOptions{VisibilityTimeout: to.Ptr(int32(after / time.Second))})
	if err != nil {
		log.Warn("release failed; the message reappears when its visibility ends", "error", err)
	}
}

// moveToPoison adds the original content to the poison queue, then deletes
// the message: a crash in between duplicates it, never loses it.
func (l *Listener) moveToPoison(ctx context.Context, log *slog.Logger, id, pop, raw string) {
	pq := l.clients.Queue.NewQueueClient(l.poison)
	if err := storage.Enqueue(ctx, pq, raw); err != nil {
		log.Error("add to poison queue failed; leaving the message in its queue", "poison_queue", l.poison, "error", err)
		return
	}
	if _, err := l.queue.DeleteMessage(ctx, id, pop, nil); err != nil {
		log.Warn("delete after poisoning failed", "error", err)
	}
}

func deref[T any](p *T) T {
	var z T
	if p == nil {
		return z
	}
	return *p
}

func derefTime(p *time.Time) time.Time {
	if p == nil {
		return time.Time{}
	}
	return p.UTC()
}
