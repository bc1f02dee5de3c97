package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/tests/azurite"
	"github.com/stratus-dev/stratus/tests/hosttest"
)

var (
	dfclientOnce sync.Once
	dfclientErr  error
)

// dfclientDir returns tests/dfclient with its pinned packages installed
// (npm ci on first use when node_modules is missing; no network after that).
func dfclientDir(t *testing.T) string {
	t.Helper()
	root, err := azurite.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "tests", "dfclient")
	dfclientOnce.Do(func() {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", "durable-functions", "package.json")); err == nil {
			return
		}
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			dfclientErr = fmt.Errorf("npm ci in %s: %v\n%s", dir, err, out)
		}
	})
	if dfclientErr != nil {
		t.Fatal(dfclientErr)
	}
	return dir
}

// scenarioResult is what tests/dfclient/scenario.js reports.
type scenarioResult struct {
	Hello struct {
		ID            string          `json:"id"`
		WaitStatus    int             `json:"waitStatus"`
		WaitBody      json.RawMessage `json:"waitBody"`
		RuntimeStatus string          `json:"runtimeStatus"`
		Output        json.RawMessage `json:"output"`
	} `json:"hello"`
	Payload     map[string]string `json:"payload"`
	CheckStatus struct {
		Status   int    `json:"status"`
		Location string `json:"location"`
	} `json:"checkStatus"`
	Approval struct {
		RuntimeStatus string `json:"runtimeStatus"`
		Output        struct {
			Approval struct {
				By string `json:"by"`
			} `json:"approval"`
			TimedOut bool `json:"timedOut"`
		} `json:"output"`
	} `json:"approval"`
	Control struct {
		Suspended, Resumed, Terminated string
		Output                         json.RawMessage `json:"output"`
	} `json:"control"`
	ControlID string `json:"controlId"`
	Rewind    struct {
		Before, After string
		Output        struct {
			Attempts int `json:"attempts"`
		} `json:"output"`
	} `json:"rewind"`
	List struct {
		Completed             int      `json:"completed"`
		CompletedPages        int      `json:"completedPages"`
		Distinct              int      `json:"distinct"`
		All                   int      `json:"all"`
		AllStatuses           []string `json:"allStatuses"`
		TerminatedOrSuspended []string `json:"terminatedOrSuspended"`
		Failed                int      `json:"failed"`
		CreatedBefore         int      `json:"createdBefore"`
	} `json:"list"`
	Purge struct {
		One       int      `json:"one"`
		HelloGone bool     `json:"helloGone"`
		Again     int      `json:"again"`
		ByFilter  int      `json:"byFilter"`
		Left      []string `json:"left"`
	} `json:"purge"`
	Entity *struct {
		Exists bool            `json:"exists"`
		State  json.RawMessage `json:"state"`
	} `json:"entity"`
}

// TestDurableFunctionsJSClient points the official Durable Functions
// JavaScript client (durable-functions, pinned in tests/dfclient) at a host
// and runs a full scenario through it: start HelloSequence and wait for it,
// start ApprovalWorkflow and raise Approval, suspend/resume/terminate,
// rewind, list with filters across pages, purge one and by filter, signal an
// entity and read its state. The client
// is built by df.getClient from the host's durableClient binding data and is
// not adapted in any way.
func TestDurableFunctionsJSClient(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node is needed to run the Durable Functions JavaScript client: %v", err)
	}
	dir := dfclientDir(t)
	az := azurite.Shared(t)
	m := startMgmtHost(t, az)

	r := m.send(t, "GET", "/api/durable/client", "", "x-functions-key", hosttest.MasterKey)
	if r.code != http.StatusOK {
		t.Fatalf("binding data: %s", r)
	}
	bindingFile := filepath.Join(t.TempDir(), "binding-data.json")
	if err := os.WriteFile(bindingFile, r.body, 0o600); err != nil {
		t.Fatal(err)
	}
	// The entity steps signal add 5 to the Counter sample and read 5 back.
	args := []string{"scenario.js", bindingFile, "--entity", "Counter", "df-client", "add", "5", "5"}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "node", args...)
	cmd.Dir = dir
	// As in Azure, WEBSITE_HOSTNAME names the host the client talks to.
	cmd.Env = append(os.Environ(), fmt.Sprintf("WEBSITE_HOSTNAME=127.0.0.1:%d", m.h.Port))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("node scenario.js: %v\nstderr:\n%s\nstdout:\n%s\nhost log tail:\n%s", err, stderr.String(), stdout.String(), tail(m.h.Logs(), 30))
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var res scenarioResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("scenario result %q: %v", lines[len(lines)-1], err)
	}

	greetings := `["Hello Tokyo!","Hello Seattle!","Hello London!"]`
	if res.Hello.WaitStatus != http.StatusOK || string(res.Hello.WaitBody) != greetings || res.Hello.RuntimeStatus != "Completed" || string(res.Hello.Output) != greetings {
		t.Errorf("HelloSequence: waited %d %s, status %s %s", res.Hello.WaitStatus, res.Hello.WaitBody, res.Hello.RuntimeStatus, res.Hello.Output)
	}
	base := m.h.URL + mgmt + "/instances/" + res.Hello.ID
	for name, u := range res.Payload {
		if name != "id" && (!strings.HasPrefix(u, base) || !strings.Contains(u, "code="+testSystemKey) || !strings.Contains(u, "taskHub="+m.hub)) {
			t.Errorf("client-built %s %q does not address the host with the system key", name, u)
		}
	}
	if res.CheckStatus.Status != http.StatusAccepted || !strings.HasPrefix(res.CheckStatus.Location, base) {
		t.Errorf("client check-status response: %+v", res.CheckStatus)
	}
	if res.Approval.RuntimeStatus != "Completed" || res.Approval.Output.Approval.By != "df-client" || res.Approval.Output.TimedOut {
		t.Errorf("ApprovalWorkflow: %+v", res.Approval)
	}
	if res.Control.Suspended != "Suspended" || res.Control.Resumed != "Running" || res.Control.Terminated != "Terminated" || !strings.Contains(string(res.Control.Output), "done") {
		t.Errorf("suspend/resume/terminate: %+v %s", res.Control, res.Control.Output)
	}
	if res.Rewind.Before != "Failed" || res.Rewind.After != "Completed" || res.Rewind.Output.Attempts != 2 {
		t.Errorf("rewind: %+v", res.Rewind)
	}
	// 105 Chain instances + HelloSequence + ApprovalWorkflow + RetryDemo
	// completed; the control instance is Terminated.
	l := res.List
	if l.CompletedPages != 105 || l.Completed != 108 || l.Distinct != l.Completed || l.All != 109 || l.Failed != 0 || l.CreatedBefore != 0 {
		t.Errorf("listing across pages: %+v", l)
	}
	if !slices.Equal(l.TerminatedOrSuspended, []string{res.ControlID}) || !slices.Equal(l.AllStatuses, []string{"Completed", "Terminated"}) {
		t.Errorf("listing by status: %+v (control instance %s)", l, res.ControlID)
	}
	p := res.Purge
	if p.One != 1 || !p.HelloGone || p.Again != 0 || p.ByFilter != 107 || !slices.Equal(p.Left, []string{res.ControlID}) {
		t.Errorf("purge: %+v", p)
	}
	if res.Entity == nil || !res.Entity.Exists || string(res.Entity.State) != "5" {
		t.Errorf("entity Counter@df-client: %+v", res.Entity)
	}
}
