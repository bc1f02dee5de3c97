package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/stratus-dev/stratus/bindings/azstorage"
	"github.com/stratus-dev/stratus/tests/azurite"
	"github.com/stratus-dev/stratus/tests/hosttest"
)

var hubSeq atomic.Int64

// durableHostJSON is a host.json with its own task hub, so that tests sharing
// one Azurite do not share instances.
// The visibility timeouts are short so that a test that kills a host sees
// the messages the dead process had taken come back within seconds rather
// than the default 5 minutes.
func durableHostJSON(t *testing.T) (hostJSON, hub string) {
	hub = fmt.Sprintf("T%dh%d", time.Now().UnixNano()%1_000_000_000, hubSeq.Add(1))
	return fmt.Sprintf(`{
  "version": "2.0",
  "functionTimeout": "00:02:00",
  "extensions": {
    "queues": {"maxPollingInterval": "00:00:00.5"},
    "durableTask": {"hubName": %q, "storageProvider": {"partitionCount": 2, "maxQueuePollingInterval": "00:00:01", "controlQueueVisibilityTimeout": "00:00:10", "workItemQueueVisibilityTimeout": "00:00:10"}}
  }
}`, hub), hub
}

func startDurableHost(t *testing.T, az *azurite.Instance) (*hosttest.Process, string) {
	t.Helper()
	hj, hub := durableHostJSON(t)
	return hosttest.Start(t, hosttest.Options{Storage: az.ConnectionString, HostJSON: hj}), hub
}

