// Package singleton owns the blob-lease lock that keeps a listener (a timer's
// schedule, a blob container scan) to one host instance among all the
// instances that share a storage account, as the Azure Functions host's
// [Singleton(Mode = Listener)] does: a 15-60 s lease on a lock blob in the
// azure-webjobs-hosts container, renewed while held, retried by the others.
package singleton

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/lease"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/bindings/storage"
)

// HostsContainer is the container where the host keeps locks, timer status,
// blob receipts and scan cursors.
const HostsContainer = "azure-webjobs-hosts"

// ListenerLockName is the lock blob of a function's listener:
// locks/{hostId}/Host.Functions.<Name>.Listener.
func ListenerLockName(hostID, function string) string {
	return "locks/" + hostID + "/Host.Functions." + function + ".Listener"
}

// Lock is a blob-lease lock.
type Lock struct {
	// Blob is the account's blob client.
	Blob *azblob.Client
	// Name is the lock blob's name inside [HostsContainer].
	Name string
	// Period is the lease duration (15-60 s; clamped).
	Period time.Duration
	// RetryInterval is how often a loser tries again.
	RetryInterval time.Duration
	// Logger logs acquisitions and losses.
	Logger *slog.Logger
}

// Options returns the lock period and recovery polling interval from
// host.json's "singleton" section (listenerLockPeriod, default 60 s;
// listenerLockRecoveryPollingInterval, default 1 min).
func Options(env *bindings.Env) (period, retry time.Duration) {
	s := env.HostJSON().Singleton
	period, retry = time.Minute, time.Minute
	if s.ListenerLockPeriod != nil {
		period = s.ListenerLockPeriod.Duration()
	}
	if s.ListenerLockRecoveryPollingInterval != nil {
		retry = s.ListenerLockRecoveryPollingInterval.Duration()
	}
	return period, retry
}

// Run holds the lock while ctx lasts: it acquires the lease (trying again
// every RetryInterval), then calls fn with a context that is cancelled when
// the lease is lost or ctx ends, renews the lease while fn runs, and
// releases it when fn returns. After a loss it tries to acquire again. Run
// returns nil when ctx is done.
func (l *Lock) Run(ctx context.Context, fn func(ctx context.Context)) error {
	period := min(max(l.Period, 15*time.Second), 60*time.Second)
	retry := l.RetryInterval
	if retry <= 0 {
		retry = time.Minute
	}
	log := l.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("lock", l.Name)
	bc := l.Blob.ServiceClient().NewContainerClient(HostsContainer).NewBlockBlobClient(l.Name)
	lc, err := lease.NewBlobClient(bc, &lease.BlobClientOptions{LeaseID: to.Ptr(bindings.NewGUID())})
	if err != nil {
		return fmt.Errorf("lock %s: %w", l.Name, err)
	}
	for ctx.Err() == nil {
		ok, err := l.acquire(ctx, bc, lc, period)
		if err != nil && ctx.Err() == nil {
			log.Warn("singleton lock: acquire failed; retrying", "error", err)
		}
		if !ok {
			if !sleep(ctx, retry) {
				return nil
			}
			continue
		}
		log.Debug("singleton lock acquired")
		l.hold(ctx, lc, period, log, fn)
	}
	return nil
}

func (l *Lock) acquire(ctx context.Context, bc *blockblob.Client, lc *lease.BlobClient, period time.Duration) (bool, error) {
	_, err := lc.AcquireLease(ctx, int32(period/time.Second), nil)
	if storage.IsNotFound(err) {
		if err := storage.CreateContainer(ctx, l.Blob, HostsContainer); err != nil {
			return false, err
		}
		_, err = bc.UploadBuffer(ctx, nil, &blockblob.UploadBufferOptions{AccessConditions: &blob.AccessConditions{
			ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}}})
		if err != nil && !storage.IsConflict(err) {
			return false, fmt.Errorf("create lock blob: %w", err)
		}
		_, err = lc.AcquireLease(ctx, int32(period/time.Second), nil)
	}
	if storage.IsConflict(err) {
		return false, nil // held by another instance
	}
	if err != nil {
		return false, fmt.Errorf("acquire lease: %w", err)
	}
	return true, nil
}

// hold runs fn under the lease, renewing it every period/3; it returns when
// fn has returned and the lease is released.
func (l *Lock) hold(ctx context.Context, lc *lease.BlobClient, period time.Duration, log *slog.Logger, fn func(context.Context)) {
	hctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(hctx)
	}()
	t := time.NewTicker(period / 3)
	lastRenew := time.Now()
loop:
	for {
		select {
		case <-done:
			break loop
		case <-hctx.Done():
			break loop
		case <-t.C:
			_, err := lc.RenewLease(hctx, nil)
			switch {
			case err == nil:
				lastRenew = time.Now()
			case storage.IsConflict(err):
				log.Warn("singleton lock lost", "error", err)
				break loop
			case time.Since(lastRenew) > period*2/3:
				log.Warn("singleton lock: cannot renew; giving it up", "error", err)
				break loop
			case hctx.Err() == nil:
				log.Warn("singleton lock: renew failed; retrying", "error", err)
			}
		}
	}
	t.Stop()
	cancel()
	<-done
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer rcancel()
	if _, err := lc.ReleaseLease(rctx, nil); err != nil && !storage.IsConflict(err) {
		log.Debug("singleton lock: release failed", "error", err)
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
