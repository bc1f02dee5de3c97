// Package tests holds end-to-end tests: real host processes built from ./host,
// a real Azurite, real HTTP.
package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/tests/azurite"
	"github.com/stratus-dev/stratus/tests/hosttest"
)

func TestHostServesHelloAndRejects(t *testing.T) {
	t.Parallel()
	az := azurite.Shared(t)
	h := hosttest.Start(t, hosttest.Options{Storage: az.ConnectionString})
	ctx := context.Background()

	cases := []struct {
		name, method, path, key string
		status                  int
		contains                string
	}{
		{"hello", "GET", "/api/hello?name=Ada", "", 200, "Ada"},
		{"hello post json", "POST", "/api/hello", "", 200, "Grace"},
		{"unknown route", "GET", "/api/no-such-function", "", 404, "no function"},
		{"wrong method", "DELETE", "/api/hello", "", 405, ""},
		{"admin without key", "GET", "/admin/host/status", "-", 401, "master key"},
		{"admin with bad key", "GET", "/admin/functions?code=wrong", "-", 401, ""},
		{"admin status", "GET", "/admin/host/status", "", 200, `"state": "Running"`},
		{"admin functions", "GET", "/admin/functions", "", 200, `"HttpHello"`},
		{"manual run of http function", "POST", "/admin/functions/HttpHello", "", 400, "HTTP-triggered"},
		{"manual run of unknown function", "POST", "/admin/functions/Nope", "", 404, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body *strings.Reader
			if tc.method == "POST" && strings.HasPrefix(tc.path, "/api/") {
				body = strings.NewReader(`{"name":"Grace"}`)
			} else {
				body = strings.NewReader("")
			}
			req, _ := http.NewRequestWithContext(ctx, tc.method, h.URL+tc.path, body)
			if tc.key != "-" {
				req.Header.Set("x-functions-key", hosttest.MasterKey)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var b bytes.Buffer
			_, _ = b.ReadFrom(res.Body)
			if res.StatusCode != tc.status || !strings.Contains(b.String(), tc.contains) {
				t.Fatalf("%s %s = %d %q; want %d containing %q", tc.method, tc.path, res.StatusCode, b.String(), tc.status, tc.contains)
			}
		})
	}

	// Every invocation logs its function and invocation id as JSON fields.
	var sawInvocation bool
	for _, line := range strings.Split(h.Logs(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		if rec["function"] == "HttpHello" && rec["invocation_id"] != nil {
			sawInvocation = true
		}
	}
	if !sawInvocation {
		t.Errorf("no JSON log record with function and invocation_id:\n%s", h.Logs())
	}

	// SIGTERM shuts the host down cleanly (exit 0).
	if err := h.Stop(); err != nil {
		t.Fatalf("graceful stop: %v\n%s", err, h.Logs())
	}
}

func TestHostPortAndStorageFromFlagsAndEnv(t *testing.T) {
	t.Parallel()
	az := azurite.Shared(t)
	ports, err := azurite.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	h := hosttest.Start(t, hosttest.Options{Storage: az.ConnectionString, Port: ports[0]})
	if !strings.HasSuffix(h.URL, ":"+itoa(ports[0])) {
		t.Fatalf("host URL %s, want port %d", h.URL, ports[0])
	}
	status, body, _, err := h.Do(context.Background(), "GET", "/api/hello?name=Port", nil)
	if err != nil || status != 200 || !strings.Contains(string(body), "Port") {
		t.Fatalf("hello on --port: %d %s %v", status, body, err)
	}
}

func TestBrokenHostJSONGivesOneClearLine(t *testing.T) {
	t.Parallel()
	bin := hosttest.Binary(t)
	cases := []struct {
		name, hostJSON string
		want           []string
	}{
		{"malformed", "{\"version\": \"2.0\",,}", []string{"host.json", "malformed JSON at line 1"}},
		{"wrong type", `{"version": "2.0", "functionTimeout": true}`, []string{"host.json", "functionTimeout"}},
		{"bad version", `{"version": "3"}`, []string{"host.json", "version"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			if err := os.WriteFile(filepath.Join(root, "host.json"), []byte(tc.hostJSON), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, "--script-root", root, "--port", "0").CombinedOutput()
			if err == nil {
				t.Fatalf("host started with a broken host.json:\n%s", out)
			}
			msg := strings.TrimSpace(string(out))
			if strings.Count(msg, "\n") != 0 || strings.Contains(msg, "goroutine") {
				t.Fatalf("want one line, got:\n%s", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
		})
	}
}

func TestHelpDocumentsFlags(t *testing.T) {
	t.Parallel()
	out, _ := exec.Command(hosttest.Binary(t), "--help").CombinedOutput()
	for _, flag := range []string{"-port", "-script-root", "-log-format", "-no-auth"} {
		if !strings.Contains(string(out), flag) {
			t.Errorf("--help lacks %s:\n%s", flag, out)
		}
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }
