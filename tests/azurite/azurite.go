// Package azurite starts and stops the pinned Azurite (from the repository's
// Azurite/ folder) for tests and benchmarks: in memory, telemetry off, on free
// loopback ports, stopped by PID when the test ends.
package azurite

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/host/config"
)

// EnvVar names the environment variable through which `make test` hands a
// running Azurite's connection string to every test package.
const EnvVar = "STRATUS_TEST_STORAGE"

// Instance is a running Azurite.
type Instance struct {
	// ConnectionString is a full connection string for the dev account on
	// this instance's ports.
	ConnectionString string
	// Account is the parsed account.
	Account config.StorageAccount

	cmd    *exec.Cmd
	stderr *bytes.Buffer
	dir    string
	exited chan struct{}
	once   sync.Once
}

// Start launches a fresh in-memory Azurite and stops it when tb ends.
func Start(tb testing.TB) *Instance {
	tb.Helper()
	inst, err := Launch()
	if err != nil {
		tb.Fatalf("azurite: %v", err)
	}
	tb.Cleanup(inst.Stop)
	return inst
}

// Shared returns the Azurite named by STRATUS_TEST_STORAGE when set (as under
// `make test`), else starts a fresh one for tb.
func Shared(tb testing.TB) *Instance {
	tb.Helper()
	if cs := os.Getenv(EnvVar); cs != "" {
		acct, err := config.ParseStorageConnectionString(cs)
		if err != nil {
			tb.Fatalf("azurite: %s: %v", EnvVar, err)
		}
		return &Instance{ConnectionString: cs, Account: acct}
	}
	return Start(tb)
}

// Launch starts a fresh in-memory Azurite; the caller must Stop it.
func Launch() (*Instance, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	ports, err := FreePorts(3)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "azurite-")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin,
		"--silent", "--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck", "--loose",
		"--blobHost", "127.0.0.1", "--blobPort", strconv.Itoa(ports[0]),
		"--queueHost", "127.0.0.1", "--queuePort", strconv.Itoa(ports[1]),
		"--tableHost", "127.0.0.1", "--tablePort", strconv.Itoa(ports[2]),
	)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	acct := config.StorageAccount{
		Name:     config.DevAccountName,
		Key:      config.DevAccountKey,
		BlobURL:  fmt.Sprintf("http://127.0.0.1:%d/%s", ports[0], config.DevAccountName),
		QueueURL: fmt.Sprintf("http://127.0.0.1:%d/%s", ports[1], config.DevAccountName),
		TableURL: fmt.Sprintf("http://127.0.0.1:%d/%s", ports[2], config.DevAccountName),
	}
	inst := &Instance{ConnectionString: acct.ConnectionString(), Account: acct, cmd: cmd, stderr: &stderr, dir: dir}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	inst.exited = exited
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range ports {
		for {
			c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p), 200*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-exited:
				return nil, fmt.Errorf("azurite exited at start-up: %s", stderr.String())
			default:
			}
			if time.Now().After(deadline) {
				inst.Stop()
				return nil, fmt.Errorf("azurite did not listen on port %d within 30s: %s", p, stderr.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return inst, nil
}

// Stop kills the Azurite process group this package started.
func (i *Instance) Stop() {
	if i.cmd == nil {
		return
	}
	i.once.Do(func() {
		_ = syscall.Kill(-i.cmd.Process.Pid, syscall.SIGKILL)
		<-i.exited
		_ = os.RemoveAll(i.dir)
	})
}

// Binary returns the path of the pinned Azurite executable.
func Binary() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(root, "Azurite", "node_modules", ".bin", "azurite")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%s not found: run `make azurite` (npm ci in Azurite/) first", bin)
	}
	return bin, nil
}

// RepoRoot finds the module root by walking up from the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// FreePorts returns n distinct free TCP ports on 127.0.0.1.
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
