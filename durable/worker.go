package durable

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
)

// Defaults of WorkerOptions.
const (
	DefaultCacheSize       = 1000
	DefaultDeadlockTimeout = 5 * time.Second
	DefaultDrainTimeout    = 30 * time.Second
)

// WorkerOptions configures a Worker.
type WorkerOptions struct {
	// Orchestrators and Activities look functions up by name.
	Orchestrators func(name string) (Orchestrator, bool)
	Activities    func(name string) (ActivityFunc, bool)
	// Entities looks entity functions up by (lower-case) entity name.
	Entities func(name string) (EntityFunc, bool)
	// MaxEntityOperationBatchSize bounds the operations one entity runs
	// per work item (Durable Functions' maxEntityOperationBatchSize); 0
	// means DefaultMaxEntityOperationBatchSize.
	MaxEntityOperationBatchSize int
	// InvokeActivity, when set, wraps every activity call; the host passes
	// its invocation pipeline (invocation id, logs, functionTimeout, panic
	// recovery). It must call run and return run's results.
	InvokeActivity func(ctx context.Context, info ActivityInfo, run func(ctx context.Context) (any, error)) (any, error)
	// MaxConcurrentActivities and MaxConcurrentOrchestrations bound the work
	// items processed at once; 0 means 10 × NumCPU.
	MaxConcurrentActivities     int
	MaxConcurrentOrchestrations int
	// CacheSize bounds the running orchestrations kept in memory between work
	// items (least recently used ones are evicted); 0 means
	// DefaultCacheSize, a negative value disables the cache.
	CacheSize int
	// DeadlockTimeout is how long an orchestrator may run without yielding
	// before the instance fails; 0 means DefaultDeadlockTimeout.
	DeadlockTimeout time.Duration
	// DrainTimeout bounds how long Run waits for in-flight work after its
	// context ends; 0 means DefaultDrainTimeout.
	DrainTimeout time.Duration
	// Logger receives the worker's logs; nil discards them.
	Logger *slog.Logger
}

// WorkerStats are counters of a Worker, for tests and metrics.
type WorkerStats struct {
	OrchestrationWorkItems int64
	ActivityWorkItems      int64
	// EntityWorkItems counts entity work items (batches of operations).
	EntityWorkItems int64
	// CacheHits counts work items run on a parked execution; CacheMisses
	// those that replayed history.
	CacheHits   int64
	CacheMisses int64
	// DroppedEvents counts duplicates; IgnoredEvents events for finished
	// executions.
	DroppedEvents int64
	IgnoredEvents int64
	// LostWorkItems counts completions refused with backend.ErrWorkItemLost.
	LostWorkItems int64
}

// Worker runs orchestrations and activities from a backend.Backend.
type Worker struct {
	b      backend.Backend
	o      WorkerOptions
	log    *slog.Logger
	engine *engine
	cache  *execCache

	orchestrationItems, activityItems, entityItems, hits, misses, dropped, ignored, lost atomic.Int64
}

// NewWorker returns a worker for b.
func NewWorker(b backend.Backend, o WorkerOptions) *Worker {
	if o.MaxConcurrentActivities <= 0 {
		o.MaxConcurrentActivities = 10 * runtime.NumCPU()
	}
	if o.MaxConcurrentOrchestrations <= 0 {
		o.MaxConcurrentOrchestrations = 10 * runtime.NumCPU()
	}
	if o.CacheSize == 0 {
		o.CacheSize = DefaultCacheSize
	}
	if o.DeadlockTimeout <= 0 {
		o.DeadlockTimeout = DefaultDeadlockTimeout
	}
	if o.DrainTimeout <= 0 {
		o.DrainTimeout = DefaultDrainTimeout
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "durable.worker")
	return &Worker{
		b:      b,
		o:      o,
		log:    log,
		engine: &engine{orchestrators: o.Orchestrators, entities: o.Entities, maxEntityOps: o.MaxEntityOperationBatchSize, logger: log, watchdog: o.DeadlockTimeout},
		cache:  newExecCache(max(o.CacheSize, 0)),
	}
}

