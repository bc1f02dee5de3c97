package azurestorage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
)

func rawRows(t *testing.T, tc *aztables.Client, pk string) map[string]map[string]any {
	t.Helper()
	pager := tc.NewListEntitiesPager(&aztables.ListEntitiesOptions{Filter: to.Ptr("PartitionKey eq " + odataString(pk))})
	rows := map[string]map[string]any{}
	for pager.More() {
		page, err := pager.NextPage(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, raw := range page.Entities {
			var e aztables.EDMEntity
			if err := json.Unmarshal(raw, &e); err != nil {
				t.Fatal(err)
			}
			rows[e.RowKey] = e.Properties
		}
	}
	return rows
}

func hasColumns(t *testing.T, what string, row map[string]any, cols ...string) {
	t.Helper()
	for _, c := range cols {
		if _, ok := row[c]; !ok {
			t.Errorf("%s lacks column %s (has %v)", what, c, row)
		}
	}
}

// TestTableLayout checks the resources of a hub and the History and
// Instances rows of a finished HelloSequence against the
// DurableTask.AzureStorage layout.
func TestTableLayout(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	b := env.start(t, env.options())
	runWorkers(t, b, (&chain{cities: cities}).step, 1)
	ctx := context.Background()
	id := "layout/needs#escaping"
	started := startedEvent(id, "HelloSequence", "null")
	if err := b.CreateInstance(ctx, started); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, b, id, 30*time.Second, history.StatusCompleted)

	h := strings.ToLower(env.hub)
	for _, q := range []string{h + "-control-00", h + "-control-01", h + "-control-02", h + "-control-03", h + "-workitems"} {
		if _, err := env.clients.Queue.NewQueueClient(q).GetProperties(ctx, nil); err != nil {
			t.Errorf("queue %s: %v", q, err)
		}
	}
	info, err := b.readTaskHubInfo(ctx)
	if err != nil || info.TaskHubName != env.hub || info.PartitionCount != 4 {
		t.Fatalf("taskhub.json: %+v %v", info, err)
	}
	for _, c := range []string{h + "-leases", h + "-largemessages"} {
		if _, err := env.clients.Blob.ServiceClient().NewContainerClient(c).GetProperties(ctx, nil); err != nil {
			t.Errorf("container %s: %v", c, err)
		}
	}
	if _, err := env.clients.Blob.ServiceClient().NewContainerClient(h+"-leases").NewBlobClient("default/"+h+"-control-00").GetProperties(ctx, nil); err != nil {
		t.Errorf("lease blob: %v", err)
	}

	pk := "layout^0needs^2escaping"
	rows := rawRows(t, b.histT, pk)
	if len(rows) != 17 {
		t.Fatalf("%d History rows, want 16 events and the sentinel", len(rows))
	}
	sent := rows["sentinel"]
	hasColumns(t, "sentinel", sent, "ExecutionId", "IsCheckpointComplete", "CheckpointCompletedTimestamp")
	if sent["ExecutionId"] != started.OrchestrationInstance.ExecutionID || sent["IsCheckpointComplete"] != true {
		t.Errorf("sentinel %v", sent)
	}
	wantType := []string{"OrchestratorStarted", "ExecutionStarted", "TaskScheduled", "OrchestratorCompleted", "OrchestratorStarted", "TaskCompleted"}
	for i, w := range wantType {
		r := rows[rowKey(i)]
		if r["EventType"] != w {
			t.Errorf("row %s EventType %v, want %s", rowKey(i), r["EventType"], w)
		}
		hasColumns(t, "row "+rowKey(i), r, "EventId", "IsPlayed", "EventType", "_Timestamp", "ExecutionId")
		if _, ok := r["_Timestamp"].(aztables.EDMDateTime); !ok {
			t.Errorf("row %s _Timestamp is %T, want a DateTime", rowKey(i), r["_Timestamp"])
		}
	}
	hasColumns(t, "ExecutionStarted", rows[rowKey(1)], "OrchestrationInstance", "ParentInstance", "Name", "Tags", "Generation")
	hasColumns(t, "TaskScheduled", rows[rowKey(2)], "Name", "Input")
	hasColumns(t, "TaskCompleted", rows[rowKey(5)], "TaskScheduledId", "Result")
	hasColumns(t, "ExecutionCompleted", rows[rowKey(14)], "OrchestrationStatus", "Result")
	if rows[rowKey(14)]["OrchestrationStatus"] != "Completed" || rows[rowKey(14)]["Result"] != helloOutput {
		t.Errorf("ExecutionCompleted row %v", rows[rowKey(14)])
	}
	var oi history.Instance
	if err := json.Unmarshal([]byte(rows[rowKey(1)]["OrchestrationInstance"].(string)), &oi); err != nil || oi.InstanceID != id {
		t.Errorf("OrchestrationInstance column %v: %v", rows[rowKey(1)]["OrchestrationInstance"], err)
	}

	inst := rawRows(t, b.instT, pk)[""]
	hasColumns(t, "Instances row", inst, "Name", "Version", "ExecutionId", "RuntimeStatus", "CreatedTime", "LastUpdatedTime", "CompletedTime",
		"Input", "Output", "CustomStatus", "Generation", "TaskHubName", "Tags")
	if inst["RuntimeStatus"] != "Completed" || inst["CustomStatus"] != "null" || inst["TaskHubName"] != env.hub || inst["Output"] != helloOutput || inst["Name"] != "HelloSequence" {
		t.Errorf("Instances row %v", inst)
	}
	for _, c := range []string{"CreatedTime", "LastUpdatedTime", "CompletedTime"} {
		if _, ok := inst[c].(aztables.EDMDateTime); !ok {
			t.Errorf("Instances %s is %T, want a DateTime", c, inst[c])
		}
	}
}

