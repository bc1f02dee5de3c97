// Package hosttest runs real Stratus host processes for end-to-end tests: it
// builds the host binary once per test binary, starts it on a free loopback
// port against a given storage connection, waits until it serves, and stops
// it (SIGTERM, or SIGKILL to simulate a crash) by PID.
package hosttest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/tests/azurite"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds ./host (with the race detector when the tests use it) and
// returns the path of the binary.
func Binary(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		root, err := azurite.RepoRoot()
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("", "stratus-host-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "stratus")
		args := []string{"build", "-o", binPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, "./host")...)
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./host: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return binPath
}

// Options configure a host process.
type Options struct {
	// Storage is the AzureWebJobsStorage connection string.
	Storage string
	// ScriptRoot holds host.json (and optionally local.settings.json); a
	// temporary root with a default host.json is made when empty.
	ScriptRoot string
	// HostJSON, when set, is written as host.json into a fresh script root.
	HostJSON string
	// Env adds environment variables ("K=V").
	Env []string
	// Args adds command-line flags.
	Args []string
	// Port is the port to use; a free one when zero.
	Port int
	// Implicit runs the host in the script root without --port and
	// --script-root, so that it must find both on its own (the working
	// directory; Host.LocalHttpPort from local.settings.json, which Port
	// must then name).
	Implicit bool
	// NoMasterKey leaves FUNCTIONS_MASTER_KEY unset.
	NoMasterKey bool
}

// Process is a running host.
type Process struct {
	// URL is the base URL ("http://127.0.0.1:PORT").
	URL string
	// Port is the HTTP port.
	Port int

	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{}
	err  error
}

// DefaultHostJSON is the host.json tests use when none is given: short
// polling intervals so that tests do not wait on back-off.
const DefaultHostJSON = `{
  "version": "2.0",
  "functionTimeout": "00:02:00",
  "extensions": {
    "queues": {"maxPollingInterval": "00:00:00.5", "maxDequeueCount": 5},
    "durableTask": {"hubName": "TestHub", "storageProvider": {"maxQueuePollingInterval": "00:00:01"}}
  }
}`

// Start starts a host process and waits until GET /admin/host/status answers.
// The process is killed when tb ends.
func Start(tb testing.TB, o Options) *Process {
	tb.Helper()
	p, err := Launch(Binary(tb), o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		p.Kill()
		if tb.Failed() {
			tb.Logf("host log (port %d):\n%s", p.Port, p.Logs())
		}
	})
	return p
}

// Launch starts a host process from bin; the caller must stop it.
func Launch(bin string, o Options) (*Process, error) {
	root := o.ScriptRoot
	if root == "" {
		dir, err := os.MkdirTemp("", "stratus-root-")
		if err != nil {
			return nil, err
		}
		hj := o.HostJSON
		if hj == "" {
			hj = DefaultHostJSON
		}
		if err := os.WriteFile(filepath.Join(dir, "host.json"), []byte(hj), 0o644); err != nil {
			return nil, err
		}
		root = dir
	}
	port := o.Port
	if port == 0 {
		ports, err := azurite.FreePorts(1)
		if err != nil {
			return nil, err
		}
		port = ports[0]
	}
	args := []string{"--port", strconv.Itoa(port), "--script-root", root, "--log-format", "json"}
	if o.Implicit {
		args = []string{"--log-format", "json"}
	}
	cmd := exec.Command(bin, append(args, o.Args...)...)
	if o.Implicit {
		cmd.Dir = root
	}
	cmd.Env = append(os.Environ(), "AzureWebJobsStorage="+o.Storage)
	if !o.NoMasterKey {
		cmd.Env = append(cmd.Env, "FUNCTIONS_MASTER_KEY="+MasterKey)
	}
	cmd.Env = append(cmd.Env, o.Env...)
	logs := &syncBuffer{}
	cmd.Stdout = logs
	cmd.Stderr = logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start host: %w", err)
	}
	p := &Process{URL: fmt.Sprintf("http://127.0.0.1:%d", port), Port: port, cmd: cmd, logs: logs, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		req, _ := http.NewRequest("GET", p.URL+"/admin/host/status", nil)
		req.Header.Set("x-functions-key", MasterKey)
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return p, nil
			}
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("host exited at start-up (%v):\n%s", p.err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			p.Kill()
			return nil, fmt.Errorf("host did not serve within 60s:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// MasterKey is the master key test hosts run with.
const MasterKey = "test-master-key"

// Logs returns everything the process printed so far.
func (p *Process) Logs() string { return p.logs.String() }

// Stop sends SIGTERM and waits for a graceful exit (at most 60 s, then SIGKILL).
// It returns the process's exit error.
func (p *Process) Stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(60 * time.Second):
		p.Kill()
	}
	return p.err
}

// Kill sends SIGKILL (a crash) and waits for the process to end.
func (p *Process) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Do sends a request with the master key and returns status and body.
func (p *Process) Do(ctx context.Context, method, path string, body []byte) (int, []byte, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, method, p.URL+path, bytes.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("x-functions-key", MasterKey)
	if len(body) > 0 {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, b, res.Header, err
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var _ io.Writer = (*syncBuffer)(nil)
