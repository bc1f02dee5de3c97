package httpapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
)

// fakeClient is an in-memory double for the routing and status-code logic;
// the end-to-end tests in tests/ run the same routes against the real engine.
type fakeClient struct {
	mu     sync.Mutex
	insts  map[string]*backend.InstanceState
	events []string
}

func (f *fakeClient) ScheduleNew(_ context.Context, name, input, id string, _ time.Time) (string, error) {
	if name != "Hello" {
		return "", ErrUnknownOrchestrator
	}
	if id == "" {
		id = "generated"
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.insts[id] = &backend.InstanceState{InstanceID: id, Name: name, Input: input, RuntimeStatus: history.StatusPending, CreatedTime: time.Unix(0, 0)}
	return id, nil
}

func (f *fakeClient) GetInstance(_ context.Context, id string, _ bool) (*backend.InstanceState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if st, ok := f.insts[id]; ok {
		c := *st
		return &c, nil
	}
	return nil, backend.ErrInstanceNotFound
}

func (f *fakeClient) GetHistory(context.Context, string) ([]*history.Event, error) {
	return []*history.Event{
		{EventType: history.ExecutionStarted, Name: "Hello", EventID: -1},
		{EventType: history.TaskScheduled, Name: "SayHello", EventID: 0},
		{EventType: history.TaskCompleted, TaskScheduledID: 0, Result: `"Hello Tokyo!"`, EventID: -1},
	}, nil
}

func (f *fakeClient) Query(_ context.Context, q backend.InstanceQuery) (*backend.InstancePage, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*backend.InstanceState
	for _, st := range f.insts {
		out = append(out, st)
	}
	return &backend.InstancePage{Instances: out, ContinuationToken: q.ContinuationToken + "x"}, nil
}

func (f *fakeClient) record(op, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, op+":"+id)
	return nil
}
func (f *fakeClient) RaiseEvent(_ context.Context, id, name, data string) error {
	return f.record("raise "+name+" "+data, id)
}
func (f *fakeClient) Terminate(_ context.Context, id, r string) error {
	return f.record("terminate "+r, id)
}
func (f *fakeClient) Suspend(_ context.Context, id, r string) error { return f.record("suspend", id) }
func (f *fakeClient) Resume(_ context.Context, id, r string) error  { return f.record("resume", id) }
func (f *fakeClient) Rewind(_ context.Context, id, r string) error  { return f.record("rewind", id) }
func (f *fakeClient) Purge(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.insts[id]; !ok {
		return backend.ErrInstanceNotFound
	}
	delete(f.insts, id)
	return nil
}
func (f *fakeClient) PurgeBy(context.Context, backend.PurgeFilter) (int, error) { return 0, nil }

func TestRoutesAndStatusCodes(t *testing.T) {
	t.Parallel()
	fc := &fakeClient{insts: map[string]*backend.InstanceState{
		"done":   {InstanceID: "done", Name: "Hello", RuntimeStatus: history.StatusCompleted, Output: `["a"]`},
		"failed": {InstanceID: "failed", Name: "Hello", RuntimeStatus: history.StatusFailed},
		"run":    {InstanceID: "run", Name: "Hello", RuntimeStatus: history.StatusRunning, CustomStatus: `{"p":1}`},
	}}
	api := &API{Client: fc, HubName: "Hub", Key: "sys", Authorize: func(r *http.Request) bool { return r.URL.Query().Get("code") != "bad" }}
	mux := http.NewServeMux()
	api.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	base := srv.URL + BasePath
	cases := []struct {
		name, method, path, body, ctype string
		status                          int
		contains                        string
	}{
		{"start", "POST", "/orchestrators/Hello/abc", `{"x":1}`, "application/json", 202, `"statusQueryGetUri":"http://127.0.0.1`},
		{"start payload query", "POST", "/orchestrators/Hello", "", "", 202, "taskHub=Hub\\u0026connection=Storage\\u0026code=sys"},
		{"start unknown fn", "POST", "/orchestrators/Nope", "", "", 400, "no orchestrator"},
		{"start bad json", "POST", "/orchestrators/Hello", "{", "application/json", 400, "not valid JSON"},
		{"start bad id", "POST", "/orchestrators/Hello/a%23b", "", "", 400, "not allowed"},
		{"status completed", "GET", "/instances/done", "", "", 200, `"output":["a"]`},
		{"status running", "GET", "/instances/run", "", "", 202, `"customStatus":{"p":1}`},
		{"status failed", "GET", "/instances/failed", "", "", 200, `"Failed"`},
		{"status failed 500", "GET", "/instances/failed?returnInternalServerErrorOnFailure=true", "", "", 500, `"Failed"`},
		{"status unknown", "GET", "/instances/nope", "", "", 404, ""},
		{"status history", "GET", "/instances/done?showHistory=true&showHistoryOutput=true", "", "", 200, `"FunctionName":"SayHello"`},
		{"list", "GET", "/instances?runtimeStatus=Running,Completed&top=10", "", "", 200, `"instanceId"`},
		{"list bad status", "GET", "/instances?runtimeStatus=Sleeping", "", "", 400, "Sleeping"},
		{"list bad time", "GET", "/instances?createdTimeFrom=yesterday", "", "", 400, "ISO-8601"},
		{"raise", "POST", "/instances/run/raiseEvent/Approval", `true`, "application/json", 202, ""},
		{"raise wrong content type", "POST", "/instances/run/raiseEvent/Approval", `true`, "text/plain", 400, "application/json"},
		{"raise without content type", "POST", "/instances/run/raiseEvent/Approval", `true`, "", 400, "application/json"},
		{"raise json with charset", "POST", "/instances/run/raiseEvent/Approval", `true`, "application/json; charset=utf-8", 202, ""},
		{"other task hub", "GET", "/instances/done?taskHub=Elsewhere", "", "", 400, "serves task hub Hub"},
		{"own task hub any case", "GET", "/instances/done?taskHub=hub", "", "", 200, ""},
		{"list top over the cap", "GET", "/instances?top=5000", "", "", 200, ""},
		{"list top negative", "GET", "/instances?top=-1", "", "", 400, "top"},
		{"raise on completed", "POST", "/instances/done/raiseEvent/Approval", `true`, "application/json", 410, ""},
		{"raise unknown", "POST", "/instances/nope/raiseEvent/Approval", `true`, "application/json", 404, ""},
		{"terminate completed", "POST", "/instances/done/terminate?reason=x", "", "", 410, ""},
		{"terminate running", "POST", "/instances/run/terminate?reason=stop", "", "", 202, ""},
		{"suspend", "POST", "/instances/run/suspend", "", "", 202, ""},
		{"rewind running is 400", "POST", "/instances/run/rewind", "", "", 400, "only Failed"},
		{"rewind failed", "POST", "/instances/failed/rewind", "", "", 202, ""},
		{"restart unknown", "POST", "/instances/nope/restart", "", "", 400, ""},
		{"purge by filter needs from", "DELETE", "/instances", "", "", 400, "createdTimeFrom"},
		{"purge by filter none", "DELETE", "/instances?createdTimeFrom=2020-01-01T00:00:00Z", "", "", 404, `"instancesDeleted":0`},
		{"purge one", "DELETE", "/instances/failed", "", "", 200, `"instancesDeleted":1`},
		{"purge missing", "DELETE", "/instances/failed", "", "", 404, ""},
		{"entities off", "GET", "/entities/counter/c1", "", "", 501, "not enabled"},
		{"bad key", "GET", "/instances/done?code=bad", "", "", 401, "system key"},
		{"unknown route", "GET", "/nothing", "", "", 404, ""},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader(tc.body))
		if tc.ctype != "" {
			req.Header.Set("Content-Type", tc.ctype)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.status || !strings.Contains(string(b), tc.contains) {
			t.Errorf("%s: %s %s = %d %s; want %d containing %q", tc.name, tc.method, tc.path, res.StatusCode, b, tc.status, tc.contains)
		}
		if tc.name == "start" && (res.Header.Get("Location") == "" || res.Header.Get("Retry-After") == "") {
			t.Errorf("start: Location/Retry-After missing: %v", res.Header)
		}
	}
	if got := strings.Join(fc.events, ","); !strings.Contains(got, "raise Approval true:run") || !strings.Contains(got, "terminate stop:run") {
		t.Errorf("client calls = %s", got)
	}
}

func TestClientBindingData(t *testing.T) {
	t.Parallel()
	api := &API{HubName: "Hub", Key: "k"}
	d := api.ClientBindingData("http://localhost:7071" + BasePath)
	b, _ := json.Marshal(d)
	for _, want := range []string{`"taskHubName":"Hub"`, `"createNewInstancePostUri"`, `"requiredQueryStringParameters":"taskHub=Hub\u0026connection=Storage\u0026code=k"`, `instances/INSTANCEID/raiseEvent/{eventName}`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("binding data lacks %s: %s", want, b)
		}
	}
}
