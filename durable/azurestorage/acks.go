package azurestorage

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
)

// ackBook holds an instance's consumed control messages that may still be
// in their queue: committed checkpoints consumed them, and no delete has
// been seen to remove them yet. A copy of such a message that comes back
// is recognised by its id however many other messages the instance has
// processed since; the book is written to the sentinel with every
// checkpoint (UnackedMessages), so that the next owner knows them too. It
// is shared by the successive cached states of an instance and changes as
// deletes finish. A nil book is empty.
type ackBook struct {
	mu      sync.Mutex
	pending map[string]string // message id → the last pop receipt known for it
}

func newAckBook(pending map[string]string) *ackBook {
	if pending == nil {
		pending = map[string]string{}
	}
	return &ackBook{pending: pending}
}

func (k *ackBook) has(id string) bool {
	if k == nil {
		return false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	_, ok := k.pending[id]
	return ok
}

// add records messages a committed checkpoint consumed.
func (k *ackBook) add(ids map[string]string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	maps.Copy(k.pending, ids)
}

// gone records that message id is out of its queue for good.
func (k *ackBook) gone(id string) {
	if k == nil {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.pending, id)
}

// with returns the book's messages plus ids, as the sentinel records them.
func (k *ackBook) with(ids map[string]string) map[string]string {
	if k == nil {
		return maps.Clone(ids)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	out := maps.Clone(k.pending)
	maps.Copy(out, ids)
	return out
}

// consumedReceipts maps the queue messages among msgs (not hand-overs,
// which are acknowledged through their activity message) to their current
// pop receipts.
func (b *Backend) consumedReceipts(msgs []*qmsg) map[string]string {
	out := make(map[string]string, len(msgs))
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, m := range msgs {
		if m.via == nil {
			out[m.id] = m.receipt
		}
	}
	return out
}

// deleteQueued deletes message id with a pop receipt and reports whether
// the message is out of the queue for good: deleted now, or not found (an
// earlier delete removed it). A pop receipt that no longer matches means
// that the message is still there, fetched again since: its copy is on its
// way to the owner of the queue, and the message stays in the book until
// that copy is deleted.
func (b *Backend) deleteQueued(ctx context.Context, qi int, id, receipt string) (bool, error) {
	err := b.retry(ctx, "delete message from "+b.queueName(qi), func() error {
		_, err := b.queueClient(qi).DeleteMessage(ctx, id, receipt, nil)
		return err
	})
	var re *azcore.ResponseError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &re) && re.StatusCode == http.StatusNotFound:
		return true, nil
	case errors.As(err, &re) && re.StatusCode == http.StatusBadRequest:
		return false, nil
	}
	return false, err
}

// ackConsumed acknowledges the messages of a committed checkpoint (or
// copies of consumed messages that came back): a hand-over through its
// activity message, a control message by deleting it, which takes it out
// of book once it is gone. It runs in the background when wait is false;
// Stop waits for it.
func (b *Backend) ackConsumed(ctx context.Context, book *ackBook, msgs []*qmsg, wait bool) {
	if len(msgs) == 0 {
		return
	}
	run := func(ctx context.Context) {
		sem := make(chan struct{}, 16)
		var wg sync.WaitGroup
		for _, m := range msgs {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if m.via != nil {
					if err := b.deleteMessage(ctx, m); err != nil {
						b.log.Warn("acknowledge activity result", "message_id", m.id, "error", err)
					}
					return
				}
				gone, err := b.deleteQueued(ctx, m.queue, m.id, b.receipt(m))
				if err != nil {
					b.log.Warn("acknowledge message", "queue", b.queueName(m.queue), "message_id", m.id, "error", err)
				}
				if gone {
					book.gone(m.id)
				}
			})
		}
		wg.Wait()
	}
	if wait {
		run(ctx)
		return
	}
	b.acks.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		run(ctx)
	})
}

// settleUnacked resolves the consumed messages a sentinel lists as perhaps
// still queued (written by this or another process, which may have died
// before deleting them): each is deleted with its recorded pop receipt.
// Those found gone leave the book; the others (fetched again since, or not
// reachable now) stay, so that their copies are dropped when they come
// back. It runs after recoverCheckpoint has finished the checkpoint that
// consumed them.
func (b *Backend) settleUnacked(ctx context.Context, qi int, unacked map[string]string) *ackBook {
	book := newAckBook(maps.Clone(unacked))
	if len(unacked) == 0 {
		return book
	}
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for id, receipt := range unacked {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			gone, err := b.deleteQueued(ctx, qi, id, receipt)
			if err != nil && ctx.Err() == nil {
				b.log.Warn("acknowledge message of an earlier checkpoint", "queue", b.queueName(qi), "message_id", id, "error", err)
			}
			if gone {
				book.gone(id)
			}
		})
	}
	wg.Wait()
	return book
}
