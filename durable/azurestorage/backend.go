package azurestorage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/bindings/azstorage"
	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/host/config"
)

// Options configure a Backend. Zero values take the defaults.
type Options struct {
	// HubName is the task hub name (default "TestHubName").
	HubName string
	// PartitionCount is the number of control queues, 1-16 (default 4).
	// Every process on one hub must use the same count; an existing hub's
	// taskhub.json wins over this value.
	PartitionCount int
	// WorkerID identifies this process in leases (default host name, pid
	// and a random suffix).
	WorkerID string
	// ControlQueueBatchSize is how many messages one poll takes, 1-32
	// (default 32).
	ControlQueueBatchSize int
	// ControlQueueBufferThreshold pauses a partition's poller while that many
	// of its messages wait in memory (default 256).
	ControlQueueBufferThreshold int
	// MaxQueuePollingInterval caps the idle polling back-off (default 30 s,
	// as Durable Functions). Messages this process sends need no poll.
	MaxQueuePollingInterval time.Duration
	// ControlQueueVisibilityTimeout hides fetched control messages (default 5 min).
	ControlQueueVisibilityTimeout time.Duration
	// WorkItemQueueVisibilityTimeout hides fetched activity messages; it is
	// renewed while the activity runs (default 5 min).
	WorkItemQueueVisibilityTimeout time.Duration
	// LeaseDuration is the partition lease length, 15-60 s (default 30 s);
	// leases are renewed every third of it.
	LeaseDuration time.Duration
	// MaxMessageDelay caps the initial invisibility of one queue message
	// (default 6 days; Azure rejects more than 7). Longer timers hop.
	MaxMessageDelay time.Duration
	// MaxCachedInstances bounds the in-memory history cache (default 10 000).
	MaxCachedInstances int
	// Logger logs; slog.Default() when nil.
	Logger *slog.Logger
	// Now is the clock used for timers, visibility and timestamps; time.Now
	// when nil.
	Now func() time.Time
}

// OptionsFromHost maps host.json's durableTask section to Options.
func OptionsFromHost(h *config.HostJSON) Options {
	d := h.Extensions.DurableTask
	o := Options{HubName: h.HubName(), PartitionCount: d.StorageProvider.PartitionCount, ControlQueueBatchSize: d.StorageProvider.ControlQueueBatchSize}
	if t := d.StorageProvider.MaxQueuePollingInterval; t != nil {
		o.MaxQueuePollingInterval = t.Duration()
	}
	if t := d.StorageProvider.ControlQueueVisibilityTimeout; t != nil {
		o.ControlQueueVisibilityTimeout = t.Duration()
	}
	if t := d.StorageProvider.WorkItemQueueVisibilityTimeout; t != nil {
		o.WorkItemQueueVisibilityTimeout = t.Duration()
	}
	return o
}

func (o *Options) defaults() error {
	if o.HubName == "" {
		o.HubName = "TestHubName"
	}
	if err := ValidateHubName(o.HubName); err != nil {
		return err
	}
	if o.PartitionCount == 0 {
		o.PartitionCount = 4
	}
	if o.PartitionCount < 1 || o.PartitionCount > 16 {
		return fmt.Errorf("partition count %d is not 1-16", o.PartitionCount)
	}
	if o.WorkerID == "" {
		host, _ := os.Hostname()
		o.WorkerID = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), bindings.NewGUID()[:8])
	}
	if o.ControlQueueBatchSize <= 0 || o.ControlQueueBatchSize > 32 {
		o.ControlQueueBatchSize = 32
	}
	if o.ControlQueueBufferThreshold <= 0 {
		o.ControlQueueBufferThreshold = 256
	}
	if o.MaxQueuePollingInterval <= 0 {
		o.MaxQueuePollingInterval = 30 * time.Second
	}
	if o.ControlQueueVisibilityTimeout < time.Second {
		o.ControlQueueVisibilityTimeout = 5 * time.Minute
	}
	if o.WorkItemQueueVisibilityTimeout < time.Second {
		o.WorkItemQueueVisibilityTimeout = 5 * time.Minute
	}
	if o.LeaseDuration == 0 {
		o.LeaseDuration = 30 * time.Second
	}
	o.LeaseDuration = min(max(o.LeaseDuration, 15*time.Second), 60*time.Second)
	if o.MaxMessageDelay <= 0 || o.MaxMessageDelay > 6*24*time.Hour {
		o.MaxMessageDelay = 6 * 24 * time.Hour
	}
	if o.MaxCachedInstances <= 0 {
		o.MaxCachedInstances = 10000
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return nil
}

// Stats are counters for observability and tests.
type Stats struct {
	// Dropped counts duplicate messages acknowledged without effect.
	Dropped int64
	// Deferred counts messages put back because they arrived before what
	// they answer (or before their instance started).
	Deferred int64
	// Poisoned counts messages moved to the poison queue: undecodable ones
	// and events for unknown or finished instances or executions.
	Poisoned int64
	// Resent counts outbound messages resent during recovery.
	Resent int64
	// Repaired counts Instances rows rewritten from history during recovery.
	Repaired int64
	// Redelayed counts timer and scheduled-start messages re-enqueued because
	// they were delivered before their time (delays longer than one hop).
	Redelayed int64
	// HistoryLoads counts history reads (history cache misses).
	HistoryLoads int64
	// LocalDeliveries counts messages handed to this process's dispatcher
	// without a poll.
	LocalDeliveries int64
}

type counters struct {
	dropped, deferred, poisoned, resent, repaired, redelayed, loads, local atomic.Int64
}

// Backend is the Azure Storage task hub. It is safe for concurrent use.
type Backend struct {
	opts    Options
	names   names
	log     *slog.Logger
	clients *azstorage.Clients
	blob    *azblob.Client

	control   []*azqueue.QueueClient
	workItems *azqueue.QueueClient
	poison    *azqueue.QueueClient
	histT     *aztables.Client // with transaction ETag capture
	instT     *aztables.Client

	seq   atomic.Int64
	stats counters

	mu       sync.Mutex
	owned    map[int]*partition
	sessions map[string]*session
	ready    []*session
	buffered []int // per partition: messages held in sessions
	cache    map[string]*cachedInstance
	inflight int // orchestration work items handed out
	idle     chan struct{}

	readyCh chan struct{}

	actMu      sync.Mutex
	actHeld    map[string]*qmsg // activity messages held, by message id
	activities chan *qmsg
	actWake    chan struct{}

	started  atomic.Bool
	stopped  atomic.Bool
	stopCh   chan struct{}
	runCtx   context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	acks     sync.WaitGroup // background acknowledgements
	logLimit rateLimiter

	// failAfterHistory, when set (by tests), makes a checkpoint stop right
	// after its history write, as if the process died there.
	failAfterHistory func(instanceID string, c *backend.OrchestrationCompletion) bool
}

var _ backend.Backend = (*Backend)(nil)

// New returns a backend over clients. Call Start before fetching work items;
// the Client methods work without Start once the resources exist.
func New(clients *azstorage.Clients, opts Options) (*Backend, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	b := &Backend{
		opts: opts, clients: clients, blob: clients.Blob,
		log:   opts.Logger.With("component", "taskhub", "hub", opts.HubName),
		owned: map[int]*partition{}, sessions: map[string]*session{}, cache: map[string]*cachedInstance{},
		readyCh: make(chan struct{}, 1), actHeld: map[string]*qmsg{}, activities: make(chan *qmsg, 256),
		actWake: make(chan struct{}, 1), stopCh: make(chan struct{}),
	}
	b.setPartitionCount(opts.PartitionCount)
	b.workItems = clients.Queue.NewQueueClient(b.names.workItemQueue)
	b.poison = clients.Queue.NewQueueClient(b.names.poisonQueue)
	var err error
	if b.histT, err = historyTableClient(clients, b.names.historyTable); err != nil {
		return nil, err
	}
	b.instT = clients.Table.NewClient(b.names.instancesTable)
	return b, nil
}

func (b *Backend) setPartitionCount(n int) {
	b.opts.PartitionCount = n
	b.names = newNames(b.opts.HubName, n)
	b.control = b.control[:0]
	for _, q := range b.names.controlQueues {
		b.control = append(b.control, b.clients.Queue.NewQueueClient(q))
	}
	b.buffered = make([]int, n)
}

// HubName returns the task hub's name.
func (b *Backend) HubName() string { return b.opts.HubName }

// PartitionCount returns the number of control queues in use.
func (b *Backend) PartitionCount() int { return b.opts.PartitionCount }

// Stats returns the backend's counters.
func (b *Backend) Stats() Stats {
	s := &b.stats
	return Stats{Dropped: s.dropped.Load(), Deferred: s.deferred.Load(), Poisoned: s.poisoned.Load(), Resent: s.resent.Load(),
		Repaired: s.repaired.Load(), Redelayed: s.redelayed.Load(), HistoryLoads: s.loads.Load(), LocalDeliveries: s.local.Load()}
}

func (b *Backend) now() time.Time { return b.opts.Now().UTC() }

func isCode(err error, codes ...string) bool {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return false
	}
	for _, c := range codes {
		if re.ErrorCode == c {
			return true
		}
	}
	return false
}

func isStatus(err error, statuses ...int) bool {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return false
	}
	for _, s := range statuses {
		if re.StatusCode == s {
			return true
		}
	}
	return false
}

// taskHubInfo is h-leases/taskhub.json.
type taskHubInfo struct {
	TaskHubName    string    `json:"TaskHubName"`
	CreatedAt      time.Time `json:"CreatedAt"`
	PartitionCount int       `json:"PartitionCount"`
}

// CreateResources creates the hub's queues, tables and containers if
// missing and records the partition count in taskhub.json. When the hub
// already exists its recorded partition count is adopted.
func (b *Backend) CreateResources(ctx context.Context) error {
	for _, c := range []string{b.names.leaseContainer, b.names.largeContainer} {
		if _, err := b.blob.CreateContainer(ctx, c, nil); err != nil && !isStatus(err, http.StatusConflict) {
			return fmt.Errorf("create container %s: %w", c, err)
		}
	}
	info, _ := json.Marshal(taskHubInfo{TaskHubName: b.opts.HubName, CreatedAt: b.now(), PartitionCount: b.opts.PartitionCount})
	_, err := b.blob.UploadBuffer(ctx, b.names.leaseContainer, "taskhub.json", info, &azblob.UploadBufferOptions{
		AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}},
	})
	switch {
	case err == nil:
	case isStatus(err, http.StatusConflict, http.StatusPreconditionFailed):
		existing, err := b.readTaskHubInfo(ctx)
		if err != nil {
			return err
		}
		if existing.PartitionCount >= 1 && existing.PartitionCount <= 16 && existing.PartitionCount != b.opts.PartitionCount {
			b.log.Warn("task hub exists with another partition count; using it", "configured", b.opts.PartitionCount, "existing", existing.PartitionCount)
			b.setPartitionCount(existing.PartitionCount)
		}
	default:
		return fmt.Errorf("write taskhub.json: %w", err)
	}
	queues := append([]*azqueue.QueueClient{b.workItems, b.poison}, b.control...)
	for _, q := range queues {
		if _, err := q.Create(ctx, nil); err != nil && !isStatus(err, http.StatusConflict) {
			return fmt.Errorf("create queue: %w", err)
		}
	}
	for _, t := range []*aztables.Client{b.histT, b.instT} {
		if _, err := t.CreateTable(ctx, nil); err != nil && !isStatus(err, http.StatusConflict) {
			return fmt.Errorf("create table: %w", err)
		}
	}
	return nil
}

func (b *Backend) readTaskHubInfo(ctx context.Context) (*taskHubInfo, error) {
	res, err := b.blob.DownloadStream(ctx, b.names.leaseContainer, "taskhub.json", nil)
	if err != nil {
		return nil, fmt.Errorf("read taskhub.json: %w", err)
	}
	defer res.Body.Close()
	var info taskHubInfo
	if err := json.NewDecoder(res.Body).Decode(&info); err != nil {
		return nil, fmt.Errorf("read taskhub.json: %w", err)
	}
	return &info, nil
}

// Start creates missing resources, takes the free partition leases and
// starts the pollers. Storage outages at start are retried until ctx ends.
func (b *Backend) Start(ctx context.Context) error {
	if !b.started.CompareAndSwap(false, true) {
		return errors.New("task hub already started")
	}
	if err := b.retry(ctx, "create task hub resources", func() error { return b.CreateResources(ctx) }); err != nil {
		return err
	}
	b.runCtx, b.cancel = context.WithCancel(context.WithoutCancel(ctx))
	b.acquirePartitions(b.runCtx)
	b.wg.Go(func() { b.leaseLoop(b.runCtx) })
	b.wg.Go(func() { b.workItemPoller(b.runCtx) })
	b.log.Info("task hub started", "partitions", b.opts.PartitionCount, "owned", b.ownedIndexes(), "worker", b.opts.WorkerID)
	return nil
}

// Stop stops fetching, waits (until ctx ends) for orchestration work items
// already handed out, stops the pollers and releases the partition leases.
// Messages held in memory become visible again when their visibility
// timeout ends.
func (b *Backend) Stop(ctx context.Context) error {
	if !b.stopped.CompareAndSwap(false, true) {
		return nil
	}
	close(b.stopCh)
	if b.cancel == nil {
		b.acks.Wait()
		return nil
	}
	b.mu.Lock()
	for b.inflight > 0 {
		if b.idle == nil {
			b.idle = make(chan struct{})
		}
		idle := b.idle
		b.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			b.log.Warn("stopping with orchestration work items in flight")
		}
		b.mu.Lock()
		if ctx.Err() != nil {
			break
		}
	}
	b.mu.Unlock()
	b.cancel()
	b.wg.Wait()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	b.spillHandovers(sctx)
	cancel()
	b.acks.Wait()
	b.releasePartitions(context.WithoutCancel(ctx))
	b.log.Info("task hub stopped")
	return nil
}

// retry runs f until it succeeds or ctx ends, with capped, jittered back-off
// and rate-limited logs: storage outages are waited out.
func (b *Backend) retry(ctx context.Context, what string, f func() error) error {
	delay := 100 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || isPermanent(err) {
			return fmt.Errorf("%s: %w", what, err)
		}
		if b.logLimit.allow() {
			b.log.Warn("storage call failed; retrying", "op", what, "error", err)
		}
		if !sleep(ctx, jitter(delay)) {
			return fmt.Errorf("%s: %w", what, err)
		}
		delay = min(delay*2, 10*time.Second)
	}
}

// isPermanent reports errors that retrying cannot fix (conflicts, missing
// entities, bad requests).
func isPermanent(err error) bool {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode >= 400 && re.StatusCode < 500 && re.StatusCode != http.StatusRequestTimeout && re.StatusCode != http.StatusTooManyRequests
	}
	var ce *conflictError
	return errors.As(err, &ce) || errors.Is(err, backend.ErrInstanceNotFound)
}

// rateLimiter allows one event per interval (10 s).
type rateLimiter struct {
	mu   sync.Mutex
	last time.Time
}

func (r *rateLimiter) allow() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.last) < 10*time.Second {
		return false
	}
	r.last = time.Now()
	return true
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func jitter(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// seconds rounds d up to whole seconds for queue visibility arguments.
func seconds(d time.Duration) int32 {
	if d <= 0 {
		return 0
	}
	return int32((d + time.Second - 1) / time.Second)
}