// Stats returns the worker's counters.
func (w *Worker) Stats() WorkerStats {
	return WorkerStats{
		OrchestrationWorkItems: w.orchestrationItems.Load(),
		ActivityWorkItems:      w.activityItems.Load(),
		EntityWorkItems:        w.entityItems.Load(),
		CacheHits:              w.hits.Load(),
		CacheMisses:            w.misses.Load(),
		DroppedEvents:          w.dropped.Load(),
		IgnoredEvents:          w.ignored.Load(),
		LostWorkItems:          w.lost.Load(),
	}
}

// Run fetches and runs work items until ctx is done. Then it stops
// fetching, cancels the activities' contexts, waits (at most DrainTimeout)
// for in-flight work to be committed or abandoned, and unloads the cached
// orchestrations. It does not stop the backend.
func (w *Worker) Run(ctx context.Context) error {
	var loops, inflight sync.WaitGroup
	loops.Add(2)
	go func() {
		defer loops.Done()
		w.loop(ctx, "orchestration", w.o.MaxConcurrentOrchestrations, &inflight, func() (func(), error) {
			wi, err := w.b.NextOrchestrationWorkItem(ctx)
			if err != nil {
				return nil, err
			}
			return func() { w.runOrchestration(ctx, wi) }, nil
		})
	}()
	go func() {
		defer loops.Done()
		w.loop(ctx, "activity", w.o.MaxConcurrentActivities, &inflight, func() (func(), error) {
			wi, err := w.b.NextActivityWorkItem(ctx)
			if err != nil {
				return nil, err
			}
			return func() { w.runActivity(ctx, wi) }, nil
		})
	}()
	<-ctx.Done()
	loops.Wait()
	drained := make(chan struct{})
	go func() { inflight.Wait(); close(drained) }()
	t := time.NewTimer(w.o.DrainTimeout)
	defer t.Stop()
	select {
	case <-drained:
	case <-t.C:
		w.log.Warn("in-flight durable work did not finish before the drain timeout", "timeout", w.o.DrainTimeout)
	}
	w.cache.closeAll()
	return nil
}

