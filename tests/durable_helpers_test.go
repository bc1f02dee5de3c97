package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/tests/hosttest"
)

// status is the Durable Functions status object.
type status struct {
	Name          string           `json:"name"`
	InstanceID    string           `json:"instanceId"`
	RuntimeStatus string           `json:"runtimeStatus"`
	Input         json.RawMessage  `json:"input"`
	Output        json.RawMessage  `json:"output"`
	CustomStatus  json.RawMessage  `json:"customStatus"`
	CreatedTime   string           `json:"createdTime"`
	History       []map[string]any `json:"historyEvents"`
}

// checkStatus is the 202 body of a start.
type checkStatus struct {
	ID                string `json:"id"`
	StatusQueryGetURI string `json:"statusQueryGetUri"`
	SendEventPostURI  string `json:"sendEventPostUri"`
	TerminatePostURI  string `json:"terminatePostUri"`
}

const mgmt = "/runtime/webhooks/durabletask"

// startOrchestration starts name through the HTTP starter and returns the id.
func startOrchestration(t *testing.T, h *hosttest.Process, name, id string, input any) string {
	t.Helper()
	var body []byte
	if input != nil {
		var err error
		if body, err = json.Marshal(input); err != nil {
			t.Fatal(err)
		}
	}
	path := "/api/orchestrators/" + name
	if id != "" {
		path += "/" + id
	}
	code, b, hdr, err := h.Do(context.Background(), "POST", path, body)
	if err != nil || code != http.StatusAccepted {
		t.Fatalf("start %s: %d %s %v", name, code, b, err)
	}
	var cs checkStatus
	if err := json.Unmarshal(b, &cs); err != nil || cs.ID == "" || hdr.Get("Location") == "" {
		t.Fatalf("start %s: bad check-status payload %s (%v), Location %q", name, b, err, hdr.Get("Location"))
	}
	return cs.ID
}

// getStatus reads an instance's status through the management API.
func getStatus(t *testing.T, h *hosttest.Process, id, query string) (int, status) {
	t.Helper()
	code, b, _, err := h.Do(context.Background(), "GET", mgmt+"/instances/"+id+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	var st status
	if code == 200 || code == 202 || code == 500 {
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatalf("status %s: %s: %v", id, b, err)
		}
	}
	return code, st
}

// waitFor polls until the instance reaches one of the statuses.
func waitFor(t *testing.T, h *hosttest.Process, id string, timeout time.Duration, want ...string) status {
	t.Helper()
	deadline := time.Now().Add(timeout)
	delay := 20 * time.Millisecond
	var last status
	for time.Now().Before(deadline) {
		_, last = getStatus(t, h, id, "")
		for _, w := range want {
			if last.RuntimeStatus == w {
				return last
			}
		}
		time.Sleep(delay)
		delay = min(delay*2, 500*time.Millisecond)
	}
	_, full := getStatus(t, h, id, "?showHistory=true&showHistoryOutput=true")
	hist, _ := json.Marshal(full.History)
	t.Fatalf("instance %s is %q after %v, want one of %v\ncustom status: %s\nhistory: %s\nhost log tail:\n%s", id, last.RuntimeStatus, timeout, want, last.CustomStatus, hist, tail(h.Logs(), 40))
	return last
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func mustJSON(t *testing.T, raw json.RawMessage, v any) {
	t.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("decode %s: %v", raw, err)
	}
}

func post(t *testing.T, h *hosttest.Process, path string, body []byte) (int, string) {
	t.Helper()
	code, b, _, err := h.Do(context.Background(), "POST", path, body)
	if err != nil {
		t.Fatal(err)
	}
	return code, string(b)
}

var _ = fmt.Sprintf
