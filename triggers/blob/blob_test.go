package blob

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/bindings/storage"
	"github.com/stratus-dev/stratus/host/config"
	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/tests/triggertest"
)

func TestMain(m *testing.M) { triggertest.Main(m) }

// runs records handler runs per blob name.
type runs struct {
	mu    sync.Mutex
	etags map[string][]string
	ch    chan string
}

func newRuns() *runs { return &runs{etags: map[string][]string{}, ch: make(chan string, 1000)} }

func (r *runs) handler(fail bool) func(context.Context, *Blob) error {
	return func(_ context.Context, b *Blob) error {
		r.mu.Lock()
		r.etags[b.Name] = append(r.etags[b.Name], b.ETag)
		r.mu.Unlock()
		r.ch <- b.Name
		if fail {
			return errors.New("always fails")
		}
		return nil
	}
}

// waitFor waits until name has run (other names may run meanwhile).
func (r *runs) waitFor(t *testing.T, name string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case n := <-r.ch:
			if n == name {
				return
			}
		case <-deadline:
			t.Fatalf("%s did not run", name)
		}
	}
}

func (r *runs) count(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.etags[name])
}

func upload(t *testing.T, env *bindings.Env, container, name, data string) {
	t.Helper()
	c, _ := env.Storage("")
	if err := storage.UploadBlob(context.Background(), c.Blob, container, name, []byte(data)); err != nil {
		t.Fatal(err)
	}
}