// loop fetches work items while a concurrency slot is free.
func (w *Worker) loop(ctx context.Context, kind string, limit int, inflight *sync.WaitGroup, next func() (func(), error)) {
	sem := make(chan struct{}, limit)
	backoff := 50 * time.Millisecond
	for {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		run, err := next()
		if err != nil {
			<-sem
			if ctx.Err() != nil || errors.Is(err, backend.ErrStopped) {
				return
			}
			w.log.Error("fetch durable work item", "kind", kind, "err", err, "retry_in", backoff)
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		inflight.Add(1)
		go func() {
			defer inflight.Done()
			defer func() { <-sem }()
			run()
		}()
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// commitContext is used for backend calls that must finish even when the
// worker is shutting down.
func commitContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
}

func (w *Worker) runOrchestration(ctx context.Context, wi *backend.OrchestrationWorkItem) {
	w.orchestrationItems.Add(1)
	cctx, cancel := commitContext(ctx)
	defer cancel()
	log := w.log.With("instance_id", wi.InstanceID)
	if IsEntityInstance(wi.InstanceID) {
		w.runEntity(ctx, cctx, wi, log)
		return
	}

	var ex *executor
	if ent := w.cache.take(wi.InstanceID); ent != nil {
		if wi.ExecutionID != "" && ent.executionID == wi.ExecutionID && ent.historyLen == len(wi.History) {
			ex = ent.ex
			w.hits.Add(1)
		} else {
			ent.ex.close()
		}
	}
	if ex == nil {
		w.misses.Add(1)
	}
	var (
		c  *backend.OrchestrationCompletion
		ep *episode
	)
	func() {
		defer func() {
			if r := recover(); r != nil {
				log.Error("durable runtime panic; abandoning the work item", "panic", r, "stack", string(debug.Stack()))
				c = nil
			}
		}()
		c, ex, ep = w.engine.process(ex, wi, time.Now())
	}()
	if c == nil {
		if ex != nil {
			ex.close()
		}
		if err := w.b.AbandonOrchestrationWorkItem(cctx, wi, time.Second); err != nil {
			log.Error("abandon orchestration work item", "err", err)
		}
		return
	}
	w.dropped.Add(int64(ep.dropped))
	w.ignored.Add(int64(ep.ignored))
	if ep.ignored > 0 {
		log.Info("ignored events for a finished orchestration", "count", ep.ignored, "status", string(c.State.RuntimeStatus))
	}
	if !ex.started && len(c.NewHistory) == 0 {
		// Events for an instance whose ExecutionStarted has not arrived yet
		// (a scheduled start): keep them until it does.
		ex.close()
		if err := w.b.AbandonOrchestrationWorkItem(cctx, wi, 5*time.Second); err != nil {
			log.Error("abandon orchestration work item", "err", err)
		}
		return
	}
	// Park a still-running execution before the commit releases the
	// instance: the next work item for it may start as soon as the backend
	// has committed, and must find the execution in the cache rather than
	// replay beside a stale copy that would stay parked for nothing.
	cached := ex.cacheable()
	if cached {
		n := len(c.NewHistory)
		if !c.ResetHistory {
			n += len(wi.History)
		}
		if evicted := w.cache.put(wi.InstanceID, &cacheEntry{ex: ex, executionID: ex.executionID, historyLen: n}); evicted != nil {
			evicted.close()
		}
	}
	if err := w.b.CompleteOrchestrationWorkItem(cctx, wi, c); err != nil {
		if cached {
			if ent := w.cache.take(wi.InstanceID); ent != nil && ent.ex != ex {
				ent.ex.close()
			}
		}
		ex.close()
		if errors.Is(err, backend.ErrWorkItemLost) {
			w.lost.Add(1)
			log.Info("orchestration work item lost; another worker owns the instance now", "err", err)
			return
		}
		log.Error("commit orchestration work item", "err", err)
		if err := w.b.AbandonOrchestrationWorkItem(cctx, wi, time.Second); err != nil {
			log.Error("abandon orchestration work item", "err", err)
		}
		return
	}
	if cached {
		return
	}
	ex.close()
}

// runEntity runs an entity work item: the batch of operations it carries.
func (w *Worker) runEntity(ctx, cctx context.Context, wi *backend.OrchestrationWorkItem, log *slog.Logger) {
	w.entityItems.Add(1)
	var (
		c   *backend.OrchestrationCompletion
		err error
	)
	func() {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("durable runtime panic: %v\n%s", r, debug.Stack())
			}
		}()
		c, err = w.engine.processEntity(ctx, wi, time.Now())
	}()
	if err != nil {
		log.Error("cannot run entity work item; abandoning it", "err", err)
		if aerr := w.b.AbandonOrchestrationWorkItem(cctx, wi, time.Second); aerr != nil {
			log.Error("abandon entity work item", "err", aerr)
		}
		return
	}
	if err := w.b.CompleteOrchestrationWorkItem(cctx, wi, c); err != nil {
		if errors.Is(err, backend.ErrWorkItemLost) {
			w.lost.Add(1)
			log.Info("entity work item lost; another worker owns the entity now", "err", err)
			return
		}
		log.Error("commit entity work item", "err", err)
		if err := w.b.AbandonOrchestrationWorkItem(cctx, wi, time.Second); err != nil {
			log.Error("abandon entity work item", "err", err)
		}
	}
}

func (w *Worker) runActivity(ctx context.Context, wi *backend.ActivityWorkItem) {
	w.activityItems.Add(1)
	cctx, cancel := commitContext(ctx)
	defer cancel()
	ev := wi.Event
	info := ActivityInfo{
		Name: ev.Name, InstanceID: wi.InstanceID, ExecutionID: wi.ExecutionID,
		TaskScheduledID: ev.EventID, DequeueCount: wi.DequeueCount,
		IdempotencyKey: ev.Tags[IdempotencyKeyTag],
	}
	if info.IdempotencyKey == "" {
		info.IdempotencyKey = fmt.Sprintf("%s:%s:%d", wi.InstanceID, wi.ExecutionID, ev.EventID)
	}
	log := w.log.With("instance_id", wi.InstanceID, "activity", ev.Name, "task_id", ev.EventID)

	out, err := w.callActivity(ctx, info, ev.Input)
	if err != nil && ctx.Err() != nil {
		// Shutting down: the failure is most likely the cancellation; let
		// another worker (or the next run) repeat the call.
		if aerr := w.b.AbandonActivityWorkItem(cctx, wi, 0); aerr != nil {
			log.Error("abandon activity work item", "err", aerr)
		}
		return
	}
	result := &history.Event{EventID: -1, Timestamp: time.Now().UTC(), TaskScheduledID: ev.EventID}
	if err == nil {
		s, encErr := encodeJSON(out)
		if encErr != nil {
			err = fmt.Errorf("encode result of activity %q: %w", ev.Name, encErr)
		} else {
			result.EventType = history.TaskCompleted
			result.Result = s
		}
	}
	if err != nil {
		fd := failureDetails(err)
		result.EventType = history.TaskFailed
		result.Reason = fd.ErrorMessage
		result.Details = fd.StackTrace
		result.FailureDetails = fd
	}
	if err := w.b.CompleteActivityWorkItem(cctx, wi, result); err != nil {
		log.Error("complete activity work item", "err", err)
	}
}

// callActivity runs one activity call, recovering panics.
func (w *Worker) callActivity(ctx context.Context, info ActivityInfo, input string) (out any, err error) {
	fn, ok := (ActivityFunc)(nil), false
	if w.o.Activities != nil {
		fn, ok = w.o.Activities(info.Name)
	}
	if !ok || fn == nil {
		return nil, &activityNotFoundError{name: info.Name}
	}
	raw := json.RawMessage(input)
	if input == "" {
		raw = json.RawMessage("null")
	}
	actx := WithActivityInfo(ctx, info)
	run := func(ctx context.Context) (out any, err error) {
		defer func() {
			if r := recover(); r != nil {
				err = &PanicError{Value: r, Stack: string(debug.Stack())}
			}
		}()
		return fn(ctx, raw)
	}
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, &PanicError{Value: r, Stack: string(debug.Stack())}
		}
	}()
	if w.o.InvokeActivity != nil {
		return w.o.InvokeActivity(actx, info, run)
	}
	return run(actx)
}

type activityNotFoundError struct{ name string }

func (e *activityNotFoundError) Error() string {
	return fmt.Sprintf("activity function '%s' is not registered with this worker", e.name)
}

func (e *activityNotFoundError) ErrorType() string { return "ActivityNotFound" }

// execCache keeps parked executions by instance id, least recently used
// first out.
type execCache struct {
	mu   sync.Mutex
	size int
	lru  *list.List // of *cacheEntry, most recent at the front
	byID map[string]*list.Element
}

type cacheEntry struct {
	instanceID  string
	ex          *executor
	executionID string
	historyLen  int
}

func newExecCache(size int) *execCache {
	return &execCache{size: size, lru: list.New(), byID: map[string]*list.Element{}}
}

// take removes and returns the entry of instanceID.
func (c *execCache) take(instanceID string) *cacheEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byID[instanceID]
	if !ok {
		return nil
	}
	delete(c.byID, instanceID)
	c.lru.Remove(el)
	return el.Value.(*cacheEntry)
}

// put stores an entry and returns an executor to close (evicted or not
// stored).
func (c *execCache) put(instanceID string, ent *cacheEntry) *executor {
	if c.size == 0 {
		return ent.ex
	}
	ent.instanceID = instanceID
	c.mu.Lock()
	defer c.mu.Unlock()
	var evicted *executor
	if el, ok := c.byID[instanceID]; ok {
		evicted = el.Value.(*cacheEntry).ex
		c.lru.Remove(el)
	}
	c.byID[instanceID] = c.lru.PushFront(ent)
	if c.lru.Len() > c.size {
		last := c.lru.Back()
		c.lru.Remove(last)
		old := last.Value.(*cacheEntry)
		delete(c.byID, old.instanceID)
		if evicted != nil {
			evicted.close()
		}
		evicted = old.ex
	}
	return evicted
}

// closeAll unloads every cached execution.
func (c *execCache) closeAll() {
	c.mu.Lock()
	var exs []*executor
	for el := c.lru.Front(); el != nil; el = el.Next() {
		exs = append(exs, el.Value.(*cacheEntry).ex)
	}
	c.lru.Init()
	clear(c.byID)
	c.mu.Unlock()
	for _, ex := range exs {
		ex.close()
	}
}
