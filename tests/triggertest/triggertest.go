// Package triggertest owns the helpers the storage trigger and binding tests share: an
// Azurite per test package, a bindings.Env over it, a minimal Deliver with
// the pipeline's contract, and running a listener under a test.
package triggertest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/bindings/azstorage"
	"github.com/stratus-dev/stratus/host/config"
	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/tests/azurite"
	"github.com/stratus-dev/stratus/triggers"
)

var (
	mu   sync.Mutex
	inst *azurite.Instance
)

// Main runs a test package's tests with one fresh Azurite for the package.
func Main(m *testing.M) {
	code := m.Run()
	mu.Lock()
	if inst != nil {
		inst.Stop()
	}
	mu.Unlock()
	os.Exit(code)
}

// Storage returns the package's Azurite, started on first use.
func Storage(tb testing.TB) *azurite.Instance {
	tb.Helper()
	mu.Lock()
	defer mu.Unlock()
	if inst == nil {
		i, err := azurite.Launch()
		if err != nil {
			tb.Fatalf("azurite: %v", err)
		}
		inst = i
	}
	return inst
}

// Env returns an environment over the package's Azurite with its own
// storage clients (as a separate host process would have), host id
// "testhost" and host.json h (defaults when nil).
func Env(tb testing.TB, h *config.HostJSON) *bindings.Env {
	tb.Helper()
	az := Storage(tb)
	c, err := azstorage.Open(az.ConnectionString)
	if err != nil {
		tb.Fatal(err)
	}
	if h == nil {
		d := config.DefaultHostJSON()
		h = &d
	}
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	return &bindings.Env{
		Settings: config.NewSettings(nil, config.LocalSettings{Values: map[string]string{"AzureWebJobsStorage": az.ConnectionString}}),
		Logger:   slog.New(slog.NewTextHandler(testWriter{tb}, &slog.HandlerOptions{Level: level})),
		HostID:   "testhost",
		Storage:  func(string) (*azstorage.Clients, error) { return c, nil },
		Host:     h,
	}
}

type testWriter struct{ tb testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(string(p))
	return len(p), nil
}

// Deliver runs the handler and flushes its outputs only on success: the
// pipeline's contract without retries, timeouts or logging.
func Deliver(ctx context.Context, inv *registry.Invocation) (any, error) {
	out, err := inv.Function.Handler.Invoke(registry.WithInvocation(ctx, inv), inv)
	if err != nil {
		inv.DiscardOutputs()
		return nil, err
	}
	if err := inv.FlushOutputs(context.WithoutCancel(ctx)); err != nil {
		return nil, fmt.Errorf("write outputs: %w", err)
	}
	return out, nil
}

// Bind binds fn's binders to env, failing tb on error.
func Bind(tb testing.TB, env *bindings.Env, fn *registry.Function) {
	tb.Helper()
	for _, b := range fn.Bindings {
		if binder, ok := b.(bindings.Binder); ok {
			if err := binder.Bind(env); err != nil {
				tb.Fatal(err)
			}
		}
	}
}

// Running is a listener running under a test.
type Running struct {
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// Run starts l.Listen(ctx, deliver) and stops it when tb ends.
func Run(tb testing.TB, l triggers.Listener, deliver triggers.Deliver) *Running {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &Running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- l.Listen(ctx, deliver) }()
	tb.Cleanup(func() {
		if err := r.Stop(); err != nil {
			tb.Errorf("listener: %v", err)
		}
	})
	return r
}

// Stop cancels the listener and waits for Listen to return (in-flight work
// included); it returns Listen's error.
func (r *Running) Stop() error {
	r.once.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.done:
		case <-time.After(60 * time.Second):
			r.err = fmt.Errorf("listener did not stop within 60s")
		}
	})
	return r.err
}

// Eventually calls cond until it returns true or d passes; it fails tb with
// msg on timeout. It polls storage state, it does not assert on time.
func Eventually(tb testing.TB, d time.Duration, msg string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for: %s", d, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Unique returns prefix followed by a short random suffix, so that a test
// run with -count=N does not see the storage left by the previous run.
func Unique(prefix string) string {
	return prefix + "-" + strings.ReplaceAll(bindings.NewGUID(), "-", "")[:8]
}
