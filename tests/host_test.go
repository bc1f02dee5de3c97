// Package tests holds end-to-end tests: real host processes built from ./host,
// a real Azurite, real HTTP.
package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/functions/hello"
	"github.com/stratus-dev/stratus/tests/azurite"
	"github.com/stratus-dev/stratus/tests/hosttest"
)

func TestHostServesHelloAndRejects(t *testing.T) {
	t.Parallel()
	az := azurite.Shared(t)
	h := hosttest.Start(t, hosttest.Options{Storage: az.ConnectionString,
		Env: []string{"FUNCTIONS_KEYS_HttpEcho=echo-key", "FUNCTIONS_HOST_KEYS=host-key-1,host-key-2"}})
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

	// HttpEcho is key-protected (authLevel function) and shows what reaches
	// the handler: route value, query, headers and body.
	keyCases := []struct {
		name, query, header string
		status              int
	}{
		{"no key", "", "", 401},
		{"wrong key", "?code=nope", "", 401},
		{"function key in query", "?code=echo-key", "", 200},
		{"host key in header", "", "host-key-2", 200},
		{"master key", "?code=" + hosttest.MasterKey, "", 200},
		{"header wins over query", "?code=echo-key", "wrong", 401},
	}
	for _, tc := range keyCases {
		t.Run("HttpEcho "+tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(ctx, "PUT", h.URL+"/api/echo/a/b%20c.txt"+tc.query, strings.NewReader("payload"))
			sep := "&"
			if tc.query == "" {
				sep = "?"
			}
			req.URL.RawQuery = strings.TrimPrefix(tc.query+sep+"x=1&x=2", "?")
			if tc.header != "" {
				req.Header.Set("x-functions-key", tc.header)
			}
			req.Header.Set("X-Custom", "custom value")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			var got hello.Echo
			b, _ := io.ReadAll(res.Body)
			if res.StatusCode != tc.status {
				t.Fatalf("status %d %s, want %d", res.StatusCode, b, tc.status)
			}
			if tc.status != 200 {
				return
			}
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatal(err)
			}
			if got.Method != "PUT" || got.Path != "a/b c.txt" || fmt.Sprint(got.Query["x"]) != "[1 2]" ||
				fmt.Sprint(got.Headers["X-Custom"]) != "[custom value]" || got.Body != "payload" || res.Header.Get("X-Echo-Method") != "PUT" {
				t.Fatalf("echo = %+v (headers %v)", got, res.Header)
			}
			if _, ok := got.Query["code"]; ok {
				t.Fatalf("the key reached the handler's query: %+v", got.Query)
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
	out, err := exec.Command(hosttest.Binary(t), "--help").CombinedOutput()
	if err != nil {
		t.Errorf("--help: %v (want exit status 0)", err)
	}
	for _, flag := range []string{"-port", "-script-root", "-log-format", "-no-auth", "Host.LocalHttpPort", "current directory"} {
		if !strings.Contains(string(out), flag) {
			t.Errorf("--help lacks %s:\n%s", flag, out)
		}
	}
}

// startupFailure runs the host binary in root with env (and nothing from the
// test process's environment but PATH and HOME) and returns what it printed;
// it fails t unless the host exits non-zero.
func startupFailure(t *testing.T, root string, env ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, hosttest.Binary(t), "--script-root", root, "--port", "0")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 {
		t.Fatalf("host did not fail at start-up (%v):\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestStartupProblemsGiveOneClearLine(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		files  map[string]string
		env    []string
		want   []string
		unwant []string
	}{
		{
			name:  "several bad fields in host.json",
			files: map[string]string{"host.json": `{"version": "1.0", "functionTimeout": "00:00:00", "extensions": {"queues": {"batchSize": 64}}}`},
			want:  []string{"host.json", "field version", "field functionTimeout", "field extensions.queues.batchSize"},
		},
		{
			name:  "malformed local.settings.json",
			files: map[string]string{"host.json": `{"version": "2.0"}`, "local.settings.json": `{"Values": {"A": "b",}}`},
			want:  []string{"local.settings.json", "malformed JSON at line 1"},
		},
		{
			name:  "wrong type in local.settings.json",
			files: map[string]string{"host.json": `{"version": "2.0"}`, "local.settings.json": `{"Host": {"LocalHttpPort": "7071"}}`},
			want:  []string{"local.settings.json", "Host.LocalHttpPort", "number"},
		},
		{
			// Every storage sample needs AzureWebJobsStorage: one message
			// names the setting, the file to set it in and the functions.
			name:   "storage setting referenced but not set",
			files:  map[string]string{"host.json": `{"version": "2.0"}`, "local.settings.json": `{"IsEncrypted": false, "Values": {}}`},
			want:   []string{`app setting "AzureWebJobsStorage" is referenced but not set`, "local.settings.json", "QueueEcho", "BlobToUpper", "Heartbeat"},
			unwant: []string{"panic", "goroutine"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			root := t.TempDir()
			for name, body := range tc.files {
				if err := os.WriteFile(filepath.Join(root, name), []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			msg := startupFailure(t, root, tc.env...)
			if strings.Contains(msg, "\n") {
				t.Fatalf("want one line, got:\n%s", msg)
			}
			if strings.Count(msg, `"AzureWebJobsStorage" is referenced`) > 1 {
				t.Errorf("the missing setting is reported more than once: %s", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message %q lacks %q", msg, w)
				}
			}
			for _, w := range tc.unwant {
				if strings.Contains(msg, w) {
					t.Errorf("message %q contains %q", msg, w)
				}
			}
		})
	}
}

// Without --script-root and --port the host reads the current directory and
// serves on Host.LocalHttpPort from its local.settings.json; Values supply
// settings the environment does not set.
func TestDefaultsFromWorkingDirectoryAndLocalSettings(t *testing.T) {
	t.Parallel()
	az := azurite.Shared(t)
	ports, err := azurite.FreePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	local := fmt.Sprintf(`{"IsEncrypted": false, "Values": {"FUNCTIONS_KEYS_HttpEcho": "from-values"}, "Host": {"LocalHttpPort": %d}}`, ports[0])
	for name, body := range map[string]string{"host.json": hosttest.DefaultHostJSON, "local.settings.json": local} {
		if err := os.WriteFile(filepath.Join(root, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	h := hosttest.Start(t, hosttest.Options{Storage: az.ConnectionString, ScriptRoot: root, Port: ports[0], Implicit: true})
	res, err := http.Get(h.URL + "/api/echo/x?code=from-values")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("GET /api/echo/x with the key from local.settings.json Values: %d, want 200", res.StatusCode)
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }
