package azurestorage

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/lease"

	"github.com/stratus-dev/stratus/bindings"
)

// Partitions are owned through blob leases on h-leases/default/{queue}, the
// layout of DurableTask.AzureStorage's legacy blob partition manager: first
// come, first served, no stealing. A lease is renewed every third of its
// duration; a process that dies loses its leases when they expire and
// another process picks the partitions up on its next lease round.

// partition is a control queue this process owns.
type partition struct {
	index  int
	lease  *lease.BlobClient
	cancel context.CancelFunc
	wake   chan struct{}
	done   chan struct{}
	// validUntil is when the lease expires unless renewed (guarded by b.mu).
	validUntil time.Time
}

func (b *Backend) leaseBlobName(i int) string { return "default/" + b.names.controlQueues[i] }

// leaseInfo is the body of a lease blob.
type leaseInfo struct {
	PartitionID string `json:"PartitionId"`
	Owner       string `json:"Owner"`
	Token       string `json:"Token"`
	Epoch       int    `json:"Epoch"`
}

// acquirePartitions tries to lease every partition this process does not own.
func (b *Backend) acquirePartitions(ctx context.Context) {
	for i := range b.opts.PartitionCount {
		b.mu.Lock()
		_, have := b.owned[i]
		b.mu.Unlock()
		if have || ctx.Err() != nil || b.stopped.Load() {
			continue
		}
		bc := b.blob.ServiceClient().NewContainerClient(b.names.leaseContainer).NewBlockBlobClient(b.leaseBlobName(i))
		leaseID := bindings.NewGUID()
		lc, err := lease.NewBlobClient(bc, &lease.BlobClientOptions{LeaseID: to.Ptr(leaseID)})
		if err != nil {
			continue
		}
		t0 := time.Now()
		_, err = lc.AcquireLease(ctx, int32(b.opts.LeaseDuration/time.Second), nil)
		if isStatus(err, http.StatusNotFound) {
			body, _ := json.Marshal(leaseInfo{PartitionID: b.names.controlQueues[i]})
			if _, uerr := bc.UploadBuffer(ctx, body, &blockblob.UploadBufferOptions{AccessConditions: &blob.AccessConditions{
				ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}}}); uerr != nil && !isStatus(uerr, http.StatusConflict, http.StatusPreconditionFailed) {
				b.log.Debug("create lease blob", "partition", b.names.controlQueues[i], "error", uerr)
				continue
			}
			t0 = time.Now()
			_, err = lc.AcquireLease(ctx, int32(b.opts.LeaseDuration/time.Second), nil)
		}
		if err != nil {
			if !isStatus(err, http.StatusConflict) {
				b.log.Debug("acquire partition lease", "partition", b.names.controlQueues[i], "error", err)
			}
			continue // leased by another worker
		}
		body, _ := json.Marshal(leaseInfo{PartitionID: b.names.controlQueues[i], Owner: b.opts.WorkerID, Token: leaseID})
		if _, err := bc.UploadBuffer(ctx, body, &blockblob.UploadBufferOptions{AccessConditions: &blob.AccessConditions{
			LeaseAccessConditions: &blob.LeaseAccessConditions{LeaseID: to.Ptr(leaseID)}}}); err != nil {
			b.log.Debug("write lease owner", "partition", b.names.controlQueues[i], "error", err)
		}
		b.startPartition(i, lc, t0.Add(b.opts.LeaseDuration))
	}
}

func (b *Backend) startPartition(i int, lc *lease.BlobClient, validUntil time.Time) {
	ctx, cancel := context.WithCancel(b.runCtx)
	p := &partition{index: i, lease: lc, cancel: cancel, wake: make(chan struct{}, 1), done: make(chan struct{}), validUntil: validUntil}
	b.mu.Lock()
	b.owned[i] = p
	b.mu.Unlock()
	b.log.Info("partition acquired", "partition", b.names.controlQueues[i], "worker", b.opts.WorkerID)
	b.wg.Go(func() {
		defer close(p.done)
		b.controlPoller(ctx, p)
	})
}

// leaseLoop renews owned leases and picks up free partitions.
func (b *Backend) leaseLoop(ctx context.Context) {
	renew := b.opts.LeaseDuration / 3
	for sleep(ctx, renew) {
		b.mu.Lock()
		owned := make([]*partition, 0, len(b.owned))
		for _, p := range b.owned {
			owned = append(owned, p)
		}
		b.mu.Unlock()
		for _, p := range owned {
			t0 := time.Now()
			_, err := p.lease.RenewLease(ctx, nil)
			if ctx.Err() != nil {
				return
			}
			b.mu.Lock()
			switch {
			case err == nil:
				p.validUntil = t0.Add(b.opts.LeaseDuration)
				b.mu.Unlock()
			case isStatus(err, http.StatusConflict, http.StatusPreconditionFailed, http.StatusNotFound) || time.Until(p.validUntil) < renew/2:
				b.mu.Unlock()
				b.log.Warn("partition lease lost", "partition", b.names.controlQueues[p.index], "error", err)
				b.dropPartition(p)
			default:
				b.mu.Unlock()
				b.log.Warn("partition lease renewal failed; retrying", "partition", b.names.controlQueues[p.index], "error", err)
			}
		}
		b.acquirePartitions(ctx)
	}
}

// dropPartition forgets a partition whose lease was lost: its poller stops
// and its idle sessions and cached histories go. Work items in flight fail
// with ErrWorkItemLost when they complete.
func (b *Backend) dropPartition(p *partition) {
	p.cancel()
	b.mu.Lock()
	if b.owned[p.index] == p {
		delete(b.owned, p.index)
	}
	for id, s := range b.sessions {
		if s.partition == p.index && !s.locked {
			b.forgetSessionLocked(s)
			delete(b.sessions, id)
		}
	}
	for id, c := range b.cache {
		if c.partition == p.index {
			delete(b.cache, id)
		}
	}
	b.mu.Unlock()
}

func (b *Backend) releasePartitions(ctx context.Context) {
	b.mu.Lock()
	owned := make([]*partition, 0, len(b.owned))
	for _, p := range b.owned {
		owned = append(owned, p)
	}
	b.owned = map[int]*partition{}
	b.mu.Unlock()
	for _, p := range owned {
		p.cancel()
		<-p.done
		if _, err := p.lease.ReleaseLease(ctx, nil); err != nil {
			b.log.Debug("release lease", "partition", b.names.controlQueues[p.index], "error", err)
		}
	}
}

func (b *Backend) ownedIndexes() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []int
	for i := range b.owned {
		out = append(out, i)
	}
	slices.Sort(out)
	return out
}

// ownsLocked reports whether this process holds a valid lease on partition i.
func (b *Backend) ownsLocked(i int) bool {
	p, ok := b.owned[i]
	return ok && time.Now().Before(p.validUntil)
}

// owns reports whether this process holds a valid lease on partition i.
func (b *Backend) owns(i int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ownsLocked(i)
}

// wakePartition makes partition i's poller poll now.
func (b *Backend) wakePartition(i int) {
	b.mu.Lock()
	p := b.owned[i]
	b.mu.Unlock()
	if p != nil {
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// wakeLater wakes the poller of queue i (-1: the work-item queue) after d.
func (b *Backend) wakeLater(i int, d time.Duration) {
	time.AfterFunc(d, func() {
		if b.stopped.Load() {
			return
		}
		if i < 0 {
			b.wakeActivities()
		} else {
			b.wakePartition(i)
		}
	})
}
