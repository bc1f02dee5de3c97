package azurestorage

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/durable"
	"github.com/stratus-dev/stratus/durable/backend"
)

// TestLateCopiesOfConsumedMessagesAreDropped "kills" a worker right after
// an entity checkpoint's history write, so that the signals it consumed
// stay in the queue, invisible for a long visibility timeout. Meanwhile
// far more signals than any window of recent ids holds are sent and
// processed by a fresh backend; the copies only come back after all of
// them. Each signal must still be applied exactly once.
func TestLateCopiesOfConsumedMessagesAreDropped(t *testing.T) {
	t.Parallel()
	const (
		first = 5   // signals, some of them consumed by the crashed checkpoint
		burst = 600 // more than the entity's and the sentinel's windows of ids
		hold  = 15 * time.Second
	)
	env := newEnv(t)
	counter := durable.Entity(func(ctx *durable.EntityContext, n *int) (any, error) {
		var d int
		if err := ctx.Input(&d); err != nil {
			return nil, err
		}
		*n += d
		return nil, nil
	})
	runWorker := func(b *Backend) (stop func()) {
		w := durable.NewWorker(b, durable.WorkerOptions{
			Entities: func(n string) (durable.EntityFunc, bool) { return counter, n == "counter" },
			Logger:   testLogger(),
		})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = w.Run(ctx); close(done) }()
		var once sync.Once
		stop = func() { once.Do(func() { cancel(); <-done }) }
		t.Cleanup(stop)
		return stop
	}
	id := durable.NewEntityID("Counter", "k")
	ctx := context.Background()
	client := durable.NewClient(env.open(t, env.options()))
	signal := func() {
		if err := client.SignalEntity(ctx, id, "add", 1); err != nil {
			t.Error(err)
		}
	}
	oa := env.options()
	oa.ControlQueueVisibilityTimeout = hold
	a := env.start(t, oa)
	for range first {
		signal()
	}
	var turns atomic.Int32
	crashed := make(chan struct{})
	a.failAfterHistory = func(string, *backend.OrchestrationCompletion) bool {
		if turns.Add(1) == 1 {
			close(crashed)
			return true
		}
		return false
	}
	stopA := runWorker(a)
	select {
	case <-crashed:
	case <-time.After(30 * time.Second):
		t.Fatal("no checkpoint")
	}
	crashedAt := time.Now()
	stopA()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := a.Stop(sctx); err != nil {
		t.Fatal(err)
	}

	// These are all queued before the crashed worker's messages are
	// visible again, so they are fetched first.
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for range burst {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			signal()
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	if time.Since(crashedAt) > hold {
		t.Fatalf("sending took %s, longer than the visibility timeout", time.Since(crashedAt))
	}

	b := env.start(t, env.options())
	runWorker(b)
	const want = first + burst
	value := func() int {
		s, ok, err := client.ReadEntityState(ctx, id)
		if err != nil || !ok {
			return -1
		}
		var n int
		_ = json.Unmarshal(s, &n)
		return n
	}
	eventually(t, 90*time.Second, "every signal applied", func() bool { return value() >= want })
	// Past the crashed worker's visibility timeout: its messages are back
	// (unless acknowledged) and processed.
	for time.Since(crashedAt) < hold+5*time.Second {
		if v := value(); v != want {
			t.Fatalf("counter %d, want %d: a signal was applied twice", v, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if v := value(); v != want {
		t.Fatalf("counter %d, want %d: a signal was applied twice", v, want)
	}
}
