package queue_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
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
	"github.com/stratus-dev/stratus/triggers/queue"
)

func TestMain(m *testing.M) { triggertest.Main(m) }

func hostJSON(mut func(q *config.QueueOptions)) *config.HostJSON {
	h := config.DefaultHostJSON()
	p := config.TimeSpan(200 * time.Millisecond)
	h.Extensions.Queues.MaxPollingInterval = &p
	if mut != nil {
		mut(&h.Extensions.Queues)
	}
	return &h
}

func start(t *testing.T, env *bindings.Env, fn registry.Function) *triggertest.Running {
	t.Helper()
	triggertest.Bind(t, env, &fn)
	l, err := queue.New(env, &fn)
	if err != nil {
		t.Fatal(err)
	}
	return triggertest.Run(t, l, triggertest.Deliver)
}

func qclient(t *testing.T, env *bindings.Env, name string) *azqueue.QueueClient {
	t.Helper()
	c, err := env.Storage("")
	if err != nil {
		t.Fatal(err)
	}
	return c.Queue.NewQueueClient(name)
}

func put(t *testing.T, qc *azqueue.QueueClient, raw string) {
	t.Helper()
	if err := storage.Enqueue(context.Background(), qc, raw); err != nil {
		t.Fatal(err)
	}
}

// count returns the approximate number of messages, invisible ones included.
func count(t *testing.T, qc *azqueue.QueueClient) int {
	t.Helper()
	p, err := qc.GetProperties(context.Background(), nil)
	if storage.IsNotFound(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return int(*p.ApproximateMessagesCount)
}

func peekAll(t *testing.T, qc *azqueue.QueueClient) []string {
	t.Helper()
	res, err := qc.PeekMessages(context.Background(), &azqueue.PeekMessagesOptions{NumberOfMessages: to.Ptr(int32(32))})
	if storage.IsNotFound(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range res.Messages {
		out = append(out, *m.MessageText)
	}
	return out
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestMessageProcessedThenDeleted(t *testing.T) {
	t.Parallel()
	env := triggertest.Env(t, hostJSON(nil))
	qn := triggertest.Unique("processed")
	qc := qclient(t, env, qn)
	put(t, qc, b64(`{"name":"ada","n":1}`))

	got := make(chan *queue.Message, 1)
	var data map[string]any
	r := start(t, env, queue.Function("Processed", queue.Trigger{QueueName: qn}, func(ctx context.Context, m *queue.Message) error {
		data = registry.FromContext(ctx).Data
		got <- m
		return nil
	}))
	m := <-got
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	if m.Text != `{"name":"ada","n":1}` || m.DequeueCount != 1 || m.ID == "" || m.PopReceipt == "" || m.InsertionTime.IsZero() {
		t.Fatalf("message = %+v", m)
	}
	var v struct{ Name string }
	if err := m.JSON(&v); err != nil || v.Name != "ada" {
		t.Fatalf("JSON = %+v, %v", v, err)
	}
	for _, k := range []string{"QueueTrigger", "Id", "DequeueCount", "InsertionTime", "ExpirationTime", "NextVisibleTime", "PopReceipt", "name"} {
		if _, ok := data[k]; !ok {
			t.Errorf("binding data lacks %s: %v", k, data)
		}
	}
	if n := count(t, qc); n != 0 {
		t.Fatalf("queue holds %d messages after success, want 0", n)
	}
}

func TestPoisonAfterMaxDequeueCount(t *testing.T) {
	t.Parallel()
	env := triggertest.Env(t, hostJSON(nil))
	qn := triggertest.Unique("fails")
	qc := qclient(t, env, qn)
	put(t, qc, b64("original text"))

	var mu sync.Mutex
	var counts []int64
	r := start(t, env, queue.Function("Fails", queue.Trigger{QueueName: qn}, func(ctx context.Context, m *queue.Message) error {
		mu.Lock()
		counts = append(counts, m.DequeueCount)
		mu.Unlock()
		return errors.New("boom")
	}))
	poison := qclient(t, env, qn+"-poison")
	triggertest.Eventually(t, 20*time.Second, "message in the poison queue", func() bool { return len(peekAll(t, poison)) > 0 })
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	msgs := peekAll(t, poison)
	if len(msgs) != 1 || msgs[0] != b64("original text") {
		t.Fatalf("poison queue = %q, want the original message", msgs)
	}
	if n := count(t, qc); n != 0 {
		t.Fatalf("source queue holds %d messages, want 0", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(counts) != "[1 2 3 4 5]" {
		t.Fatalf("attempts by dequeue count = %v, want [1 2 3 4 5]", counts)
	}
}

func TestEncoding(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, encoding, raw, wantText, wantOut string
	}{
		{"base64", "", b64("héllo"), "héllo", b64("HÉLLO")},
		{"base64 tolerates plain text", "base64", "not base64!", "not base64!", b64("NOT BASE64!")},
		{"none", "none", "plain héllo", "plain héllo", "PLAIN HÉLLO"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := triggertest.Env(t, hostJSON(func(q *config.QueueOptions) { q.MessageEncoding = tc.encoding }))
			in, out := triggertest.Unique(fmt.Sprintf("enc-in-%d", i)), triggertest.Unique(fmt.Sprintf("enc-out-%d", i))
			put(t, qclient(t, env, in), tc.raw)
			got := make(chan string, 1)
			o := storage.QueueOutput("out", out)
			r := start(t, env, queue.Function("Enc", queue.Trigger{QueueName: in}, func(ctx context.Context, m *queue.Message) error {
				got <- m.Text
				return o.Add(ctx, strings.ToUpper(m.Text))
			}, registry.WithBindings(o)))
			if text := <-got; text != tc.wantText {
				t.Fatalf("text = %q, want %q", text, tc.wantText)
			}
			if err := r.Stop(); err != nil {
				t.Fatal(err)
			}
			if msgs := peekAll(t, qclient(t, env, out)); len(msgs) != 1 || msgs[0] != tc.wantOut {
				t.Fatalf("output queue = %q, want [%q]", msgs, tc.wantOut)
			}
		})
	}
}

func TestFailedOutputsAreDropped(t *testing.T) {
	t.Parallel()
	env := triggertest.Env(t, hostJSON(func(q *config.QueueOptions) { q.MaxDequeueCount = 2 }))
	in, out := triggertest.Unique("drop-in"), triggertest.Unique("drop-out")
	put(t, qclient(t, env, in), b64("x"))
	o := storage.QueueOutput("out", out)
	r := start(t, env, queue.Function("Drop", queue.Trigger{QueueName: in}, func(ctx context.Context, m *queue.Message) error {
		if err := o.Add(ctx, "should not be written"); err != nil {
			return err
		}
		return errors.New("fail after writing")
	}, registry.WithBindings(o)))
	triggertest.Eventually(t, 20*time.Second, "poisoned", func() bool { return len(peekAll(t, qclient(t, env, in+"-poison"))) == 1 })
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	if msgs := peekAll(t, qclient(t, env, out)); len(msgs) != 0 {
		t.Fatalf("a failed invocation wrote %q", msgs)
	}
}

func TestTwoListenersProcessEachMessageOnce(t *testing.T) {
	t.Parallel()
	const n = 200
	envA := triggertest.Env(t, hostJSON(nil))
	envB := triggertest.Env(t, hostJSON(nil))
	qn := triggertest.Unique("two-hosts")
	qc := qclient(t, envA, qn)
	if err := storage.CreateQueue(context.Background(), qc); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]int{}
	by := map[string]int{}
	all := make(chan struct{})
	handler := func(host string) func(context.Context, *queue.Message) error {
		return func(ctx context.Context, m *queue.Message) error {
			mu.Lock()
			defer mu.Unlock()
			seen[m.Text]++
			by[host]++
			if len(seen) == n {
				close(all)
			}
			return nil
		}
	}
	ra := start(t, envA, queue.Function("Two", queue.Trigger{QueueName: qn}, handler("a")))
	rb := start(t, envB, queue.Function("Two", queue.Trigger{QueueName: qn}, handler("b")))
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				put(t, qc, b64(fmt.Sprintf("msg-%03d", i)))
			}
		})
	}
	wg.Wait()
	select {
	case <-all:
	case <-time.After(60 * time.Second):
		t.Fatalf("only %d of %d messages processed", len(seen), n)
	}
	if err := errors.Join(ra.Stop(), rb.Stop()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for text, c := range seen {
		if c != 1 {
			t.Errorf("%s processed %d times", text, c)
		}
	}
	if c := count(t, qc); c != 0 {
		t.Errorf("%d messages left", c)
	}
	t.Logf("processed by host: %v", by)
}

