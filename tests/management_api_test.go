package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/tests/azurite"
	"github.com/stratus-dev/stratus/tests/hosttest"
)

// The durable HTTP management API end to end: a real host process on a task
// hub of its own in Azurite, called over HTTP as Durable Functions clients
// call it.

const (
	testSystemKey = "test-durable-system-key"
	testHostKey   = "test-host-key"
)

// mgmtHost is a host serving the management API.
type mgmtHost struct {
	h   *hosttest.Process
	hub string
}

// reply is one HTTP answer.
type reply struct {
	code int
	body []byte
	hdr  http.Header
}

func (r reply) String() string { return fmt.Sprintf("%d %s", r.code, r.body) }

// payload is the check-status payload.
type payload struct {
	ID                    string `json:"id"`
	StatusQueryGetURI     string `json:"statusQueryGetUri"`
	SendEventPostURI      string `json:"sendEventPostUri"`
	TerminatePostURI      string `json:"terminatePostUri"`
	RewindPostURI         string `json:"rewindPostUri"`
	PurgeHistoryDeleteURI string `json:"purgeHistoryDeleteUri"`
	RestartPostURI        string `json:"restartPostUri"`
	SuspendPostURI        string `json:"suspendPostUri"`
	ResumePostURI         string `json:"resumePostUri"`
}

func (p payload) urls() map[string]string {
	return map[string]string{
		"statusQueryGetUri": p.StatusQueryGetURI, "sendEventPostUri": p.SendEventPostURI,
		"terminatePostUri": p.TerminatePostURI, "rewindPostUri": p.RewindPostURI,
		"purgeHistoryDeleteUri": p.PurgeHistoryDeleteURI, "restartPostUri": p.RestartPostURI,
		"suspendPostUri": p.SuspendPostURI, "resumePostUri": p.ResumePostURI,
	}
}

// startMgmtHost starts a host with a system key and a host key configured.
func startMgmtHost(t *testing.T, az *azurite.Instance, args ...string) *mgmtHost {
	t.Helper()
	hj, hub := durableHostJSON(t)
	h := hosttest.Start(t, hosttest.Options{
		Storage:  az.ConnectionString,
		HostJSON: hj,
		Env:      []string{"FUNCTIONS_SYSTEM_KEY_durabletask_extension=" + testSystemKey, "FUNCTIONS_HOST_KEYS=" + testHostKey},
		Args:     args,
	})
	return &mgmtHost{h: h, hub: hub}
}

// send sends a request. target is a path on the host or an absolute URL;
// hdr holds header name/value pairs. No key is added.
func (m *mgmtHost) send(t *testing.T, method, target, body string, hdr ...string) reply {
	t.Helper()
	if strings.HasPrefix(target, "/") {
		target = m.h.URL + target
	}
	req, err := http.NewRequestWithContext(context.Background(), method, target, strings.NewReader(body))
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, target, err)
	}
	return reply{code: res.StatusCode, body: b, hdr: res.Header}
}

// do sends a request under the management API with the master key and, for
// a body, Content-Type: application/json.
func (m *mgmtHost) do(t *testing.T, method, path, body string) reply {
	t.Helper()
	hdr := []string{"x-functions-key", hosttest.MasterKey}
	if body != "" {
		hdr = append(hdr, "Content-Type", "application/json")
	}
	return m.send(t, method, mgmt+path, body, hdr...)
}

// start starts orchestrator name through the management API and returns
// the check-status payload.
func (m *mgmtHost) start(t *testing.T, name, id, input string) payload {
	t.Helper()
	path := "/orchestrators/" + name
	if id != "" {
		path += "/" + url.PathEscape(id)
	}
	r := m.do(t, "POST", path, input)
	if r.code != http.StatusAccepted {
		t.Fatalf("start %s: %s", name, r)
	}
	var p payload
	if err := json.Unmarshal(r.body, &p); err != nil || p.ID == "" {
		t.Fatalf("start %s: check-status payload %s: %v", name, r.body, err)
	}
	return p
}

// wantMessage checks an error answer: the status code and a JSON body with
// a non-empty Message.
func wantMessage(t *testing.T, what string, r reply, code int) {
	t.Helper()
	var body struct {
		Message string `json:"Message"`
	}
	if r.code != code || json.Unmarshal(r.body, &body) != nil || body.Message == "" {
		t.Errorf("%s: %s, want %d with a JSON Message", what, r, code)
	}
}

