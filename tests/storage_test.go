package tests

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/stratus-dev/stratus/bindings/azstorage"
	"github.com/stratus-dev/stratus/bindings/storage"
	fstorage "github.com/stratus-dev/stratus/functions/storage"
	"github.com/stratus-dev/stratus/tests/azurite"
	"github.com/stratus-dev/stratus/tests/hosttest"
)

// storageHostJSON polls queues at least every 0.5 s and lets a waiting host
// take over a released listener lock within a second.
const storageHostJSON = `{
  "version": "2.0",
  "functionTimeout": "00:02:00",
  "extensions": {"queues": {"maxPollingInterval": "00:00:00.5", "maxDequeueCount": 5}},
  "singleton": {"listenerLockPeriod": "00:00:15", "listenerLockRecoveryPollingInterval": "00:00:01"}
}`

// scriptRoot makes a script root; hosts started from one root share a host id.
func scriptRoot(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "host.json"), []byte(storageHostJSON), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func openStorage(t *testing.T, az *azurite.Instance) *azstorage.Clients {
	t.Helper()
	c, err := azstorage.Open(az.ConnectionString)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func enqueue(t *testing.T, c *azstorage.Clients, queue, text string) {
	t.Helper()
	if err := storage.Enqueue(context.Background(), c.Queue.NewQueueClient(queue), b64(text)); err != nil {
		t.Fatal(err)
	}
}

func peekTexts(c *azstorage.Clients, queue string) []string {
	res, err := c.Queue.NewQueueClient(queue).PeekMessages(context.Background(), &azqueue.PeekMessagesOptions{NumberOfMessages: to.Ptr(int32(32))})
	if err != nil {
		return nil
	}
	var out []string
	for _, m := range res.Messages {
		b, _ := base64.StdEncoding.DecodeString(*m.MessageText)
		out = append(out, string(b))
	}
	return out
}

// drain dequeues and deletes every message of a queue, returning the texts.
func drain(t *testing.T, c *azstorage.Clients, queue string) []string {
	t.Helper()
	qc := c.Queue.NewQueueClient(queue)
	var out []string
	for {
		res, err := qc.DequeueMessages(context.Background(), &azqueue.DequeueMessagesOptions{NumberOfMessages: to.Ptr(int32(32)), VisibilityTimeout: to.Ptr(int32(60))})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Messages) == 0 {
			return out
		}
		for _, m := range res.Messages {
			b, _ := base64.StdEncoding.DecodeString(*m.MessageText)
			out = append(out, string(b))
			if _, err := qc.DeleteMessage(context.Background(), *m.MessageID, *m.PopReceipt, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func readBlob(c *azstorage.Clients, container, name string) (string, bool) {
	b, err := storage.DownloadBlob(context.Background(), c.Blob, container, name)
	return string(b), err == nil
}

func upload(t *testing.T, c *azstorage.Clients, container, name, data string) {
	t.Helper()
	if err := storage.UploadBlob(context.Background(), c.Blob, container, name, []byte(data)); err != nil {
		t.Fatal(err)
	}
}

func heartbeats(t *testing.T, c *azstorage.Clients) []fstorage.HeartbeatRow {
	t.Helper()
	var rows []fstorage.HeartbeatRow
	pager := c.Table.NewClient("Heartbeats").NewListEntitiesPager(nil)
	for pager.More() {
		page, err := pager.NextPage(context.Background())
		if storage.IsNotFound(err) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Entities {
			var r fstorage.HeartbeatRow
			if err := json.Unmarshal(e, &r); err != nil {
				t.Fatal(err)
			}
			rows = append(rows, r)
		}
	}
	return rows
}

// occurrences groups heartbeat rows by occurrence.
func occurrences(rows []fstorage.HeartbeatRow) map[string][]string {
	m := map[string][]string{}
	for _, r := range rows {
		occ, host, _ := strings.Cut(r.RowKey, "_")
		m[occ] = append(m[occ], host)
	}
	return m
}

// logRecords returns the JSON log records of a host with msg.
func logRecords(p *hosttest.Process, msg string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(p.Logs(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestStorageSamples(t *testing.T) {
	t.Parallel()
	az := azurite.Start(t)
	c := openStorage(t, az)
	upload(t, c, "uploads", "report.txt", "quarterly report")
	upload(t, c, "uploads", "skip.json", "not a .txt")
	h := hosttest.Start(t, hosttest.Options{Storage: az.ConnectionString, ScriptRoot: scriptRoot(t)})

	enqueue(t, c, "echo-in", "hello e2e")
	enqueue(t, c, "poison-demo", "doomed")
	status, body, _, err := h.Do(context.Background(), "POST", "/admin/functions/Heartbeat", []byte(`{"input":""}`))
	if err != nil || status != 202 {
		t.Fatalf("manual Heartbeat run: %d %s %v", status, body, err)
	}

	waitUntil(t, 20*time.Second, "QueueEcho's output on echo-out", func() bool {
		return fmt.Sprint(peekTexts(c, "echo-out")) == "[HELLO E2E]"
	})
	waitUntil(t, 20*time.Second, "BlobToUpper's processed/report.txt", func() bool {
		s, ok := readBlob(c, "processed", "report.txt")
		return ok && s == "QUARTERLY REPORT"
	})
	waitUntil(t, 20*time.Second, "a Heartbeats row", func() bool { return len(heartbeats(t, c)) > 0 })
	waitUntil(t, 25*time.Second, "the poison message in poison-demo-poison", func() bool {
		return fmt.Sprint(peekTexts(c, "poison-demo-poison")) == "[doomed]"
	})
	if err := h.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	var counts []string
	for _, rec := range logRecords(h, "failing on purpose") {
		counts = append(counts, fmt.Sprint(rec["dequeue_count"]))
	}
	if strings.Join(counts, ",") != "1,2,3,4,5" {
		t.Errorf("QueuePoisonDemo attempts by dequeue count = %v, want 1..5", counts)
	}
	if left := peekTexts(c, "poison-demo"); len(left) != 0 {
		t.Errorf("poison-demo still holds %q", left)
	}
	if _, ok := readBlob(c, "processed", "skip.txt"); ok {
		t.Errorf("a blob outside uploads/{name}.txt was processed")
	}
	if n := len(logRecords(h, "Executed 'Functions.BlobToUpper' (Succeeded)")); n != 1 {
		t.Errorf("BlobToUpper ran %d times, want 1", n)
	}
}

func TestBlobOnceAcrossHostRestart(t *testing.T) {
	t.Parallel()
	az := azurite.Start(t)
	c := openStorage(t, az)
	root := scriptRoot(t) // the same root: the same host id after the restart
	upload(t, c, "uploads", "r.txt", "restart me")
	h1 := hosttest.Start(t, hosttest.Options{Storage: az.ConnectionString, ScriptRoot: root})
	waitUntil(t, 20*time.Second, "processed/r.txt", func() bool {
		s, ok := readBlob(c, "processed", "r.txt")
		return ok && s == "RESTART ME"
	})
	if err := h1.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	// A second run for r.txt would overwrite this marker.
	upload(t, c, "processed", "r.txt", "marker")
	upload(t, c, "uploads", "s.txt", "sentinel")
	h2 := hosttest.Start(t, hosttest.Options{Storage: az.ConnectionString, ScriptRoot: root})
	waitUntil(t, 20*time.Second, "processed/s.txt", func() bool {
		s, ok := readBlob(c, "processed", "s.txt")
		return ok && s == "SENTINEL"
	})
	if err := h2.Stop(); err != nil { // waits for in-flight work
		t.Fatalf("stop: %v", err)
	}
	if s, _ := readBlob(c, "processed", "r.txt"); s != "marker" {
		t.Fatalf("r.txt ran again after the restart (processed/r.txt = %q)", s)
	}
	if n1, n2 := len(logRecords(h1, "Executed 'Functions.BlobToUpper' (Succeeded)")), len(logRecords(h2, "Executed 'Functions.BlobToUpper' (Succeeded)")); n1 != 1 || n2 != 1 {
		t.Fatalf("BlobToUpper ran %d times before and %d after the restart, want 1 and 1", n1, n2)
	}
}

func TestTwoHostsShareOneAccount(t *testing.T) {
	t.Parallel()
	const n = 200
	az := azurite.Start(t)
	c := openStorage(t, az)
	opts := hosttest.Options{
		Storage: az.ConnectionString,
		Env:     []string{"AzureFunctionsWebHost__hostid=sharedhost", fstorage.HeartbeatScheduleEnv + "=* * * * * *"},
	}
	opts.ScriptRoot = scriptRoot(t)
	a := hosttest.Start(t, opts)
	opts.ScriptRoot = scriptRoot(t)
	b := hosttest.Start(t, opts)

	want := map[string]bool{}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				enqueue(t, c, "echo-in", fmt.Sprintf("message %03d", i))
			}
		})
	}
	wg.Wait()
	for i := range n {
		want[fmt.Sprintf("MESSAGE %03d", i)] = true
	}
	echoed := func() int {
		p, err := c.Queue.NewQueueClient("echo-out").GetProperties(context.Background(), nil)
		if err != nil {
			return 0
		}
		return int(*p.ApproximateMessagesCount)
	}
	waitUntil(t, 60*time.Second, "200 messages on echo-out", func() bool { return echoed() >= n })
	waitUntil(t, 20*time.Second, "3 heartbeat occurrences", func() bool { return len(occurrences(heartbeats(t, c))) >= 3 })

	// Stop one host (releasing its locks if it leads); the other takes over.
	if err := a.Stop(); err != nil {
		t.Fatalf("stop a: %v", err)
	}
	before := len(occurrences(heartbeats(t, c)))
	waitUntil(t, 20*time.Second, "3 more heartbeat occurrences", func() bool { return len(occurrences(heartbeats(t, c))) >= before+3 })
	if err := b.Stop(); err != nil {
		t.Fatalf("stop b: %v", err)
	}

	got := drain(t, c, "echo-out")
	seen := map[string]int{}
	for _, s := range got {
		seen[s]++
	}
	for s, k := range seen {
		if k != 1 || !want[s] {
			t.Errorf("echo-out has %q %d times", s, k)
		}
	}
	if len(seen) != n || len(got) != n {
		t.Errorf("echo-out has %d messages (%d distinct), want %d once each", len(got), len(seen), n)
	}
	na := len(logRecords(a, "Executed 'Functions.QueueEcho' (Succeeded)"))
	nb := len(logRecords(b, "Executed 'Functions.QueueEcho' (Succeeded)"))
	if na+nb != n {
		t.Errorf("QueueEcho succeeded %d + %d times, want %d in all", na, nb, n)
	}
	occ := occurrences(heartbeats(t, c))
	var keys []string
	for k, hosts := range occ {
		keys = append(keys, k)
		if len(hosts) != 1 {
			t.Errorf("heartbeat occurrence %s fired %d times (%v)", k, len(hosts), hosts)
		}
	}
	sort.Strings(keys)
	t.Logf("QueueEcho: host a %d, host b %d; heartbeat occurrences %v", na, nb, keys)
}