func TestPollDelay(t *testing.T) {
	t.Parallel()
	cases := []struct {
		n    int
		r    float64
		max  time.Duration
		want time.Duration
	}{
		{0, 0.5, time.Minute, 0},
		{1, 0, time.Minute, 180 * time.Millisecond},
		{1, 0.5, time.Minute, 200 * time.Millisecond},
		{2, 0.5, time.Minute, 300 * time.Millisecond},
		{4, 0.5, time.Minute, 900 * time.Millisecond},
		{20, 0.5, time.Minute, time.Minute},
		{1000, 0.99, 2 * time.Second, 2 * time.Second},
		{3, 0.5, 0, 100 * time.Millisecond},
	}
	for _, tc := range cases {
		if got := queue.PollDelay(tc.n, tc.max, tc.r); got != tc.want {
			t.Errorf("PollDelay(%d, %s, %v) = %s, want %s", tc.n, tc.max, tc.r, got, tc.want)
		}
	}
}

func TestFactoryErrors(t *testing.T) {
	t.Parallel()
	env := triggertest.Env(t, nil)
	cases := []struct{ name, queue, want string }{
		{"missing", "", "queueName is required"},
		{"bad name", "a_b", "invalid"},
		{"unset setting", "%NOPE%", "NOPE"},
	}
	for _, tc := range cases {
		fn := queue.Function("F", queue.Trigger{QueueName: tc.queue}, func(context.Context, *queue.Message) error { return nil })
		if _, err := queue.New(env, &fn); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
}

// At most batchSize + newBatchThreshold messages run at once: the next batch
// is fetched only when no more than newBatchThreshold are in flight.
func TestBatchSizeAndNewBatchThreshold(t *testing.T) {
	t.Parallel()
	const n = 6
	env := triggertest.Env(t, hostJSON(func(q *config.QueueOptions) { q.BatchSize = 2; q.NewBatchThreshold = 1 }))
	qn := triggertest.Unique("batches")
	qc := qclient(t, env, qn)
	for i := range n {
		put(t, qc, b64(fmt.Sprint(i)))
	}
	var mu sync.Mutex
	active, maxActive, done := 0, 0, 0
	var polls []int
	release := make(chan struct{}, n)
	fn := queue.Function("Batches", queue.Trigger{QueueName: qn}, func(ctx context.Context, m *queue.Message) error {
		mu.Lock()
		active++
		maxActive = max(maxActive, active)
		mu.Unlock()
		<-release
		mu.Lock()
		active--
		done++
		mu.Unlock()
		return nil
	})
	l, err := queue.NewListener(env, &fn)
	if err != nil {
		t.Fatal(err)
	}
	queue.SetPollHook(l, func(inflight int) {
		mu.Lock()
		polls = append(polls, inflight)
		mu.Unlock()
	})
	r := triggertest.Run(t, l, triggertest.Deliver)
	state := func() (int, int) { mu.Lock(); defer mu.Unlock(); return active, done }
	triggertest.Eventually(t, 20*time.Second, "the first batch of 2 running", func() bool { a, _ := state(); return a == 2 })
	for i := range n {
		release <- struct{}{}
		triggertest.Eventually(t, 20*time.Second, "a message done", func() bool { _, d := state(); return d == i+1 })
	}
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if maxActive > 3 {
		t.Errorf("%d messages ran at once, want at most batchSize 2 + newBatchThreshold 1", maxActive)
	}
	for _, p := range polls {
		if p > 1 {
			t.Fatalf("polled with %d messages in flight (polls %v), want at most newBatchThreshold 1", p, polls)
		}
	}
}

// A failed message stays invisible for visibilityTimeout before its next
// attempt. (The bound is a lower bound: storage cannot show the message
// earlier, however fast the machine.)
func TestVisibilityTimeoutOnFailure(t *testing.T) {
	t.Parallel()
	vis := config.TimeSpan(2 * time.Second)
	env := triggertest.Env(t, hostJSON(func(q *config.QueueOptions) { q.VisibilityTimeout = &vis }))
	qn := triggertest.Unique("visibility")
	put(t, qclient(t, env, qn), b64("retry me"))
	var failedAt time.Time
	second := make(chan time.Time, 1)
	r := start(t, env, queue.Function("Visibility", queue.Trigger{QueueName: qn}, func(ctx context.Context, m *queue.Message) error {
		if m.DequeueCount == 1 {
			failedAt = time.Now()
			return errors.New("first attempt fails")
		}
		second <- time.Now()
		return nil
	}))
	again := <-second
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	if gap := again.Sub(failedAt); gap < 1500*time.Millisecond {
		t.Fatalf("the failed message came back after %s, want at least the 2 s visibilityTimeout", gap)
	}
}

func TestQueueCreatedIfMissingAndTypedJSON(t *testing.T) {
	t.Parallel()
	env := triggertest.Env(t, hostJSON(func(q *config.QueueOptions) { q.MaxDequeueCount = 1 }))
	qn := triggertest.Unique("typed")
	qc := qclient(t, env, qn)
	type order struct {
		ID    string `json:"id"`
		Total int    `json:"total"`
	}
	got := make(chan order, 1)
	r := start(t, env, queue.FunctionJSON("Typed", queue.Trigger{QueueName: qn}, func(_ context.Context, o order, m *queue.Message) error {
		got <- o
		return nil
	}))
	triggertest.Eventually(t, 20*time.Second, "the listener to create its queue", func() bool {
		_, err := qc.GetProperties(context.Background(), nil)
		return err == nil
	})
	put(t, qc, b64(`not json`))
	put(t, qc, b64(`{"id":"o-1","total":42}`))
	if o := <-got; o.ID != "o-1" || o.Total != 42 {
		t.Fatalf("typed message = %+v", o)
	}
	// A message that does not decode fails, and so ends in the poison queue.
	triggertest.Eventually(t, 20*time.Second, "the undecodable message in the poison queue", func() bool {
		return fmt.Sprint(peekAll(t, qclient(t, env, qn+"-poison"))) == "["+b64("not json")+"]"
	})
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
}