func TestManagementAPI(t *testing.T) {
	t.Parallel()
	az := azurite.Shared(t)
	m := startMgmtHost(t, az)
	uniq := func(p string) string { return fmt.Sprintf("%s-%d", p, time.Now().UnixNano()) }

	t.Run("start without an id answers the check-status payload", func(t *testing.T) {
		t.Parallel()
		r := m.do(t, "POST", "/orchestrators/HelloSequence", "")
		if r.code != http.StatusAccepted {
			t.Fatalf("start: %s", r)
		}
		var p payload
		mustJSON(t, r.body, &p)
		if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(p.ID) {
			t.Errorf("generated id %q is not 32 hex digits", p.ID)
		}
		if loc := r.hdr.Get("Location"); loc != p.StatusQueryGetURI {
			t.Errorf("Location %q, want statusQueryGetUri %q", loc, p.StatusQueryGetURI)
		}
		if ra := r.hdr.Get("Retry-After"); ra != "10" {
			t.Errorf("Retry-After %q, want 10", ra)
		}
		inst := m.h.URL + mgmt + "/instances/" + p.ID
		for name, u := range p.urls() {
			pu, err := url.Parse(u)
			if err != nil || !strings.HasPrefix(u, inst) {
				t.Errorf("%s %q is not under %s", name, u, inst)
				continue
			}
			q := pu.Query()
			if q.Get("taskHub") != m.hub || q.Get("connection") != "Storage" || q.Get("code") != testSystemKey {
				t.Errorf("%s %q: want taskHub=%s, connection=Storage and code=<system key>", name, u, m.hub)
			}
		}
		for name, u := range map[string]string{"sendEventPostUri": p.SendEventPostURI, "terminatePostUri": p.TerminatePostURI, "rewindPostUri": p.RewindPostURI, "suspendPostUri": p.SuspendPostURI, "resumePostUri": p.ResumePostURI, "restartPostUri": p.RestartPostURI} {
			suffix := map[string]string{"sendEventPostUri": "/raiseEvent/{eventName}?", "terminatePostUri": "/terminate?reason={text}&", "rewindPostUri": "/rewind?reason={text}&", "suspendPostUri": "/suspend?reason={text}&", "resumePostUri": "/resume?reason={text}&", "restartPostUri": "/restart?"}[name]
			if !strings.HasPrefix(u, inst+suffix) {
				t.Errorf("%s %q does not start with %s", name, u, inst+suffix)
			}
		}
		// The status URL works as given: its code opens the API.
		deadline := time.Now().Add(time.Minute)
		for {
			s := m.send(t, "GET", p.StatusQueryGetURI, "")
			if s.code == http.StatusOK {
				var st status
				mustJSON(t, s.body, &st)
				if st.RuntimeStatus != "Completed" || !strings.Contains(string(st.Output), "Hello Tokyo!") {
					t.Fatalf("status %s", s.body)
				}
				break
			}
			if s.code != http.StatusAccepted || time.Now().After(deadline) {
				t.Fatalf("status URL: %s", s)
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("start with an id and input", func(t *testing.T) {
		t.Parallel()
		id := uniq("echo")
		p := m.start(t, "EchoPayload", id, `{"a":[1,2]}`)
		if p.ID != id {
			t.Fatalf("id %q, want %q", p.ID, id)
		}
		st := waitFor(t, m.h, id, time.Minute, "Completed", "Failed")
		if string(st.Output) != `{"a":[1,2]}` || string(st.Input) != `{"a":[1,2]}` || st.Name != "EchoPayload" {
			t.Fatalf("status %+v", st)
		}
		// A running id cannot be started again; a finished one can.
		running := uniq("dup")
		m.start(t, "ApprovalWorkflow", running, `{"timeoutSeconds":600}`)
		wantMessage(t, "starting a running id again", m.do(t, "POST", "/orchestrators/ApprovalWorkflow/"+running, ""), http.StatusBadRequest)
		if r := m.do(t, "POST", "/orchestrators/EchoPayload/"+id, `"again"`); r.code != http.StatusAccepted {
			t.Fatalf("starting a completed id again: %s", r)
		}
		waitFor(t, m.h, running, time.Minute, "Running")
		m.do(t, "POST", "/instances/"+running+"/terminate", "")
	})

	t.Run("start and wait", func(t *testing.T) {
		t.Parallel()
		r := m.do(t, "POST", "/orchestrators/HelloSequence?timeout=60&pollingInterval=1", "")
		if r.code != http.StatusOK || string(bytes.TrimSpace(r.body)) != `["Hello Tokyo!","Hello Seattle!","Hello London!"]` {
			t.Errorf("completed within the timeout: %s, want 200 with the output", r)
		}
		r = m.do(t, "POST", "/orchestrators/ApprovalWorkflow?timeout=1&pollingInterval=1", `{"timeoutSeconds":600}`)
		var p payload
		if r.code != http.StatusAccepted || json.Unmarshal(r.body, &p) != nil || p.StatusQueryGetURI == "" || r.hdr.Get("Location") == "" {
			t.Errorf("still running at the timeout: %s, want 202 with the check-status payload", r)
		} else {
			m.do(t, "POST", "/instances/"+p.ID+"/terminate", "")
		}
		r = m.do(t, "POST", "/orchestrators/RetryDemo?timeout=60&pollingInterval=1", `{"failures":5,"maxAttempts":1}`)
		var st status
		if r.code != http.StatusOK || json.Unmarshal(r.body, &st) != nil || st.RuntimeStatus != "Failed" {
			t.Errorf("failed within the timeout: %s, want 200 with the Failed status", r)
		}
		wantMessage(t, "timeout not a number", m.do(t, "POST", "/orchestrators/HelloSequence?timeout=soon", ""), http.StatusBadRequest)
		wantMessage(t, "pollingInterval 0", m.do(t, "POST", "/orchestrators/HelloSequence?timeout=5&pollingInterval=0", ""), http.StatusBadRequest)
	})

	t.Run("start errors", func(t *testing.T) {
		t.Parallel()
		wantMessage(t, "unknown orchestrator", m.do(t, "POST", "/orchestrators/NoSuchOrchestrator", ""), http.StatusBadRequest)
		wantMessage(t, "an activity is not an orchestrator", m.do(t, "POST", "/orchestrators/SayHello", ""), http.StatusBadRequest)
		wantMessage(t, "malformed JSON input", m.do(t, "POST", "/orchestrators/HelloSequence", `{"a":`), http.StatusBadRequest)
	})

	t.Run("status", func(t *testing.T) {
		t.Parallel()
		id := uniq("hello")
		m.start(t, "HelloSequence", id, `"in"`)
		waitFor(t, m.h, id, time.Minute, "Completed")
		r := m.do(t, "GET", "/instances/"+id, "")
		var st map[string]json.RawMessage
		mustJSON(t, r.body, &st)
		if r.code != http.StatusOK {
			t.Fatalf("completed: %s", r)
		}
		for _, k := range []string{"name", "instanceId", "runtimeStatus", "input", "customStatus", "output", "createdTime", "lastUpdatedTime"} {
			if _, ok := st[k]; !ok {
				t.Errorf("status lacks %s: %s", k, r.body)
			}
		}
		if _, ok := st["historyEvents"]; ok {
			t.Errorf("historyEvents without showHistory: %s", r.body)
		}
		if string(st["input"]) != `"in"` {
			t.Errorf("input %s, want \"in\"", st["input"])
		}
		for _, k := range []string{"createdTime", "lastUpdatedTime"} {
			var s string
			mustJSON(t, st[k], &s)
			if _, err := time.Parse(time.RFC3339, s); err != nil || !strings.HasSuffix(s, "Z") {
				t.Errorf("%s %q is not an ISO-8601 UTC time", k, s)
			}
		}
		_, noInput := getStatus(t, m.h, id, "?showInput=false")
		if string(noInput.Input) != "null" {
			t.Errorf("showInput=false: input %s", noInput.Input)
		}
		_, hist := getStatus(t, m.h, id, "?showHistory=true")
		var types []string
		sayHello := 0
		for _, e := range hist.History {
			types = append(types, fmt.Sprint(e["EventType"]))
			if e["EventType"] == "TaskCompleted" && e["FunctionName"] == "SayHello" {
				sayHello++
				if _, ok := e["Result"]; ok {
					t.Errorf("Result without showHistoryOutput: %v", e)
				}
			}
		}
		if sayHello != 3 || types[0] != "ExecutionStarted" || types[len(types)-1] != "ExecutionCompleted" {
			t.Errorf("history %v, want ExecutionStarted, three SayHello completions, ExecutionCompleted", types)
		}
		_, out := getStatus(t, m.h, id, "?showHistory=true&showHistoryOutput=true")
		results := 0
		for _, e := range out.History {
			if e["EventType"] == "TaskCompleted" && strings.HasPrefix(fmt.Sprint(e["Result"]), "Hello ") {
				results++
			}
		}
		if results != 3 {
			t.Errorf("showHistoryOutput: %d activity results in %v", results, out.History)
		}

		running := uniq("waiting")
		m.start(t, "ApprovalWorkflow", running, `{"timeoutSeconds":600}`)
		waitFor(t, m.h, running, time.Minute, "Running")
		r = m.do(t, "GET", "/instances/"+running+"?showInput=true", "")
		if r.code != http.StatusAccepted || r.hdr.Get("Retry-After") == "" || !strings.HasSuffix(r.hdr.Get("Location"), mgmt+"/instances/"+running+"?showInput=true") {
			t.Errorf("running: %s %v, want 202 with Location and Retry-After", r, r.hdr)
		}
		if !strings.Contains(string(r.body), `"waitingFor":"Approval"`) {
			t.Errorf("running: customStatus missing in %s", r.body)
		}
		m.do(t, "POST", "/instances/"+running+"/terminate", "")

		failed := uniq("failed")
		m.start(t, "RetryDemo", failed, `{"failures":5,"maxAttempts":1}`)
		waitFor(t, m.h, failed, time.Minute, "Failed")
		if r := m.do(t, "GET", "/instances/"+failed, ""); r.code != http.StatusOK {
			t.Errorf("failed: %s, want 200", r)
		}
		if r := m.do(t, "GET", "/instances/"+failed+"?returnInternalServerErrorOnFailure=true", ""); r.code != http.StatusInternalServerError || !strings.Contains(string(r.body), `"Failed"`) {
			t.Errorf("failed with returnInternalServerErrorOnFailure: %s, want 500 with the status", r)
		}
		if r := m.do(t, "GET", "/instances/"+id+"?returnInternalServerErrorOnFailure=true", ""); r.code != http.StatusOK {
			t.Errorf("completed with returnInternalServerErrorOnFailure: %s, want 200", r)
		}
		wantMessage(t, "unknown instance", m.do(t, "GET", "/instances/"+uniq("nobody"), ""), http.StatusNotFound)
	})

	t.Run("list with filters and pages", func(t *testing.T) {
		t.Parallel()
		prefix := uniq("page") + "-"
		from := time.Now().UTC().Add(-2 * time.Second)
		const n = 7
		for i := range n {
			m.start(t, "Chain", fmt.Sprintf("%s%d", prefix, i), `{"steps":0}`)
		}
		for i := range n {
			waitFor(t, m.h, fmt.Sprintf("%s%d", prefix, i), time.Minute, "Completed")
		}
		after := time.Now().UTC().Add(2 * time.Second)
		list := func(query string, top int) (ids []string, pages int, items []map[string]json.RawMessage) {
			t.Helper()
			token := ""
			for {
				hdr := []string{"x-functions-key", hosttest.MasterKey}
				if token != "" {
					hdr = append(hdr, "x-ms-continuation-token", token)
				}
				q := "instanceIdPrefix=" + url.QueryEscape(prefix) + query
				if top > 0 {
					q += fmt.Sprintf("&top=%d", top)
				}
				r := m.send(t, "GET", mgmt+"/instances?"+q, "", hdr...)
				if r.code != http.StatusOK {
					t.Fatalf("list %s: %s", q, r)
				}
				var page []map[string]json.RawMessage
				mustJSON(t, r.body, &page)
				if top > 0 && len(page) > top {
					t.Errorf("page of %d instances with top=%d", len(page), top)
				}
				pages++
				for _, it := range page {
					var id string
					mustJSON(t, it["instanceId"], &id)
					ids = append(ids, id)
				}
				items = append(items, page...)
				token = r.hdr.Get("x-ms-continuation-token")
				if token == "" {
					return ids, pages, items
				}
				if pages > 2*n {
					t.Fatalf("more than %d pages for %d instances", pages, n)
				}
			}
		}
		ids, pages, items := list("", 3)
		slices.Sort(ids)
		if len(ids) != n || len(slices.Compact(slices.Clone(ids))) != n || pages < 3 {
			t.Fatalf("paged listing: %d pages with ids %v, want %d distinct over at least 3 pages", pages, ids, n)
		}
		for _, it := range items {
			if string(it["input"]) != "null" || string(it["runtimeStatus"]) != `"Completed"` || string(it["name"]) != `"Chain"` {
				t.Errorf("listed item without showInput: %v", it)
				break
			}
		}
		if _, _, items := list("&showInput=true", 0); len(items) != n || string(items[0]["input"]) != `{"steps":0}` {
			t.Errorf("showInput=true: %d items, first input %s", len(items), items[0]["input"])
		}
		for q, want := range map[string]int{
			"&runtimeStatus=Completed":                                                                       n,
			"&runtimeStatus=Running,Completed":                                                               n,
			"&runtimeStatus=Running,Pending,Failed,Suspended":                                                0,
			"&createdTimeFrom=" + from.Format(time.RFC3339):                                                  n,
			"&createdTimeFrom=" + after.Format(time.RFC3339Nano):                                             0,
			"&createdTimeTo=" + from.Format(time.RFC3339):                                                    0,
			"&createdTimeFrom=" + from.Format(time.RFC3339) + "&createdTimeTo=" + after.Format(time.RFC3339): n,
		} {
			if ids, _, _ := list(q, 0); len(ids) != want {
				t.Errorf("list %s: %d instances, want %d", q, len(ids), want)
			}
		}
		wantMessage(t, "unknown runtimeStatus", m.do(t, "GET", "/instances?runtimeStatus=Completed,Sleeping", ""), http.StatusBadRequest)
		wantMessage(t, "top=0", m.do(t, "GET", "/instances?top=0", ""), http.StatusBadRequest)
		wantMessage(t, "top not a number", m.do(t, "GET", "/instances?top=ten", ""), http.StatusBadRequest)
		wantMessage(t, "createdTimeFrom not a time", m.do(t, "GET", "/instances?createdTimeFrom=yesterday", ""), http.StatusBadRequest)
	})

	t.Run("raiseEvent", func(t *testing.T) {
		t.Parallel()
		id := uniq("approve")
		m.start(t, "ApprovalWorkflow", id, `{"timeoutSeconds":600}`)
		waitFor(t, m.h, id, time.Minute, "Running")
		wantMessage(t, "text/plain body", m.send(t, "POST", mgmt+"/instances/"+id+"/raiseEvent/Approval", `"yes"`, "x-functions-key", hosttest.MasterKey, "Content-Type", "text/plain"), http.StatusBadRequest)
		wantMessage(t, "no content type", m.send(t, "POST", mgmt+"/instances/"+id+"/raiseEvent/Approval", `"yes"`, "x-functions-key", hosttest.MasterKey), http.StatusBadRequest)
		wantMessage(t, "malformed JSON data", m.do(t, "POST", "/instances/"+id+"/raiseEvent/Approval", `{"ok":`), http.StatusBadRequest)
		if r := m.do(t, "POST", "/instances/"+id+"/raiseEvent/Approval", `{"by":"ada"}`); r.code != http.StatusAccepted {
			t.Fatalf("raise: %s", r)
		}
		st := waitFor(t, m.h, id, time.Minute, "Completed", "Failed")
		if !strings.Contains(string(st.Output), `"approval":{"by":"ada"}`) {
			t.Fatalf("output %s", st.Output)
		}
		wantMessage(t, "raise on a completed instance", m.do(t, "POST", "/instances/"+id+"/raiseEvent/Approval", `true`), http.StatusGone)
		wantMessage(t, "raise on an unknown instance", m.do(t, "POST", "/instances/"+uniq("nobody")+"/raiseEvent/Approval", `true`), http.StatusNotFound)
	})

	t.Run("terminate", func(t *testing.T) {
		t.Parallel()
		id := uniq("term")
		m.start(t, "ApprovalWorkflow", id, `{"timeoutSeconds":600}`)
		waitFor(t, m.h, id, time.Minute, "Running")
		if r := m.do(t, "POST", "/instances/"+id+"/terminate?reason=not+needed", ""); r.code != http.StatusAccepted {
			t.Fatalf("terminate: %s", r)
		}
		st := waitFor(t, m.h, id, time.Minute, "Terminated")
		if !strings.Contains(string(st.Output), "not needed") {
			t.Errorf("output %s, want the reason", st.Output)
		}
		if r := m.do(t, "GET", "/instances/"+id, ""); r.code != http.StatusOK {
			t.Errorf("status of a terminated instance: %s, want 200", r)
		}
		wantMessage(t, "terminate a terminated instance", m.do(t, "POST", "/instances/"+id+"/terminate", ""), http.StatusGone)
		wantMessage(t, "terminate an unknown instance", m.do(t, "POST", "/instances/"+uniq("nobody")+"/terminate", ""), http.StatusNotFound)
	})

	t.Run("suspend and resume", func(t *testing.T) {
		t.Parallel()
		id := uniq("hold")
		m.start(t, "ApprovalWorkflow", id, `{"timeoutSeconds":600}`)
		waitFor(t, m.h, id, time.Minute, "Running")
		if r := m.do(t, "POST", "/instances/"+id+"/suspend?reason=hold", ""); r.code != http.StatusAccepted {
			t.Fatalf("suspend: %s", r)
		}
		waitFor(t, m.h, id, time.Minute, "Suspended")
		if r := m.do(t, "GET", "/instances/"+id, ""); r.code != http.StatusAccepted {
			t.Errorf("status of a suspended instance: %s, want 202", r)
		}
		if r := m.do(t, "POST", "/instances/"+id+"/resume?reason=go", ""); r.code != http.StatusAccepted {
			t.Fatalf("resume: %s", r)
		}
		waitFor(t, m.h, id, time.Minute, "Running")
		m.do(t, "POST", "/instances/"+id+"/raiseEvent/Approval", `"ok"`)
		waitFor(t, m.h, id, time.Minute, "Completed")
		wantMessage(t, "suspend a completed instance", m.do(t, "POST", "/instances/"+id+"/suspend", ""), http.StatusGone)
		wantMessage(t, "resume a completed instance", m.do(t, "POST", "/instances/"+id+"/resume", ""), http.StatusGone)
		wantMessage(t, "suspend an unknown instance", m.do(t, "POST", "/instances/"+uniq("nobody")+"/suspend", ""), http.StatusNotFound)
		wantMessage(t, "resume an unknown instance", m.do(t, "POST", "/instances/"+uniq("nobody")+"/resume", ""), http.StatusNotFound)
	})

	t.Run("rewind", func(t *testing.T) {
		t.Parallel()
		// FlakyStep fails its first attempt; without retries the instance
		// fails. Rewound, the call runs again (same idempotency key) and
		// succeeds on its second attempt.
		id := uniq("rewind")
		m.start(t, "RetryDemo", id, `{"failures":1,"maxAttempts":1}`)
		waitFor(t, m.h, id, time.Minute, "Failed", "Completed")
		if r := m.do(t, "POST", "/instances/"+id+"/rewind?reason=try+again", ""); r.code != http.StatusAccepted {
			t.Fatalf("rewind: %s", r)
		}
		st := waitFor(t, m.h, id, time.Minute, "Completed", "Failed")
		var out struct {
			Attempts int `json:"attempts"`
		}
		mustJSON(t, st.Output, &out)
		if st.RuntimeStatus != "Completed" || out.Attempts != 2 {
			t.Fatalf("after rewind: %s %s, want Completed after 2 attempts", st.RuntimeStatus, st.Output)
		}
		wantMessage(t, "rewind a completed instance", m.do(t, "POST", "/instances/"+id+"/rewind", ""), http.StatusGone)
		running := uniq("rewind-running")
		m.start(t, "ApprovalWorkflow", running, `{"timeoutSeconds":600}`)
		waitFor(t, m.h, running, time.Minute, "Running")
		wantMessage(t, "rewind a running instance", m.do(t, "POST", "/instances/"+running+"/rewind", ""), http.StatusBadRequest)
		m.do(t, "POST", "/instances/"+running+"/terminate", "")
		wantMessage(t, "rewind an unknown instance", m.do(t, "POST", "/instances/"+uniq("nobody")+"/rewind", ""), http.StatusNotFound)
	})

	t.Run("restart", func(t *testing.T) {
		t.Parallel()
		id := uniq("restart")
		m.start(t, "HelloSequence", id, "")
		waitFor(t, m.h, id, time.Minute, "Completed")
		r := m.do(t, "POST", "/instances/"+id+"/restart", "")
		var p payload
		if r.code != http.StatusAccepted || json.Unmarshal(r.body, &p) != nil || p.ID == "" || p.ID == id || r.hdr.Get("Location") == "" {
			t.Fatalf("restart: %s, want 202 with a new instance's payload", r)
		}
		if st := waitFor(t, m.h, p.ID, time.Minute, "Completed", "Failed"); st.Name != "HelloSequence" || !strings.Contains(string(st.Output), "Hello London!") {
			t.Fatalf("restarted instance: %+v", st)
		}
		r = m.do(t, "POST", "/instances/"+id+"/restart?restartWithNewInstanceId=false", "")
		if r.code != http.StatusAccepted || json.Unmarshal(r.body, &p) != nil || p.ID != id {
			t.Fatalf("restart with the same id: %s", r)
		}
		waitFor(t, m.h, id, time.Minute, "Completed")
		wantMessage(t, "restart an unknown instance", m.do(t, "POST", "/instances/"+uniq("nobody")+"/restart", ""), http.StatusBadRequest)
		running := uniq("restart-running")
		m.start(t, "ApprovalWorkflow", running, `{"timeoutSeconds":600}`)
		waitFor(t, m.h, running, time.Minute, "Running")
		wantMessage(t, "restart a running instance under its id", m.do(t, "POST", "/instances/"+running+"/restart?restartWithNewInstanceId=false", ""), http.StatusBadRequest)
		m.do(t, "POST", "/instances/"+running+"/terminate", "")
	})

	t.Run("purge one", func(t *testing.T) {
		t.Parallel()
		id := uniq("purge")
		m.start(t, "HelloSequence", id, "")
		waitFor(t, m.h, id, time.Minute, "Completed")
		r := m.do(t, "DELETE", "/instances/"+id, "")
		if r.code != http.StatusOK || string(bytes.TrimSpace(r.body)) != `{"instancesDeleted":1}` {
			t.Fatalf("purge: %s", r)
		}
		if r := m.do(t, "GET", "/instances/"+id, ""); r.code != http.StatusNotFound {
			t.Errorf("status after purge: %s", r)
		}
		if r := m.do(t, "DELETE", "/instances/"+id, ""); r.code != http.StatusNotFound {
			t.Errorf("purge again: %s, want 404", r)
		}
	})

	t.Run("malformed ids and event names are 400", func(t *testing.T) {
		t.Parallel()
		bad := []string{"a%23b", "a%3Fb", "a%5Cb", "a%2Fb", "a%01b", "%40", "%40solo", strings.Repeat("x", 257)}
		for _, id := range bad {
			for _, rt := range []struct{ method, path string }{
				{"GET", "/instances/" + id},
				{"DELETE", "/instances/" + id},
				{"POST", "/instances/" + id + "/terminate"},
				{"POST", "/instances/" + id + "/suspend"},
				{"POST", "/instances/" + id + "/resume"},
				{"POST", "/instances/" + id + "/rewind"},
				{"POST", "/instances/" + id + "/restart"},
				{"POST", "/instances/" + id + "/raiseEvent/Approval"},
				{"POST", "/orchestrators/HelloSequence/" + id},
			} {
				body := ""
				if strings.Contains(rt.path, "raiseEvent") {
					body = "true"
				}
				wantMessage(t, rt.method+" "+rt.path, m.do(t, rt.method, rt.path, body), http.StatusBadRequest)
			}
		}
		wantMessage(t, "start with an entity id", m.do(t, "POST", "/orchestrators/HelloSequence/%40counter%40k", ""), http.StatusBadRequest)
		wantMessage(t, "status of an unknown entity instance", m.do(t, "GET", "/instances/%40counter%40k", ""), http.StatusNotFound)
		id := uniq("events")
		m.start(t, "ApprovalWorkflow", id, `{"timeoutSeconds":600}`)
		for _, ev := range []string{"a%2Fb", "a%01b", "a%23b", strings.Repeat("e", 257)} {
			wantMessage(t, "event name "+ev, m.do(t, "POST", "/instances/"+id+"/raiseEvent/"+ev, "true"), http.StatusBadRequest)
		}
		m.do(t, "POST", "/instances/"+id+"/terminate", "")
		wantMessage(t, "another task hub", m.do(t, "GET", "/instances?taskHub=SomeOtherHub", ""), http.StatusBadRequest)
		wantMessage(t, "no route", m.do(t, "GET", "/nothing/here", ""), http.StatusNotFound)
	})

	t.Run("keys", func(t *testing.T) {
		t.Parallel()
		routes := []struct{ method, path, body string }{
			{"GET", "/instances", ""},
			{"GET", "/instances/x", ""},
			{"POST", "/orchestrators/HelloSequence", ""},
			{"POST", "/instances/x/raiseEvent/Approval", "true"},
			{"POST", "/instances/x/terminate", ""},
			{"DELETE", "/instances/x", ""},
			{"DELETE", "/instances?createdTimeFrom=2020-01-01T00:00:00Z", ""},
			{"GET", "/entities/counter/x", ""},
		}
		for _, rt := range routes {
			for what, hdr := range map[string][]string{
				"no key":    nil,
				"wrong key": {"x-functions-key", "wrong"},
				"host key":  {"x-functions-key", testHostKey},
			} {
				r := m.send(t, rt.method, mgmt+rt.path, rt.body, append(hdr, "Content-Type", "application/json")...)
				wantMessage(t, rt.method+" "+rt.path+" with "+what, r, http.StatusUnauthorized)
			}
		}
		for what, target := range map[string][]string{
			"system key as code":      {mgmt + "/instances?code=" + testSystemKey},
			"system key as header":    {mgmt + "/instances", "x-functions-key", testSystemKey},
			"master key as code":      {mgmt + "/instances?code=" + hosttest.MasterKey},
			"master key as header":    {mgmt + "/instances", "x-functions-key", hosttest.MasterKey},
			"wrong header, good code": {mgmt + "/instances?code=" + testSystemKey, "x-functions-key", "wrong"},
		} {
			r := m.send(t, "GET", target[0], "", target[1:]...)
			want := http.StatusOK
			if what == "wrong header, good code" {
				want = http.StatusUnauthorized // the header wins, as in Azure Functions
			}
			if r.code != want {
				t.Errorf("%s: %s, want %d", what, r, want)
			}
		}
	})

	t.Run("durableClient binding data", func(t *testing.T) {
		t.Parallel()
		if r := m.send(t, "GET", "/api/durable/client", ""); r.code != http.StatusUnauthorized {
			t.Errorf("binding data without the master key: %s, want 401", r)
		}
		r := m.send(t, "GET", "/api/durable/client", "", "x-functions-key", hosttest.MasterKey)
		var d struct {
			TaskHubName                   string            `json:"taskHubName"`
			CreationURLs                  map[string]string `json:"creationUrls"`
			ManagementURLs                payload           `json:"managementUrls"`
			BaseURL                       string            `json:"baseUrl"`
			RequiredQueryStringParameters string            `json:"requiredQueryStringParameters"`
		}
		if r.code != http.StatusOK || json.Unmarshal(r.body, &d) != nil {
			t.Fatalf("binding data: %s", r)
		}
		base := m.h.URL + mgmt
		rq := "taskHub=" + m.hub + "&connection=Storage&code=" + testSystemKey
		if d.TaskHubName != m.hub || d.BaseURL != base || d.RequiredQueryStringParameters != rq {
			t.Errorf("binding data %s: want taskHubName %s, baseUrl %s, requiredQueryStringParameters %s", r.body, m.hub, base, rq)
		}
		if got, want := d.CreationURLs["createNewInstancePostUri"], base+"/orchestrators/{functionName}[/{instanceId}]?"+rq; got != want {
			t.Errorf("createNewInstancePostUri %q, want %q", got, want)
		}
		if got, want := d.CreationURLs["createAndWaitOnNewInstancePostUri"], base+"/orchestrators/{functionName}[/{instanceId}]?timeout={timeoutInSeconds}&pollingInterval={intervalInSeconds}&"+rq; got != want {
			t.Errorf("createAndWaitOnNewInstancePostUri %q, want %q", got, want)
		}
		if d.ManagementURLs.ID != "INSTANCEID" {
			t.Errorf("managementUrls.id %q, want INSTANCEID", d.ManagementURLs.ID)
		}
		for name, u := range d.ManagementURLs.urls() {
			if !strings.HasPrefix(u, base+"/instances/INSTANCEID") || !strings.HasSuffix(u, rq) {
				t.Errorf("managementUrls.%s %q", name, u)
			}
		}
		// The templates work as a language SDK fills them in, without any
		// other key.
		id := uniq("binding")
		start := strings.NewReplacer("{functionName}", "HelloSequence", "[/{instanceId}]", "/"+id).Replace(d.CreationURLs["createNewInstancePostUri"])
		if r := m.send(t, "POST", start, "", "Content-Type", "application/json"); r.code != http.StatusAccepted {
			t.Fatalf("POST %s: %s", start, r)
		}
		waitFor(t, m.h, id, time.Minute, "Completed")
		statusURL := strings.ReplaceAll(d.ManagementURLs.StatusQueryGetURI, "INSTANCEID", id)
		if r := m.send(t, "GET", statusURL, ""); r.code != http.StatusOK || !strings.Contains(string(r.body), `"Completed"`) {
			t.Errorf("GET %s: %s", statusURL, r)
		}
		list := strings.ReplaceAll(d.ManagementURLs.StatusQueryGetURI, "INSTANCEID", "") + "&instanceIdPrefix=" + id
		if r := m.send(t, "GET", list, ""); r.code != http.StatusOK || !strings.Contains(string(r.body), id) {
			t.Errorf("GET %s: %s", list, r)
		}
	})

	t.Run("entity routes", func(t *testing.T) {
		t.Parallel()
		key := uniq("e")
		r := m.do(t, "GET", "/entities/Counter/"+key, "")
		if r.code == http.StatusNotImplemented {
			// A host without entities says so.
			wantMessage(t, "entities not enabled", r, http.StatusNotImplemented)
			return
		}
		wantMessage(t, "read an entity never signalled", r, http.StatusNotFound)
		wantMessage(t, "signal without op", m.do(t, "POST", "/entities/Counter/"+key, "1"), http.StatusBadRequest)
		wantMessage(t, "signal with malformed JSON", m.do(t, "POST", "/entities/Counter/"+key+"?op=add", "{"), http.StatusBadRequest)
		if r := m.do(t, "POST", "/entities/Counter/"+key+"?op=add", "3"); r.code != http.StatusAccepted {
			t.Fatalf("signal: %s", r)
		}
		if r := m.do(t, "POST", "/entities/counter/"+key+"?op=add", "4"); r.code != http.StatusAccepted {
			t.Fatalf("signal with the lower-case name: %s", r)
		}
		waitEntity := func(want int) reply {
			t.Helper()
			deadline := time.Now().Add(time.Minute)
			for {
				r := m.do(t, "GET", "/entities/Counter/"+key, "")
				if r.code == want || time.Now().After(deadline) {
					return r
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		deadline := time.Now().Add(time.Minute)
		for {
			r := waitEntity(http.StatusOK)
			if string(bytes.TrimSpace(r.body)) == "7" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Counter state %s, want 7", r)
			}
			time.Sleep(100 * time.Millisecond)
		}
		r = m.do(t, "GET", "/entities/counter?fetchState=true", "")
		var items []struct {
			EntityID struct {
				Name string `json:"name"`
				Key  string `json:"key"`
			} `json:"entityId"`
			LastOperationTime string          `json:"lastOperationTime"`
			State             json.RawMessage `json:"state"`
		}
		if r.code != http.StatusOK || json.Unmarshal(r.body, &items) != nil || len(items) != 1 ||
			items[0].EntityID.Name != "counter" || items[0].EntityID.Key != key || string(items[0].State) != "7" || items[0].LastOperationTime == "" {
			t.Errorf("list entities: %s", r)
		}
		if r := m.do(t, "DELETE", "/entities/Counter/"+key, ""); r.code != http.StatusAccepted {
			t.Fatalf("delete: %s", r)
		}
		if r := waitEntity(http.StatusNotFound); r.code != http.StatusNotFound {
			t.Errorf("read after delete: %s, want 404", r)
		}
	})
}

// TestManagementAPIPurgeByFilter purges by creation time and status in a task
// hub of its own, so that the counts are exact.
func TestManagementAPIPurgeByFilter(t *testing.T) {
	t.Parallel()
	az := azurite.Shared(t)
	m := startMgmtHost(t, az)
	from := time.Now().UTC().Add(-2 * time.Second).Format(time.RFC3339)
	const n = 4
	var ids []string
	for i := range n {
		ids = append(ids, m.start(t, "Chain", fmt.Sprintf("purge-%d", i), `{"steps":1}`).ID)
	}
	running := m.start(t, "ApprovalWorkflow", "purge-running", `{"timeoutSeconds":600}`).ID
	for _, id := range ids {
		waitFor(t, m.h, id, time.Minute, "Completed")
	}
	waitFor(t, m.h, running, time.Minute, "Running")

	wantMessage(t, "purge by filter without createdTimeFrom", m.do(t, "DELETE", "/instances", ""), http.StatusBadRequest)
	wantMessage(t, "purge with a malformed time", m.do(t, "DELETE", "/instances?createdTimeFrom=monday", ""), http.StatusBadRequest)
	r := m.do(t, "DELETE", "/instances?createdTimeFrom=2020-01-01T00:00:00Z&createdTimeTo=2020-01-02T00:00:00Z", "")
	if r.code != http.StatusNotFound || string(bytes.TrimSpace(r.body)) != `{"instancesDeleted":0}` {
		t.Errorf("purge of nothing: %s, want 404 {\"instancesDeleted\":0}", r)
	}
	r = m.do(t, "DELETE", "/instances?createdTimeFrom="+from+"&runtimeStatus=Completed,Failed", "")
	if r.code != http.StatusOK || string(bytes.TrimSpace(r.body)) != fmt.Sprintf(`{"instancesDeleted":%d}`, n) {
		t.Fatalf("purge Completed: %s, want 200 {\"instancesDeleted\":%d}", r, n)
	}
	for _, id := range ids {
		if code, _ := getStatus(t, m.h, id, ""); code != http.StatusNotFound {
			t.Errorf("%s after purge: %d, want 404", id, code)
		}
	}
	if code, _ := getStatus(t, m.h, running, ""); code != http.StatusAccepted {
		t.Errorf("the running instance after a purge of Completed ones: %d, want 202", code)
	}
	m.do(t, "POST", "/instances/"+running+"/terminate", "")
	waitFor(t, m.h, running, time.Minute, "Terminated")
	r = m.do(t, "DELETE", "/instances/?createdTimeFrom="+from, "")
	if r.code != http.StatusOK || string(bytes.TrimSpace(r.body)) != `{"instancesDeleted":1}` {
		t.Errorf("purge by time: %s, want 200 {\"instancesDeleted\":1}", r)
	}
}

// TestManagementAPIAuthDisabled runs the host as `make run` does (--no-auth):
// the API takes requests without keys and its URLs carry none.
func TestManagementAPIAuthDisabled(t *testing.T) {
	t.Parallel()
	az := azurite.Shared(t)
	m := startMgmtHost(t, az, "--no-auth")
	r := m.send(t, "POST", mgmt+"/orchestrators/HelloSequence", "")
	var p payload
	if r.code != http.StatusAccepted || json.Unmarshal(r.body, &p) != nil {
		t.Fatalf("start without a key: %s", r)
	}
	for name, u := range p.urls() {
		pu, err := url.Parse(u)
		if err != nil || pu.Query().Has("code") || pu.Query().Get("taskHub") != m.hub {
			t.Errorf("%s %q: want taskHub and no code", name, u)
		}
	}
	if r := m.send(t, "GET", mgmt+"/instances/"+p.ID, ""); r.code != http.StatusOK && r.code != http.StatusAccepted {
		t.Errorf("status without a key: %s", r)
	}
	if r := m.send(t, "GET", "/api/durable/client", ""); r.code != http.StatusOK || strings.Contains(string(r.body), "code=") {
		t.Errorf("binding data without auth: %s", r)
	}
}

// TestInstancesCLI drives `host instances ...` against the task hub of a
// running host: the CLI talks to storage directly, the host runs the
// instances.
func TestInstancesCLI(t *testing.T) {
	t.Parallel()
	az := azurite.Shared(t)
	hj, _ := durableHostJSON(t)
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "host.json"), []byte(hj), 0o644); err != nil {
		t.Fatal(err)
	}
	h := hosttest.Start(t, hosttest.Options{Storage: az.ConnectionString, ScriptRoot: root})
	bin := hosttest.Binary(t)
	cli := func(args ...string) (string, error) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"instances", "--script-root", root}, args...)...)
		// GORACE: a race-enabled binary otherwise waits 1 s at exit.
		cmd.Env = append(os.Environ(), "AzureWebJobsStorage="+az.ConnectionString, "GORACE=atexit_sleep_ms=0")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := cli(args...)
		if err != nil {
			t.Fatalf("instances %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	from := time.Now().UTC().Add(-2 * time.Second).Format(time.RFC3339)
	p := fmt.Sprintf("cli%d-", time.Now().UnixNano())

	if out := must("start", "HelloSequence", "--id", p+"hello"); strings.TrimSpace(out) != p+"hello" {
		t.Fatalf("start printed %q, want the id", out)
	}
	waitFor(t, h, p+"hello", time.Minute, "Completed")
	var shown struct {
		RuntimeStatus string           `json:"runtimeStatus"`
		Output        []string         `json:"output"`
		History       []map[string]any `json:"historyEvents"`
	}
	if err := json.Unmarshal([]byte(must("show", p+"hello", "--history")), &shown); err != nil || shown.RuntimeStatus != "Completed" || len(shown.Output) != 3 || len(shown.History) == 0 {
		t.Fatalf("show --history: %+v %v", shown, err)
	}

	must("start", "ApprovalWorkflow", "--id", p+"approval", "--input", `{"timeoutSeconds":600}`)
	waitFor(t, h, p+"approval", time.Minute, "Running")
	if out := must("suspend", p+"approval", "--reason", "hold"); !strings.Contains(out, "suspend requested for "+p+"approval") {
		t.Errorf("suspend printed %q", out)
	}
	waitFor(t, h, p+"approval", time.Minute, "Suspended")
	must("resume", p+"approval", "--reason", "go")
	waitFor(t, h, p+"approval", time.Minute, "Running")
	must("raise", p+"approval", "Approval", `{"by":"cli"}`)
	if st := waitFor(t, h, p+"approval", time.Minute, "Completed"); !strings.Contains(string(st.Output), `"by":"cli"`) {
		t.Errorf("approval output %s", st.Output)
	}

	must("start", "ApprovalWorkflow", "--id", p+"term", "--input", `{"timeoutSeconds":600}`)
	waitFor(t, h, p+"term", time.Minute, "Running")
	must("terminate", p+"term", "--reason", "stop")
	if st := waitFor(t, h, p+"term", time.Minute, "Terminated"); !strings.Contains(string(st.Output), "stop") {
		t.Errorf("terminated output %s", st.Output)
	}

	must("start", "RetryDemo", "--id", p+"rewind", "--input", `{"failures":1,"maxAttempts":1}`)
	waitFor(t, h, p+"rewind", time.Minute, "Failed")
	must("rewind", p+"rewind", "--reason", "again")
	waitFor(t, h, p+"rewind", time.Minute, "Completed")

	list := must("list", "--prefix", p, "--top", "2", "--all")
	for _, id := range []string{"hello", "approval", "term", "rewind"} {
		if strings.Count(list, p+id+" ") != 1 {
			t.Errorf("list --all lacks %s once:\n%s", p+id, list)
		}
	}
	if first := must("list", "--prefix", p, "--top", "2"); !strings.Contains(first, "--all") {
		t.Errorf("a first page of 2 out of 4 does not say there is more:\n%s", first)
	}
	if term := must("list", "--prefix", p, "--status", "Terminated"); !strings.Contains(term, p+"term ") || strings.Contains(term, p+"hello ") {
		t.Errorf("list --status Terminated:\n%s", term)
	}

	if out := must("purge", p+"hello"); !strings.Contains(out, "purged 1 instance") {
		t.Errorf("purge: %q", out)
	}
	if out, err := cli("show", p+"hello"); err == nil || !strings.Contains(out, "not found") {
		t.Errorf("show after purge: %v %q, want an error saying not found", err, out)
	}
	if out := must("purge", "--from", from, "--status", "Completed,Terminated"); !strings.Contains(out, "purged 3 instances") {
		t.Errorf("purge by filter: %q", out)
	}

	for _, bad := range [][]string{
		{"start", "NoSuchOrchestrator"},
		{"start", "HelloSequence", "--id", "a#b"},
		{"start", "HelloSequence", "--input", "{"},
		{"raise", p + "term", "Approval", "not json"},
		{"raise", p + "term", "Approval", "true"},
		{"terminate", p + "nobody"},
		{"show"},
		{"purge"},
		{"list", "--status", "Sleeping"},
		{"frobnicate"},
	} {
		if out, err := cli(bad...); err == nil || strings.TrimSpace(out) == "" || strings.Contains(out, "panic") {
			t.Errorf("instances %s: %v %q, want a failure with a message", strings.Join(bad, " "), err, out)
		}
	}
}

// TestManagementAPIDerivedSystemKey runs a host with a master key and no
// system key: the URLs it hands out carry a key derived from the master key,
// not the master key, and that key opens the API.
func TestManagementAPIDerivedSystemKey(t *testing.T) {
	t.Parallel()
	az := azurite.Shared(t)
	hj, _ := durableHostJSON(t)
	m := &mgmtHost{h: hosttest.Start(t, hosttest.Options{Storage: az.ConnectionString, HostJSON: hj})}
	p := m.start(t, "HelloSequence", "", "")
	u, err := url.Parse(p.StatusQueryGetURI)
	if err != nil {
		t.Fatal(err)
	}
	if code := u.Query().Get("code"); code == "" || code == hosttest.MasterKey {
		t.Fatalf("statusQueryGetUri %q: want a code other than the master key", p.StatusQueryGetURI)
	}
	if r := m.send(t, "GET", p.StatusQueryGetURI, ""); r.code != http.StatusOK && r.code != http.StatusAccepted {
		t.Errorf("GET statusQueryGetUri: %s", r)
	}
	if r := m.send(t, "GET", "/api/durable/client?code="+u.Query().Get("code"), ""); r.code != http.StatusUnauthorized {
		t.Errorf("the management key opened an admin function: %s", r)
	}
}
