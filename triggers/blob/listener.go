package blob

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	sdkblob "github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/lease"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/bindings/azstorage"
	"github.com/stratus-dev/stratus/bindings/storage"
	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/triggers"
	"github.com/stratus-dev/stratus/triggers/internal/singleton"
)

// Defaults.
const (
	DefaultPollInterval        = 10 * time.Second
	DefaultMaxBlobsPerTick     = 10000
	DefaultPoisonBlobThreshold = 5
	// Skew is how far before the cursor a blob's LastModified may be and
	// still be checked (clock differences, blobs written during a sweep).
	Skew = 2 * time.Minute
	// receiptLease is the lease taken on a receipt while its blob is processed.
	receiptLease = 60 * time.Second
)

// Receipt metadata.
const (
	metaStatus   = "Status"
	metaAttempts = "DequeueCount"
	statusIncomp = "Incomplete"
	statusDone   = "Complete"
	statusPoison = "Poisoned"
)

// ListenerOption configures a listener.
type ListenerOption func(*Listener)

// WithPollInterval sets the scan interval.
func WithPollInterval(d time.Duration) ListenerOption { return func(l *Listener) { l.poll = d } }

// WithMaxBlobsPerTick caps the names listed per scan tick.
func WithMaxBlobsPerTick(n int) ListenerOption { return func(l *Listener) { l.perTick = n } }

// Listener watches one function's blob path.
type Listener struct {
	fn         *registry.Function
	pattern    *Pattern
	clients    *azstorage.Clients
	container  *container.Client
	hosts      *container.Client
	hostID     string
	functionID string
	encoding   string
	threshold  int
	poll       time.Duration
	perTick    int
	sem        chan struct{}
	lock       *singleton.Lock
	now        func() time.Time
	log        *slog.Logger
}

var _ triggers.Listener = (*Listener)(nil)

// NewListener builds the listener of fn's blob trigger.
func NewListener(env *bindings.Env, fn *registry.Function, opts ...ListenerOption) (*Listener, error) {
	raw := fn.Trigger.String("path")
	path, err := env.Settings.Resolve(raw)
	if err != nil {
		return nil, fmt.Errorf("blobTrigger path %q: %w", raw, err)
	}
	pat, err := ParsePattern(path)
	if err != nil {
		return nil, fmt.Errorf("blobTrigger: %w", err)
	}
	c, err := env.Storage(fn.Trigger.String("connection"))
	if err != nil {
		return nil, fmt.Errorf("blobTrigger: %w", err)
	}
	hc, err := env.Storage("")
	if err != nil {
		return nil, fmt.Errorf("blobTrigger: %w", err)
	}
	bo := env.HostJSON().Extensions.Blobs
	threshold := bo.PoisonBlobThreshold
	if threshold <= 0 {
		// Before storage extension 5 the blob trigger used the queues'
		// maxDequeueCount; it still applies when poisonBlobThreshold is unset.
		threshold = env.HostJSON().Extensions.Queues.MaxDequeueCount
	}
	if threshold <= 0 {
		threshold = DefaultPoisonBlobThreshold
	}
	mdop := bo.MaxDegreeOfParallelism
	if mdop <= 0 {
		mdop = 8 * runtime.NumCPU()
	}
	log := env.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "blobTrigger", "function", fn.Name, "container", pat.Container)
	period, retry := singleton.Options(env)
	l := &Listener{
		fn: fn, pattern: pat, clients: c,
		container:  c.Blob.ServiceClient().NewContainerClient(pat.Container),
		hosts:      hc.Blob.ServiceClient().NewContainerClient(singleton.HostsContainer),
		hostID:     env.HostID,
		functionID: "Host.Functions." + fn.Name,
		encoding:   storage.MessageEncoding(env),
		threshold:  threshold,
		poll:       DefaultPollInterval,
		perTick:    DefaultMaxBlobsPerTick,
		sem:        make(chan struct{}, mdop),
		lock: &singleton.Lock{Blob: hc.Blob, Name: singleton.ListenerLockName(env.HostID, fn.Name),
			Period: period, RetryInterval: retry, Logger: log},
		now: env.Clock,
		log: log,
	}
	for _, o := range opts {
		o(l)
	}
	return l, nil
}