// TestLargePayloads sends a 1 MB input through start, activity and
// output: queue messages spill to compressed blobs, table properties to
// {Prop}BlobName blobs and Instances columns to blob URLs, and everything
// reads back intact.
func TestLargePayloads(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	b := env.start(t, env.options())
	big := `"` + strings.Repeat("0123456789abcdef", 1<<16) + `"` // 1 MB JSON string
	echo := func(wi *backend.OrchestrationWorkItem) *backend.OrchestrationCompletion {
		now := time.Now().UTC()
		all := append(append([]*history.Event{}, wi.History...), wi.NewEvents...)
		c := &backend.OrchestrationCompletion{}
		c.NewHistory = append([]*history.Event{{EventType: history.OrchestratorStarted, EventID: -1, Timestamp: now}}, wi.NewEvents...)
		var start *history.Event
		var result string
		for _, e := range all {
			if e.EventType == history.ExecutionStarted {
				start = e
				c.ExecutionID = e.OrchestrationInstance.ExecutionID
			}
			if e.EventType == history.TaskCompleted {
				result = e.Result
			}
		}
		c.State = backend.InstanceState{Name: start.Name, RuntimeStatus: history.StatusRunning}
		if result == "" {
			ts := &history.Event{EventType: history.TaskScheduled, EventID: 0, Timestamp: now, Name: "Echo", Input: start.Input}
			c.NewHistory = append(c.NewHistory, ts)
			c.Outbound = []backend.Message{{TargetInstanceID: wi.InstanceID, TargetExecutionID: c.ExecutionID, Event: ts}}
		} else {
			c.NewHistory = append(c.NewHistory, &history.Event{EventType: history.ExecutionCompleted, EventID: -1, Timestamp: now, OrchestrationStatus: history.StatusCompleted, Result: result})
			c.State.RuntimeStatus, c.State.Output = history.StatusCompleted, result
		}
		c.NewHistory = append(c.NewHistory, &history.Event{EventType: history.OrchestratorCompleted, EventID: -1, Timestamp: now})
		return c
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	go func() {
		for {
			wi, err := b.NextActivityWorkItem(ctx)
			if err != nil {
				return
			}
			if wi.Event.Input != big {
				t.Errorf("activity input of %d bytes", len(wi.Event.Input))
			}
			_ = b.CompleteActivityWorkItem(ctx, wi, &history.Event{EventType: history.TaskCompleted, EventID: -1, Timestamp: time.Now().UTC(), TaskScheduledID: wi.Event.EventID, Result: wi.Event.Input})
		}
	}()
	go func() {
		for {
			wi, err := b.NextOrchestrationWorkItem(ctx)
			if err != nil {
				return
			}
			_ = b.CompleteOrchestrationWorkItem(ctx, wi, echo(wi))
		}
	}()
	if err := b.CreateInstance(ctx, startedEvent("big", "Echo", big)); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, b, "big", 60*time.Second, history.StatusCompleted)
	if st.Input != big || st.Output != big {
		t.Fatalf("status input %d bytes, output %d bytes", len(st.Input), len(st.Output))
	}
	h, err := b.GetHistory(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	if h[1].Input != big || h[2].Input != big || h[5].Result != big || h[6].Result != big {
		t.Fatal("history payloads do not round-trip")
	}
	rows := rawRows(t, b.histT, "big")
	if rows[rowKey(1)]["Input"] != "" || !strings.HasPrefix(rows[rowKey(1)]["InputBlobName"].(string), "big/history-0000000000000001-ExecutionStarted-") {
		t.Errorf("ExecutionStarted row not spilled: InputBlobName=%v", rows[rowKey(1)]["InputBlobName"])
	}
	inst := rawRows(t, b.instT, "big")[""]
	for _, c := range []string{"Input", "Output"} {
		if v, _ := inst[c].(string); !b.isLargeURL(v) {
			t.Errorf("Instances %s is not a blob URL: %.80s", c, v)
		}
	}
	// Spilled queue messages are named after the instance.
	pager := env.clients.Blob.NewListBlobsFlatPager(b.names.largeContainer, nil)
	var names []string
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range page.Segment.BlobItems {
			names = append(names, *it.Name)
		}
	}
	// (The activity result was handed over in memory: it has no message.)
	joined := strings.Join(names, " ")
	for _, want := range []string{"big/message-", "-ExecutionStarted.json.gz", "-TaskScheduled.json.gz"} {
		if !strings.Contains(joined, want) {
			t.Errorf("no large-message blob %q among %v", want, names)
		}
	}
}

