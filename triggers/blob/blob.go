// Package blob owns the Azure Storage blob trigger (binding type
// "blobTrigger"): matching blob names against path patterns, finding new and
// changed blobs by scanning containers, and invoking a function once per
// blob version with receipts kept as the Azure Functions host keeps them.
//
// # Once per version: receipts
//
// A blob version is identified by its ETag. Before a function runs for one,
// the host claims the receipt blob
// azure-webjobs-hosts/blobreceipts/{hostId}/Host.Functions.<Name>/{etag}/{container}/{blob}:
// it creates it if missing (If-None-Match *), then takes a 60 s lease on it
// (renewed while the function runs). Only the lease holder proceeds; it
// re-reads the receipt under the lease, skips the blob when the receipt says
// Complete, counts the attempt in the receipt's metadata, runs the function,
// and on success marks the receipt Complete. Receipts live in storage, so
// this holds across restarts and across every host process that shares the
// account, whichever of them noticed the blob. A blob whose function failed
// poisonBlobThreshold times (host.json extensions.blobs; when unset,
// extensions.queues.maxDequeueCount, as before storage extension 5; default
// 5; each attempt counted in the receipt) is reported on the queue
// webjobs-blobtrigger-poison with the host's message JSON
// {"Type":"BlobTrigger","FunctionId","BlobType","ContainerName","BlobName","ETag"}
// and its receipt is marked Poisoned, so it does not run again.
//
// # Finding blobs: a bounded scan plus in-process notifications
//
// One instance per function scans (a singleton blob lease on
// azure-webjobs-hosts/locks/{hostId}/Host.Functions.<Name>.Listener), every
// 10 s by default. Listing a container cannot filter by date, so the scan is
// bounded in two ways:
//
//   - Listing: each tick lists at most MaxBlobsPerTick names (10 000, as the
//     Azure Functions host caps a poll), only under the pattern's literal
//     prefix, and continues from the last tick's continuation marker: a
//     container of N blobs is swept in ceil(N/10 000) ticks, never all at
//     once.
//   - Checking: only blobs whose LastModified is at or after the cursor
//     minus a clock-skew allowance (2 min) are checked against their
//     receipts. The cursor is the start time of the last complete sweep,
//     persisted in azure-webjobs-hosts/blobscaninfo/{hostId}/{account}/{container}/scanInfo
//     as {"LatestScan": ...}, so a restarted host does not re-check old
//     blobs either. A blob that failed (or was busy elsewhere) holds the
//     cursor back to its LastModified so that the next sweep retries it,
//     also after a restart.
//
// When a blob output binding of this process writes a blob in a watched
// container, the listener is told in-process (storage.Notifier) and handles
// that blob at once, on whichever instance wrote it; the receipt lease keeps
// this safe next to the scanner.
//
// # Why no blobtrigger queue
//
// The Azure Functions host hands each found blob to the queue
// azure-webjobs-blobtrigger-{hostId} so that all instances process blobs.
// Stratus processes a blob where it is found: the scanner's instance, or the
// writer's instance for notified blobs. The receipt lease gives the same
// once-per-version guarantee without a second message per blob, a shared
// per-host queue that every blob function would have to dispatch from, and
// the duplicate-message handling that queue needs; retries come from the
// receipt's attempt count and the cursor rather than from message
// visibility. The cost is that scanned (not notified) blobs are processed by
// one instance, with up to maxDegreeOfParallelism at a time.
//
// # Binding data
//
// BlobTrigger ("container/blob"), Uri, Properties (ContentType,
// ContentLength, ETag, LastModified, ...), Metadata, and the pattern's
// captures ({name}, {ext}, ...).
package blob

import (
	"context"
	"fmt"
	"time"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/triggers"
)

// TypeName is the trigger's binding type.
const TypeName = "blobTrigger"

// PoisonQueue is where blobs that keep failing are reported.
const PoisonQueue = "webjobs-blobtrigger-poison"

// Trigger describes a blob trigger binding.
type Trigger struct {
	// Path is the pattern, e.g. "uploads/{name}.txt"; %Setting% allowed.
	Path string
	// Connection names the storage connection setting ("" = AzureWebJobsStorage).
	Connection string
	// Name is the binding name; "blob" when empty.
	Name string
}

// Binding returns the function.json binding.
func (t Trigger) Binding() bindings.Binding {
	name := t.Name
	if name == "" {
		name = "blob"
	}
	props := map[string]any{"path": t.Path}
	if t.Connection != "" {
		props["connection"] = t.Connection
	}
	return bindings.Binding{Type: TypeName, Direction: bindings.In, Name: name, Properties: props}
}

// Blob is the blob a handler receives.
type Blob struct {
	// Container and Name locate the blob.
	Container, Name string
	// Data is the content of the version that triggered.
	Data []byte
	// ETag identifies the version.
	ETag string
	// URI is the blob's URL.
	URI string
	// LastModified, ContentType and ContentLength are blob properties.
	LastModified  time.Time
	ContentType   string
	ContentLength int64
	// Metadata is the blob's metadata.
	Metadata map[string]string
	// Captures are the pattern's captured values ({name}, ...).
	Captures map[string]string
}

// Path returns "container/name".
func (b *Blob) Path() string { return b.Container + "/" + b.Name }

// Function builds a blob-triggered function.
func Function(name string, t Trigger, handler func(ctx context.Context, b *Blob) error, opts ...registry.Option) registry.Function {
	fn := registry.Function{
		Name:    name,
		Trigger: t.Binding(),
		Handler: registry.HandlerFunc(func(ctx context.Context, inv *registry.Invocation) (any, error) {
			b, ok := inv.Trigger.(*Blob)
			if !ok {
				return nil, fmt.Errorf("blob function %s: trigger value is %T, not *blob.Blob", inv.Function.Name, inv.Trigger)
			}
			return nil, handler(ctx, b)
		}),
	}
	for _, o := range opts {
		o(&fn)
	}
	return fn
}

// Register registers the blob trigger plugin under "blobTrigger".
func Register(r *triggers.Registry) { r.Register(TypeName, New) }

// New is the blobTrigger factory.
func New(env *bindings.Env, fn *registry.Function) (triggers.Listener, error) {
	return NewListener(env, fn)
}