func newListener(t *testing.T, env *bindings.Env, name, path string, h func(context.Context, *Blob) error, opts ...ListenerOption) *Listener {
	t.Helper()
	fn := Function(name, Trigger{Path: path}, h)
	l, err := NewListener(env, &fn, append([]ListenerOption{WithPollInterval(50 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestFiresOncePerVersionAcrossRestarts(t *testing.T) {
	t.Parallel()
	env := triggertest.Env(t, nil)
	r := newRuns()
	cont := triggertest.Unique("once")
	path := cont + "/in/{name}.json"
	upload(t, env, cont, "in/a.json", `{"v":1}`)
	run1 := triggertest.Run(t, newListener(t, env, "Once", path, r.handler(false)), triggertest.Deliver)
	r.waitFor(t, "in/a.json")
	// Two sentinels written one after the other: the second is found by a
	// later tick than the first, which has re-checked a.json.
	upload(t, env, cont, "in/s1.json", "{}")
	r.waitFor(t, "in/s1.json")
	upload(t, env, cont, "in/s2.json", "{}")
	r.waitFor(t, "in/s2.json")
	upload(t, env, cont, "in/a.json", `{"v":2}`) // new version
	r.waitFor(t, "in/a.json")
	upload(t, env, cont, "in/ignored.txt", "not matched")
	if err := run1.Stop(); err != nil {
		t.Fatal(err)
	}

	// "Restart": a new listener with its own clients on the same storage.
	env2 := triggertest.Env(t, nil)
	run2 := triggertest.Run(t, newListener(t, env2, "Once", path, r.handler(false)), triggertest.Deliver)
	upload(t, env2, cont, "in/s3.json", "{}")
	r.waitFor(t, "in/s3.json")
	upload(t, env2, cont, "in/s4.json", "{}")
	r.waitFor(t, "in/s4.json")
	if err := run2.Stop(); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.etags["in/a.json"]; len(e) != 2 || e[0] == e[1] {
		t.Fatalf("a.json ran for etags %v, want once for each of its two versions", e)
	}
	for _, n := range []string{"in/s1.json", "in/s2.json", "in/s3.json", "in/s4.json"} {
		if len(r.etags[n]) != 1 {
			t.Errorf("%s ran %d times", n, len(r.etags[n]))
		}
	}
	if len(r.etags["in/ignored.txt"]) != 0 {
		t.Errorf("a blob outside the pattern ran")
	}
	// The cursor is persisted.
	l := newListener(t, env, "Once", path, nil)
	if cur, err := l.loadCursor(context.Background()); err != nil || cur.IsZero() {
		t.Fatalf("scan cursor = %v, %v; want a persisted time", cur, err)
	}
}

func TestPoisonBlobAfterThreshold(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name            string
		poison, dequeue int
		attempts        int
	}{
		{"poisonBlobThreshold", 3, 0, 3},
		{"maxDequeueCount when poisonBlobThreshold is unset", 0, 2, 2},
		{"poisonBlobThreshold wins", 4, 2, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := config.DefaultHostJSON()
			h.Extensions.Blobs.PoisonBlobThreshold = tc.poison
			h.Extensions.Queues.MaxDequeueCount = tc.dequeue
			testPoisonBlob(t, &h, tc.attempts)
		})
	}
}

func testPoisonBlob(t *testing.T, h *config.HostJSON, attempts int) {
	env := triggertest.Env(t, h)
	r := newRuns()
	cont, fname := triggertest.Unique("poison"), triggertest.Unique("PoisonBlob")
	upload(t, env, cont, "bad.txt", "x")
	l := newListener(t, env, fname, cont+"/{name}", r.handler(true))
	run := triggertest.Run(t, l, triggertest.Deliver)
	c, _ := env.Storage("")
	q := c.Queue.NewQueueClient(PoisonQueue)
	var msg poisonMessage
	triggertest.Eventually(t, 20*time.Second, "message on "+PoisonQueue, func() bool {
		res, err := q.PeekMessages(context.Background(), &azqueue.PeekMessagesOptions{NumberOfMessages: to.Ptr(int32(32))})
		if err != nil {
			return false
		}
		for _, m := range res.Messages {
			b, _ := base64.StdEncoding.DecodeString(*m.MessageText)
			if json.Unmarshal(b, &msg) == nil && msg.FunctionID == "Host.Functions."+fname {
				return true
			}
		}
		return false
	})
	if err := run.Stop(); err != nil {
		t.Fatal(err)
	}
	if msg.Type != "BlobTrigger" || msg.ContainerName != cont || msg.BlobName != "bad.txt" || msg.ETag == "" {
		t.Fatalf("poison message = %+v", msg)
	}
	if n := r.count("bad.txt"); n != attempts {
		t.Fatalf("attempts = %d, want %d", n, attempts)
	}
}

func TestOutputBindingNotifiesListener(t *testing.T) {
	t.Parallel()
	env := triggertest.Env(t, nil)
	r := newRuns()
	// The scan runs once at start and then only every hour: only the
	// in-process notification can make the blob run during the test.
	cont := triggertest.Unique("notified")
	run := triggertest.Run(t, newListener(t, env, "Notified", cont+"/{name}.txt", r.handler(false), WithPollInterval(time.Hour)), triggertest.Deliver)
	out := storage.BlobOutput("out", cont+"/{id}.txt")
	writer := registry.Function{Name: "Writer", Trigger: bindings.Binding{Type: "manual"}, Bindings: []bindings.Declared{out},
		Handler: registry.HandlerFunc(func(ctx context.Context, inv *registry.Invocation) (any, error) {
			return nil, out.WriteString(ctx, "hello")
		})}
	triggertest.Bind(t, env, &writer)
	// Let the start-up scan pass first (it would also find the blob): it
	// ends by saving the scan cursor.
	l := newListener(t, env, "Notified", cont+"/{name}.txt", nil)
	triggertest.Eventually(t, 20*time.Second, "the start-up scan", func() bool {
		cur, err := l.loadCursor(context.Background())
		return err == nil && !cur.IsZero()
	})
	if _, err := triggertest.Deliver(context.Background(), &registry.Invocation{Function: &writer, Data: map[string]any{"id": "n1"}}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "n1.txt")
	if err := run.Stop(); err != nil {
		t.Fatal(err)
	}
}

func TestTwoScannersProcessEachBlobOnce(t *testing.T) {
	t.Parallel()
	const n = 30
	r := newRuns()
	envA, envB := triggertest.Env(t, nil), triggertest.Env(t, nil)
	cont := triggertest.Unique("two")
	for i := range n {
		upload(t, envA, cont, fmt.Sprintf("b%02d", i), "x")
	}
	a := newListener(t, envA, "TwoScan", cont+"/{name}", r.handler(false))
	b := newListener(t, envB, "TwoScan", cont+"/{name}", r.handler(false))
	// Both scan at once, as two leaders would around a lease hand-over.
	// Blobs busy in one scanner are retried by its next tick.
	ctx := context.Background()
	for round := 0; round < 20; round++ {
		var wg sync.WaitGroup
		for _, l := range []*Listener{a, b} {
			wg.Go(func() {
				if _, _, err := l.scanTick(ctx, triggertest.Deliver, nil, time.Time{}); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		r.mu.Lock()
		done := len(r.etags) == n
		r.mu.Unlock()
		if done {
			break
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.etags) != n {
		t.Fatalf("%d of %d blobs ran", len(r.etags), n)
	}
	for name, e := range r.etags {
		if len(e) != 1 {
			t.Errorf("%s ran %d times", name, len(e))
		}
	}
}

func TestScanIsBounded(t *testing.T) {
	t.Parallel()
	env := triggertest.Env(t, nil)
	r := newRuns()
	cont := triggertest.Unique("bounded")
	for i := range 12 {
		upload(t, env, cont, fmt.Sprintf("b%02d", i), "x")
	}
	l := newListener(t, env, "Bounded", cont+"/{name}", r.handler(false), WithMaxBlobsPerTick(5))
	ctx := context.Background()

	// A cursor later than every blob (beyond the skew) makes none a candidate.
	if m, _, err := l.scanTick(ctx, triggertest.Deliver, nil, time.Now().Add(Skew+time.Hour)); err != nil || m == nil {
		t.Fatalf("tick = %v, %v; want a continuation marker after 5 of 12 names", m, err)
	}
	if len(r.ch) != 0 {
		t.Fatalf("blobs older than the cursor ran")
	}
	// Each tick lists at most 5 names: 12 blobs take three ticks.
	var marker *string
	ticks := 0
	for {
		var err error
		marker, _, err = l.scanTick(ctx, triggertest.Deliver, marker, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		ticks++
		if marker == nil {
			break
		}
		if got := len(r.ch); got != 5*ticks {
			t.Fatalf("after tick %d, %d blobs ran; want %d", ticks, got, 5*ticks)
		}
	}
	if ticks != 3 || len(r.ch) != 12 {
		t.Fatalf("%d ticks ran %d blobs; want 3 ticks, 12 blobs", ticks, len(r.ch))
	}
}