func TestDurableSamplesComplete(t *testing.T) {
	t.Parallel()
	az := azurite.Shared(t)
	h, _ := startDurableHost(t, az)

	t.Run("HelloSequence", func(t *testing.T) {
		t.Parallel()
		id := startOrchestration(t, h, "HelloSequence", "", nil)
		st := waitFor(t, h, id, time.Minute, "Completed", "Failed")
		var out []string
		mustJSON(t, st.Output, &out)
		want := []string{"Hello Tokyo!", "Hello Seattle!", "Hello London!"}
		if fmt.Sprint(out) != fmt.Sprint(want) {
			t.Fatalf("output %q, want %q", out, want)
		}
	})
	t.Run("FanOutFanIn", func(t *testing.T) {
		t.Parallel()
		id := startOrchestration(t, h, "FanOutFanIn", "", 30)
		st := waitFor(t, h, id, time.Minute, "Completed", "Failed")
		var sum int
		mustJSON(t, st.Output, &sum)
		if want := 30 * 31 * 61 / 6; sum != want {
			t.Fatalf("sum %d, want %d (status %+v)", sum, want, st)
		}
	})
	t.Run("ApprovalWorkflow approved", func(t *testing.T) {
		t.Parallel()
		id := startOrchestration(t, h, "ApprovalWorkflow", "", map[string]any{"amount": 42})
		waitFor(t, h, id, time.Minute, "Running")
		code, body := postJSON(t, h, mgmt+"/instances/"+id+"/raiseEvent/Approval", `{"approvedBy":"ada"}`)
		if code != http.StatusAccepted {
			t.Fatalf("raise event: %d %s", code, body)
		}
		st := waitFor(t, h, id, time.Minute, "Completed", "Failed")
		var out struct {
			Approval map[string]string `json:"approval"`
			TimedOut bool              `json:"timedOut"`
			Request  map[string]int    `json:"request"`
		}
		mustJSON(t, st.Output, &out)
		if out.TimedOut || out.Approval["approvedBy"] != "ada" || out.Request["amount"] != 42 {
			t.Fatalf("output %s", st.Output)
		}
	})
	t.Run("ApprovalWorkflow timer fires after 2 s", func(t *testing.T) {
		t.Parallel()
		id := startOrchestration(t, h, "ApprovalWorkflow", "", map[string]any{"timeoutSeconds": 2})
		st := waitFor(t, h, id, time.Minute, "Completed", "Failed")
		var out struct {
			TimedOut bool `json:"timedOut"`
		}
		mustJSON(t, st.Output, &out)
		if !out.TimedOut {
			t.Fatalf("want timedOut, got %s", st.Output)
		}
	})
	t.Run("event raised before the orchestrator waits is kept", func(t *testing.T) {
		t.Parallel()
		// The instance is scheduled, and the event sent, before any episode ran.
		id := startOrchestration(t, h, "ApprovalWorkflow", "early-"+fmt.Sprint(time.Now().UnixNano()), map[string]any{"timeoutSeconds": 600})
		code, body := postJSON(t, h, mgmt+"/instances/"+id+"/raiseEvent/Approval", `"early"`)
		if code != http.StatusAccepted {
			t.Fatalf("raise event: %d %s", code, body)
		}
		st := waitFor(t, h, id, time.Minute, "Completed", "Failed")
		if !strings.Contains(string(st.Output), `"approval":"early"`) {
			t.Fatalf("output %s", st.Output)
		}
	})
	t.Run("activity fails twice then succeeds under a retry policy", func(t *testing.T) {
		t.Parallel()
		id := startOrchestration(t, h, "RetryDemo", "", map[string]int{"failures": 2})
		st := waitFor(t, h, id, time.Minute, "Completed", "Failed")
		var out struct {
			Attempts int    `json:"attempts"`
			Key      string `json:"key"`
		}
		mustJSON(t, st.Output, &out)
		if out.Attempts != 3 || out.Key == "" {
			t.Fatalf("output %s, want 3 attempts under one idempotency key", st.Output)
		}
		_, full := getStatus(t, h, id, "?showHistory=true")
		completed, failed := 0, 0
		for _, e := range full.History {
			switch {
			case e["EventType"] == "TaskCompleted" && e["FunctionName"] == "FlakyStep":
				completed++
			case e["EventType"] == "TaskFailed" && e["FunctionName"] == "FlakyStep":
				failed++
			}
		}
		if completed != 1 || failed != 2 {
			t.Fatalf("history has %d failed and %d completed FlakyStep attempts, want 2 and 1: %v", failed, completed, full.History)
		}
	})
	t.Run("retries exhausted fail the instance with the activity's error", func(t *testing.T) {
		t.Parallel()
		id := startOrchestration(t, h, "RetryDemo", "", map[string]int{"failures": 5, "maxAttempts": 2})
		st := waitFor(t, h, id, time.Minute, "Completed", "Failed")
		if st.RuntimeStatus != "Failed" || !strings.Contains(string(st.Output), "fails on purpose") {
			t.Fatalf("status %s output %s", st.RuntimeStatus, st.Output)
		}
		code, _ := getStatus(t, h, id, "?returnInternalServerErrorOnFailure=true")
		if code != http.StatusInternalServerError {
			t.Fatalf("returnInternalServerErrorOnFailure: %d", code)
		}
	})
	t.Run("1 MB payload round-trips", func(t *testing.T) {
		t.Parallel()
		big := strings.Repeat("0123456789abcdef", 64*1024) // 1 MiB
		id := startOrchestration(t, h, "EchoPayload", "", map[string]string{"data": big})
		st := waitFor(t, h, id, 2*time.Minute, "Completed", "Failed")
		var out map[string]string
		mustJSON(t, st.Output, &out)
		if out["data"] != big {
			t.Fatalf("output of %d bytes differs from the 1 MiB input (status %s)", len(out["data"]), st.RuntimeStatus)
		}
		var in map[string]string
		mustJSON(t, st.Input, &in)
		if in["data"] != big {
			t.Fatalf("input of %d bytes differs from what was sent", len(in["data"]))
		}
	})
	t.Run("terminate", func(t *testing.T) {
		t.Parallel()
		id := startOrchestration(t, h, "ApprovalWorkflow", "", map[string]any{"timeoutSeconds": 600})
		waitFor(t, h, id, time.Minute, "Running")
		if code, body := post(t, h, mgmt+"/instances/"+id+"/terminate?reason=no+longer+needed", nil); code != http.StatusAccepted {
			t.Fatalf("terminate: %d %s", code, body)
		}
		st := waitFor(t, h, id, time.Minute, "Terminated")
		if !strings.Contains(string(st.Output), "no longer needed") {
			t.Fatalf("output %s, want the reason", st.Output)
		}
		if code, _ := post(t, h, mgmt+"/instances/"+id+"/terminate", nil); code != http.StatusGone {
			t.Fatalf("terminating a terminated instance: %d, want 410", code)
		}
	})
	t.Run("suspend and resume", func(t *testing.T) {
		t.Parallel()
		id := startOrchestration(t, h, "ApprovalWorkflow", "", map[string]any{"timeoutSeconds": 600})
		waitFor(t, h, id, time.Minute, "Running")
		if code, body := post(t, h, mgmt+"/instances/"+id+"/suspend?reason=hold", nil); code != http.StatusAccepted {
			t.Fatalf("suspend: %d %s", code, body)
		}
		waitFor(t, h, id, time.Minute, "Suspended")
		// An event that arrives while suspended waits for the resume.
		if code, body := postJSON(t, h, mgmt+"/instances/"+id+"/raiseEvent/Approval", `"while suspended"`); code != http.StatusAccepted {
			t.Fatalf("raise: %d %s", code, body)
		}
		if _, st := getStatus(t, h, id, ""); st.RuntimeStatus != "Suspended" {
			t.Fatalf("after an event while suspended: %s", st.RuntimeStatus)
		}
		if code, body := post(t, h, mgmt+"/instances/"+id+"/resume?reason=go", nil); code != http.StatusAccepted {
			t.Fatalf("resume: %d %s", code, body)
		}
		st := waitFor(t, h, id, time.Minute, "Completed", "Failed")
		if !strings.Contains(string(st.Output), "while suspended") {
			t.Fatalf("output %s", st.Output)
		}
	})
	t.Run("purge", func(t *testing.T) {
		t.Parallel()
		id := startOrchestration(t, h, "HelloSequence", "", nil)
		waitFor(t, h, id, time.Minute, "Completed")
		code, _, _, err := h.Do(context.Background(), "DELETE", mgmt+"/instances/"+id, nil)
		if err != nil || code != http.StatusOK {
			t.Fatalf("purge: %d %v", code, err)
		}
		if code, _ := getStatus(t, h, id, ""); code != http.StatusNotFound {
			t.Fatalf("status after purge: %d, want 404", code)
		}
	})
	t.Run("starting a running id again is refused", func(t *testing.T) {
		t.Parallel()
		id := startOrchestration(t, h, "ApprovalWorkflow", "dup-"+fmt.Sprint(time.Now().UnixNano()), map[string]any{"timeoutSeconds": 600})
		code, body, _, err := h.Do(context.Background(), "POST", "/api/orchestrators/ApprovalWorkflow/"+id, []byte(`{}`))
		if err != nil || code != http.StatusConflict {
			t.Fatalf("second start: %d %s %v", code, body, err)
		}
	})
}

func postJSON(t *testing.T, h *hosttest.Process, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", h.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("x-functions-key", hosttest.MasterKey)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var b strings.Builder
	_, _ = fmt.Fprint(&b, res.Status)
	return res.StatusCode, b.String()
}

// TestDurableHistoryTableLayout reads the task hub tables directly: a finished
// HelloSequence must look like Durable Functions' rows.
func TestDurableHistoryTableLayout(t *testing.T) {
	t.Parallel()
	az := azurite.Shared(t)
	h, hub := startDurableHost(t, az)
	id := startOrchestration(t, h, "HelloSequence", "layout-"+fmt.Sprint(time.Now().UnixNano()), nil)
	waitFor(t, h, id, time.Minute, "Completed")

	clients, err := azstorage.Open(az.ConnectionString)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	inst, err := clients.Table.NewClient(hub+"Instances").GetEntity(ctx, id, "", nil)
	if err != nil {
		t.Fatalf("Instances row: %v", err)
	}
	var row map[string]any
	if err := json.Unmarshal(inst.Value, &row); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"Name": "HelloSequence", "RuntimeStatus": "Completed", "TaskHubName": hub, "Output": `["Hello Tokyo!","Hello Seattle!","Hello London!"]`} {
		if row[k] != want {
			t.Errorf("Instances.%s = %v, want %q", k, row[k], want)
		}
	}
	for _, k := range []string{"ExecutionId", "CreatedTime", "LastUpdatedTime", "CompletedTime", "CustomStatus"} {
		if _, ok := row[k]; !ok {
			t.Errorf("Instances row has no %s column: %v", k, row)
		}
	}

	filter := "PartitionKey eq '" + id + "'"
	pager := clients.Table.NewClient(hub + "History").NewListEntitiesPager(&aztables.ListEntitiesOptions{Filter: &filter})
	var types []string
	sentinel := false
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Entities {
			var r map[string]any
			if err := json.Unmarshal(e, &r); err != nil {
				t.Fatal(err)
			}
			if r["RowKey"] == "sentinel" {
				sentinel = true
				continue
			}
			if r["ExecutionId"] != row["ExecutionId"] {
				t.Errorf("row %v has ExecutionId %v, want %v", r["RowKey"], r["ExecutionId"], row["ExecutionId"])
			}
			if rk, _ := r["RowKey"].(string); len(rk) != 16 {
				t.Errorf("RowKey %q is not 16 hex digits", rk)
			}
			if _, ok := r["_Timestamp"]; !ok {
				t.Errorf("row %v has no _Timestamp", r["RowKey"])
			}
			types = append(types, fmt.Sprint(r["EventType"]))
		}
	}
	if !sentinel {
		t.Error("no sentinel row")
	}
	got := strings.Join(types, ",")
	for _, want := range []string{"OrchestratorStarted", "ExecutionStarted", "TaskScheduled", "TaskCompleted", "ExecutionCompleted", "OrchestratorCompleted"} {
		if !strings.Contains(got, want) {
			t.Errorf("history %s has no %s", got, want)
		}
	}
	if n := strings.Count(got, "TaskScheduled"); n != 3 {
		t.Errorf("history has %d TaskScheduled, want 3: %s", n, got)
	}
}