// Pattern returns the parsed path pattern.
func (l *Listener) Pattern() *Pattern { return l.pattern }

// Listen handles notified blobs on this instance and, while it holds the
// listener lock, scans the container. It returns when ctx is done and all
// in-flight invocations have finished.
func (l *Listener) Listen(ctx context.Context, deliver triggers.Deliver) error {
	var mu sync.Mutex
	pending := map[string]bool{}
	kick := make(chan struct{}, 1)
	unsubscribe := storage.NotifierFor(l.clients).Subscribe(storage.BlobTopic(l.pattern.Container), func(name string) {
		if _, ok := l.pattern.Match(name); !ok {
			return
		}
		mu.Lock()
		pending[name] = true
		mu.Unlock()
		select {
		case kick <- struct{}{}:
		default:
		}
	})
	defer unsubscribe()

	var wg sync.WaitGroup
	wg.Go(func() {
		var inflight sync.WaitGroup
		defer inflight.Wait()
		for {
			select {
			case <-ctx.Done():
				return
			case <-kick:
			}
			mu.Lock()
			names := pending
			pending = map[string]bool{}
			mu.Unlock()
			for name := range names {
				if !l.acquire(ctx) {
					return
				}
				inflight.Go(func() {
					defer l.release()
					if _, err := l.processName(ctx, deliver, name); err != nil && ctx.Err() == nil {
						l.log.Warn("notified blob not processed; the scan will retry it", "blob", name, "error", err)
					}
				})
			}
		}
	})
	err := l.lock.Run(ctx, func(ctx context.Context) { l.scanLoop(ctx, deliver) })
	wg.Wait()
	return err
}

func (l *Listener) acquire(ctx context.Context) bool {
	select {
	case l.sem <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

func (l *Listener) release() { <-l.sem }

// scanInfo is the persisted scan cursor.
type scanInfo struct {
	LatestScan time.Time `json:"LatestScan"`
}

func (l *Listener) scanInfoBlob() *blockblob.Client {
	return l.hosts.NewBlockBlobClient("blobscaninfo/" + l.hostID + "/" + l.clients.Account.Name + "/" + l.pattern.Container + "/scanInfo")
}

// scanLoop scans while this instance leads.
func (l *Listener) scanLoop(ctx context.Context, deliver triggers.Deliver) {
	cursor, err := l.loadCursor(ctx)
	if err != nil {
		l.log.Warn("read scan cursor failed; scanning from the beginning", "error", err)
	}
	var marker *string
	var sweepStart, holdBack time.Time
	for ctx.Err() == nil {
		if marker == nil {
			sweepStart = l.now()
		}
		next, hb, err := l.scanTick(ctx, deliver, marker, cursor)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			l.log.Warn("scan failed; retrying at the next tick", "error", err)
		default:
			if !hb.IsZero() && (holdBack.IsZero() || hb.Before(holdBack)) {
				holdBack = hb
			}
			marker = next
			if marker == nil { // sweep complete
				nc := sweepStart
				if !holdBack.IsZero() && holdBack.Before(nc) {
					nc = holdBack
				}
				holdBack = time.Time{}
				if !nc.Equal(cursor) {
					if err := l.saveCursor(ctx, nc); err != nil && ctx.Err() == nil {
						l.log.Warn("save scan cursor failed", "error", err)
					}
					cursor = nc
				}
			}
		}
		t := time.NewTimer(l.poll)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// scanTick lists up to perTick names from marker and processes the
// candidates. It returns the marker to continue from (nil at the end) and
// the earliest LastModified among blobs that must be looked at again.
func (l *Listener) scanTick(ctx context.Context, deliver triggers.Deliver, marker *string, cursor time.Time) (*string, time.Time, error) {
	since := cursor.Add(-Skew)
	listed := 0
	var holdBack time.Time
	var hmu sync.Mutex
	var wg sync.WaitGroup
	defer wg.Wait()
	for listed < l.perTick {
		opts := &container.ListBlobsFlatOptions{
			Include:    container.ListBlobsInclude{Metadata: true},
			Marker:     marker,
			MaxResults: to.Ptr(int32(min(5000, l.perTick-listed))),
		}
		if l.pattern.Prefix != "" {
			opts.Prefix = to.Ptr(l.pattern.Prefix)
		}
		page, err := l.container.NewListBlobsFlatPager(opts).NextPage(ctx)
		if storage.IsNotFound(err) {
			return nil, time.Time{}, nil // no container yet
		}
		if err != nil {
			return marker, holdBack, fmt.Errorf("list %s: %w", l.pattern.Container, err)
		}
		for _, it := range page.Segment.BlobItems {
			listed++
			if it.Name == nil || it.Properties == nil || it.Properties.ETag == nil || it.Properties.LastModified == nil {
				continue
			}
			lm := *it.Properties.LastModified
			if lm.Before(since) {
				continue
			}
			if _, ok := l.pattern.Match(*it.Name); !ok {
				continue
			}
			v := version{name: *it.Name, etag: *it.Properties.ETag, lastModified: lm,
				contentType: deref(it.Properties.ContentType), contentLength: deref(it.Properties.ContentLength), metadata: flat(it.Metadata)}
			if !l.acquire(ctx) {
				return marker, holdBack, ctx.Err()
			}
			wg.Go(func() {
				defer l.release()
				done, err := l.process(ctx, deliver, v)
				if err != nil && ctx.Err() == nil {
					l.log.Warn("blob not processed; retrying at the next sweep", "blob", v.name, "error", err)
				}
				if !done {
					hmu.Lock()
					if holdBack.IsZero() || v.lastModified.Before(holdBack) {
						holdBack = v.lastModified
					}
					hmu.Unlock()
				}
			})
		}
		marker = page.NextMarker
		if marker == nil || *marker == "" {
			wg.Wait()
			return nil, holdBack, nil
		}
	}
	wg.Wait()
	return marker, holdBack, nil
}

func (l *Listener) loadCursor(ctx context.Context) (time.Time, error) {
	res, err := l.scanInfoBlob().DownloadStream(ctx, nil)
	if storage.IsNotFound(err) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, err
	}
	defer res.Body.Close()
	var si scanInfo
	if err := json.NewDecoder(res.Body).Decode(&si); err != nil {
		return time.Time{}, fmt.Errorf("scanInfo: %w", err)
	}
	return si.LatestScan, nil
}

func (l *Listener) saveCursor(ctx context.Context, t time.Time) error {
	data, _ := json.Marshal(scanInfo{LatestScan: t.UTC()})
	_, err := l.scanInfoBlob().UploadBuffer(ctx, data, nil)
	if storage.ErrorCode(err) == "ContainerNotFound" {
		if err = storage.CreateContainer(ctx, l.clients.Blob, singleton.HostsContainer); err == nil {
			_, err = l.scanInfoBlob().UploadBuffer(ctx, data, nil)
		}
	}
	return err
}

// version is one blob version to process.
type version struct {
	name          string
	etag          azcore.ETag
	lastModified  time.Time
	contentType   string
	contentLength int64
	metadata      map[string]string
}

// processName processes the current version of a notified blob.
func (l *Listener) processName(ctx context.Context, deliver triggers.Deliver, name string) (bool, error) {
	p, err := l.container.NewBlobClient(name).GetProperties(ctx, nil)
	if storage.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return l.process(ctx, deliver, version{name: name, etag: *p.ETag, lastModified: deref(p.LastModified),
		contentType: deref(p.ContentType), contentLength: deref(p.ContentLength), metadata: flat(p.Metadata)})
}

// ReceiptName is the receipt blob of one blob version for one function.
func ReceiptName(hostID, functionID string, etag azcore.ETag, containerName, blobName string) string {
	return "blobreceipts/" + hostID + "/" + functionID + "/" + strings.Trim(string(etag), `"`) + "/" + containerName + "/" + blobName
}

// process runs the function for one blob version unless its receipt says it
// already ran. done reports that nothing is left to do for this version
// (complete, poisoned, superseded); false means it must be looked at again.
func (l *Listener) process(ctx context.Context, deliver triggers.Deliver, v version) (done bool, err error) {
	log := l.log.With("blob", v.name, "etag", string(v.etag))
	rc := l.hosts.NewBlockBlobClient(ReceiptName(l.hostID, l.functionID, v.etag, l.pattern.Container, v.name))
	props, err := rc.GetProperties(ctx, nil)
	switch {
	case err == nil:
		if s := meta(props.Metadata, metaStatus); s == statusDone || s == statusPoison {
			return true, nil
		}
	case storage.IsNotFound(err):
		if err := l.createReceipt(ctx, rc); err != nil {
			return false, err
		}
	default:
		return false, fmt.Errorf("read receipt: %w", err)
	}
	leaseID := bindings.NewGUID()
	lc, err := lease.NewBlobClient(rc, &lease.BlobClientOptions{LeaseID: &leaseID})
	if err != nil {
		return false, err
	}
	if _, err := lc.AcquireLease(ctx, int32(receiptLease/time.Second), nil); err != nil {
		if storage.IsConflict(err) {
			return false, nil // being processed elsewhere
		}
		return false, fmt.Errorf("lease receipt: %w", err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_, _ = lc.ReleaseLease(rctx, nil)
	}()
	withLease := &sdkblob.AccessConditions{LeaseAccessConditions: &sdkblob.LeaseAccessConditions{LeaseID: &leaseID}}
	if props, err = rc.GetProperties(ctx, nil); err != nil {
		return false, fmt.Errorf("read receipt: %w", err)
	}
	if s := meta(props.Metadata, metaStatus); s == statusDone || s == statusPoison {
		return true, nil
	}
	attempts, _ := strconv.Atoi(meta(props.Metadata, metaAttempts))
	attempts++
	setStatus := func(ctx context.Context, status string) error {
		_, err := rc.SetMetadata(ctx, map[string]*string{metaStatus: to.Ptr(status), metaAttempts: to.Ptr(strconv.Itoa(attempts))},
			&sdkblob.SetMetadataOptions{AccessConditions: withLease})
		return err
	}
	if attempts > l.threshold {
		return l.poison(ctx, log, v, setStatus)
	}
	if err := setStatus(ctx, statusIncomp); err != nil {
		return false, fmt.Errorf("count attempt: %w", err)
	}

	bc := l.container.NewBlobClient(v.name)
	res, err := bc.DownloadStream(ctx, &sdkblob.DownloadStreamOptions{AccessConditions: &sdkblob.AccessConditions{
		ModifiedAccessConditions: &sdkblob.ModifiedAccessConditions{IfMatch: &v.etag}}})
	if storage.IsNotFound(err) || storage.StatusCode(err) == 412 {
		log.Debug("blob changed or deleted before it was read; the new version has its own receipt")
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("download: %w", err)
	}
	data, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return false, fmt.Errorf("download: %w", err)
	}
	if res.Metadata != nil {
		v.metadata = flat(res.Metadata)
	}

	b := &Blob{Container: l.pattern.Container, Name: v.name, Data: data, ETag: string(v.etag), URI: bc.URL(),
		LastModified: v.lastModified.UTC(), ContentType: v.contentType, ContentLength: int64(len(data)), Metadata: v.metadata}
	b.Captures, _ = l.pattern.Match(v.name)

	// Keep the receipt leased while the function runs.
	rctx, stopRenew := context.WithCancel(ctx)
	var renew sync.WaitGroup
	renew.Go(func() {
		t := time.NewTicker(receiptLease / 3)
		defer t.Stop()
		for {
			select {
			case <-rctx.Done():
				return
			case <-t.C:
				if _, err := lc.RenewLease(rctx, nil); err != nil && rctx.Err() == nil {
					log.Warn("renew receipt lease failed", "error", err)
				}
			}
		}
	})
	_, derr := deliver(ctx, &registry.Invocation{Function: l.fn, Trigger: b, Data: bindingData(b)})
	stopRenew()
	renew.Wait()

	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	switch {
	case derr == nil:
		if err := setStatus(actx, statusDone); err != nil {
			return false, fmt.Errorf("function succeeded but the receipt could not be completed (it may run again): %w", err)
		}
		return true, nil
	case ctx.Err() != nil:
		return false, derr
	case attempts >= l.threshold:
		log.Warn("blob failed its last attempt; reporting it on the poison queue", "attempts", attempts, "error", derr)
		return l.poison(actx, log, v, setStatus)
	default:
		return false, fmt.Errorf("attempt %d of %d: %w", attempts, l.threshold, derr)
	}
}

func (l *Listener) createReceipt(ctx context.Context, rc *blockblob.Client) error {
	opts := &blockblob.UploadBufferOptions{
		Metadata: map[string]*string{metaStatus: to.Ptr(statusIncomp), metaAttempts: to.Ptr("0")},
		AccessConditions: &sdkblob.AccessConditions{ModifiedAccessConditions: &sdkblob.ModifiedAccessConditions{
			IfNoneMatch: to.Ptr(azcore.ETagAny)}},
	}
	_, err := rc.UploadBuffer(ctx, nil, opts)
	if storage.ErrorCode(err) == "ContainerNotFound" {
		if err = storage.CreateContainer(ctx, l.clients.Blob, singleton.HostsContainer); err == nil {
			_, err = rc.UploadBuffer(ctx, nil, opts)
		}
	}
	if err != nil && !storage.IsConflict(err) {
		return fmt.Errorf("create receipt: %w", err)
	}
	return nil
}

// poisonMessage is the message the host puts on webjobs-blobtrigger-poison.
type poisonMessage struct {
	Type          string
	FunctionID    string `json:"FunctionId"`
	BlobType      string
	ContainerName string
	BlobName      string
	ETag          string
}

func (l *Listener) poison(ctx context.Context, log *slog.Logger, v version, setStatus func(context.Context, string) error) (bool, error) {
	msg, _ := json.Marshal(poisonMessage{Type: "BlobTrigger", FunctionID: l.functionID, BlobType: "BlockBlob",
		ContainerName: l.pattern.Container, BlobName: v.name, ETag: string(v.etag)})
	q := l.clients.Queue.NewQueueClient(PoisonQueue)
	if err := storage.Enqueue(ctx, q, storage.EncodeMessage(msg, l.encoding)); err != nil {
		return false, fmt.Errorf("report poison blob: %w", err)
	}
	if err := setStatus(ctx, statusPoison); err != nil {
		return false, fmt.Errorf("mark receipt poisoned: %w", err)
	}
	log.Warn("blob moved to the poison queue", "queue", PoisonQueue)
	return true, nil
}

func bindingData(b *Blob) map[string]any {
	d := map[string]any{}
	for k, v := range b.Captures {
		d[k] = v
	}
	md := map[string]any{}
	for k, v := range b.Metadata {
		md[k] = v
	}
	d["BlobTrigger"] = b.Path()
	d["Uri"] = b.URI
	d["Metadata"] = md
	d["Properties"] = map[string]any{
		"ContentType": b.ContentType, "ContentLength": b.ContentLength, "ETag": b.ETag,
		"LastModified": b.LastModified, "BlobType": "BlockBlob",
	}
	return d
}

func meta(m map[string]*string, key string) string {
	for k, v := range m {
		if strings.EqualFold(k, key) && v != nil {
			return *v
		}
	}
	return ""
}

func flat(m map[string]*string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		if v != nil {
			out[k] = *v
		}
	}
	return out
}

func deref[T any](p *T) T {
	var z T
	if p == nil {
		return z
	}
	return *p
}