// TestQueryAndPurge covers status, time, prefix and entity filters, paging
// over several pages, and purging one instance and by filter.
func TestQueryAndPurge(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	b := env.open(t, env.options())
	ctx := context.Background()
	if err := b.CreateResources(ctx); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UTC().Add(-time.Second)
	for i := range 25 {
		if err := b.CreateInstance(ctx, startedEvent(fmt.Sprintf("q-%02d", i), "Q", `"in"`)); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"other-1", "@counter@a", "@counter@b"} {
		if err := b.CreateInstance(ctx, startedEvent(id, "Q", "null")); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 10 {
		if err := b.SetInstanceState(ctx, &backend.InstanceState{InstanceID: fmt.Sprintf("q-%02d", i), RuntimeStatus: history.StatusCompleted, Output: `"ok"`}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.SetInstanceState(ctx, &backend.InstanceState{InstanceID: "missing", RuntimeStatus: history.StatusCompleted}); !errors.Is(err, backend.ErrInstanceNotFound) {
		t.Fatalf("SetInstanceState of unknown id: %v", err)
	}
	all := func(q backend.InstanceQuery) ([]string, int) {
		var ids []string
		pages := 0
		for {
			p, err := b.QueryInstances(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, s := range p.Instances {
				ids = append(ids, s.InstanceID)
				if q.FetchInput != (s.Input != "") {
					t.Errorf("%s: input %q with FetchInput %v", s.InstanceID, s.Input, q.FetchInput)
				}
			}
			if p.ContinuationToken == "" {
				return ids, pages
			}
			q.ContinuationToken = p.ContinuationToken
		}
	}
	cases := []struct {
		name  string
		q     backend.InstanceQuery
		count int
	}{
		{"all orchestrations, paged", backend.InstanceQuery{PageSize: 10}, 26},
		{"with entities", backend.InstanceQuery{IncludeEntities: true}, 28},
		{"entities only", backend.InstanceQuery{EntitiesOnly: true}, 2},
		{"prefix", backend.InstanceQuery{InstanceIDPrefix: "q-", PageSize: 7, FetchInput: true}, 25},
		{"completed", backend.InstanceQuery{RuntimeStatus: []history.Status{history.StatusCompleted}}, 10},
		{"pending or completed", backend.InstanceQuery{RuntimeStatus: []history.Status{history.StatusPending, history.StatusCompleted}}, 26},
		{"created in range", backend.InstanceQuery{CreatedFrom: t0, CreatedTo: time.Now().Add(time.Second)}, 26},
		{"created before", backend.InstanceQuery{CreatedTo: t0}, 0},
	}
	for _, c := range cases {
		ids, pages := all(c.q)
		if len(ids) != c.count {
			t.Errorf("%s: %d instances, want %d: %v", c.name, len(ids), c.count, ids)
		}
		if c.q.PageSize > 0 && c.count > c.q.PageSize && pages < 2 {
			t.Errorf("%s: one page for %d instances of page size %d", c.name, c.count, c.q.PageSize)
		}
	}
	if _, err := b.QueryInstances(ctx, backend.InstanceQuery{ContinuationToken: "garbage"}); err == nil {
		t.Error("garbage continuation token accepted")
	}

	// Purge one instance, blobs included, and not its neighbour's.
	for _, name := range []string{"q-020/x.json.gz", "q-02/y.json.gz"} {
		if err := b.uploadLarge(ctx, name, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.PurgeInstance(ctx, "q-02"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetInstance(ctx, "q-02", false); !errors.Is(err, backend.ErrInstanceNotFound) {
		t.Fatalf("purged instance: %v", err)
	}
	if _, err := b.downloadLarge(ctx, "q-020/x.json.gz"); err != nil {
		t.Fatalf("purge of q-02 removed q-020's blob: %v", err)
	}
	if _, err := b.downloadLarge(ctx, "q-02/y.json.gz"); err == nil {
		t.Fatal("purge left q-02's blob")
	}
	if err := b.PurgeInstance(ctx, "never-was"); !errors.Is(err, backend.ErrInstanceNotFound) {
		t.Fatalf("purge unknown: %v", err)
	}
	// By filter: only terminal instances go.
	n, err := b.PurgeInstances(ctx, backend.PurgeFilter{CreatedFrom: t0, RuntimeStatus: []history.Status{history.StatusCompleted, history.StatusPending}})
	if err != nil || n != 9 {
		t.Fatalf("purge by filter: %d %v, want 9", n, err)
	}
	if ids, _ := all(backend.InstanceQuery{InstanceIDPrefix: "q-"}); len(ids) != 15 {
		t.Fatalf("%d q- instances left, want 15", len(ids))
	}
}