// TestDurableSurvivesKill kills the host (SIGKILL) in the middle of a
// 20-activity chain; after a restart the instance completes with the result
// it would have had.
func TestDurableSurvivesKill(t *testing.T) {
	t.Parallel()
	az := azurite.Shared(t)
	hj, _ := durableHostJSON(t)
	h := hosttest.Start(t, hosttest.Options{Storage: az.ConnectionString, HostJSON: hj})
	id := startOrchestration(t, h, "Chain", "chain-"+fmt.Sprint(time.Now().UnixNano()), map[string]int{"steps": 20, "delayMs": 150})

	deadline := time.Now().Add(time.Minute)
	for {
		_, st := getStatus(t, h, id, "")
		var cs struct {
			Step int `json:"step"`
		}
		_ = json.Unmarshal(st.CustomStatus, &cs)
		if cs.Step >= 6 {
			break
		}
		if st.RuntimeStatus == "Completed" || st.RuntimeStatus == "Failed" || time.Now().After(deadline) {
			t.Fatalf("chain is %s at step %d before the kill", st.RuntimeStatus, cs.Step)
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.Kill()

	h2 := hosttest.Start(t, hosttest.Options{Storage: az.ConnectionString, HostJSON: hj})
	st := waitFor(t, h2, id, 2*time.Minute, "Completed", "Failed")
	var total int
	mustJSON(t, st.Output, &total)
	if st.RuntimeStatus != "Completed" || total != 210 {
		t.Fatalf("after restart: %s with %d, want Completed with 210 (1+…+20)", st.RuntimeStatus, total)
	}
	_, full := getStatus(t, h2, id, "?showHistory=true")
	completed := 0
	for _, e := range full.History {
		if e["EventType"] == "TaskCompleted" {
			completed++
		}
	}
	if completed != 20 {
		t.Fatalf("history has %d TaskCompleted, want 20 (no step lost or doubled)", completed)
	}
}
