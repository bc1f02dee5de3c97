package app

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/host/config"
	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/triggers"
	"github.com/stratus-dev/stratus/triggers/httptrigger"
)

func TestPanickingHandlerIs500AndHostKeepsServing(t *testing.T) {
	t.Parallel()
	cfg := &config.Config{Root: t.TempDir(), Host: config.DefaultHostJSON(), Settings: config.NewSettings(nil, config.LocalSettings{})}
	cfg.Local.Host.CORS = "https://app.example"
	h, err := New(Options{Config: cfg, Logger: NewLogger(io.Discard, "text", nil), Register: func(r *registry.Registry) error {
		return r.Add(httptrigger.Function("Panics", httptrigger.Trigger{AuthLevel: httptrigger.Anonymous}, func(context.Context, *httptrigger.Request) (*httptrigger.Response, error) {
			panic("handler bug")
		}))
	}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	url := "http://" + ln.Addr().String() + "/api/Panics"
	for range 3 {
		res, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 500 || !strings.Contains(string(b), "invocationId") || res.Header.Get("X-Invocation-Id") == "" {
			t.Fatalf("status %d body %s, want 500 with the invocation id", res.StatusCode, b)
		}
	}
	req, _ := http.NewRequest("OPTIONS", url, nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "POST")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 204 || res.Header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Fatalf("CORS preflight: %d %v", res.StatusCode, res.Header)
	}
}

func TestDuplicateFunctionNamesFailAtStartup(t *testing.T) {
	t.Parallel()
	cfg := &config.Config{Root: t.TempDir(), Host: config.DefaultHostJSON(), Settings: config.NewSettings(nil, config.LocalSettings{})}
	noop := func(context.Context, *httptrigger.Request) (*httptrigger.Response, error) { return nil, nil }
	_, err := New(Options{Config: cfg, Logger: NewLogger(io.Discard, "text", nil), Register: func(r *registry.Registry) error {
		if err := r.Add(httptrigger.Function("Same", httptrigger.Trigger{Route: "a"}, noop)); err != nil {
			return err
		}
		return r.Add(httptrigger.Function("same", httptrigger.Trigger{Route: "b"}, noop))
	}})
	if err == nil || !strings.Contains(err.Error(), "registered twice") {
		t.Fatalf("err = %v", err)
	}
	_, err = New(Options{Config: cfg, Logger: NewLogger(io.Discard, "text", nil), Register: func(r *registry.Registry) error {
		return r.Add(httptrigger.Function("9bad", httptrigger.Trigger{}, noop))
	}})
	if err == nil || !strings.Contains(err.Error(), "invalid") {
		t.Fatalf("err = %v", err)
	}
}

// blockingTrigger is a trigger plugin for tests: its listener delivers one
// invocation as soon as it listens, then waits for the host to stop.
const blockingTrigger = "testBlockingTrigger"

func registerBlockingTrigger(r *triggers.Registry) {
	r.Register(blockingTrigger, func(_ *bindings.Env, fn *registry.Function) (triggers.Listener, error) {
		return triggers.ListenerFunc(func(ctx context.Context, deliver triggers.Deliver) error {
			var wg sync.WaitGroup
			wg.Go(func() { _, _ = deliver(ctx, &registry.Invocation{Function: fn}) })
			<-ctx.Done()
			wg.Wait()
			return nil
		}), nil
	})
}

// shutdownHost runs a host with one HTTP function and one blocking-trigger
// function, both running handler.
func shutdownHost(t *testing.T, timeout time.Duration, handler func(ctx context.Context) error) (h *Host, url string, stop func() error) {
	t.Helper()
	cfg := &config.Config{Root: t.TempDir(), Host: config.DefaultHostJSON(), Settings: config.NewSettings(nil, config.LocalSettings{})}
	h, err := New(Options{Config: cfg, Logger: NewLogger(io.Discard, "text", nil), ShutdownTimeout: timeout,
		Triggers: []func(*triggers.Registry){registerBlockingTrigger},
		Register: func(r *registry.Registry) error {
			return errors.Join(
				r.Add(httptrigger.Function("Slow", httptrigger.Trigger{AuthLevel: httptrigger.Anonymous}, func(ctx context.Context, _ *httptrigger.Request) (*httptrigger.Response, error) {
					if err := handler(ctx); err != nil {
						return nil, err
					}
					return httptrigger.Text(http.StatusOK, "finished"), nil
				})),
				r.Add(registry.Function{Name: "Background", Trigger: bindings.Binding{Type: blockingTrigger, Name: "t"},
					Handler: registry.HandlerFunc(func(ctx context.Context, _ *registry.Invocation) (any, error) { return nil, handler(ctx) })}),
			)
		}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx, ln) }()
	return h, "http://" + ln.Addr().String() + "/api/Slow", func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(time.Minute):
			t.Fatal("Run did not return within a minute of the shutdown")
			return nil
		}
	}
}

func TestShutdownLetsInFlightInvocationsFinish(t *testing.T) {
	t.Parallel()
	started := make(chan struct{}, 2)
	release := make(chan struct{})
	results := make(chan error, 2)
	h, url, stop := shutdownHost(t, time.Minute, func(ctx context.Context) error {
		started <- struct{}{}
		<-release
		// Still alive after the shutdown began: the invocation may finish.
		results <- ctx.Err()
		return ctx.Err()
	})
	<-started // the background invocation
	type reply struct {
		status int
		body   string
		err    error
	}
	replies := make(chan reply, 1)
	go func() {
		res, err := http.Get(url)
		if err != nil {
			replies <- reply{err: err}
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		replies <- reply{status: res.StatusCode, body: string(b)}
	}()
	<-started // the HTTP invocation
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	for h.State() != "Stopping" {
		runtime.Gosched()
	}
	close(release)
	for range 2 {
		if err := <-results; err != nil {
			t.Errorf("an in-flight invocation's context ended at shutdown: %v", err)
		}
	}
	if r := <-replies; r.err != nil || r.status != 200 || r.body != "finished" {
		t.Errorf("in-flight HTTP request = %d %q %v, want 200 finished", r.status, r.body, r.err)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestShutdownIsBounded(t *testing.T) {
	t.Parallel()
	started := make(chan struct{}, 1)
	cancelled := make(chan struct{})
	never := make(chan struct{})
	t.Cleanup(func() { close(never) })
	_, _, stop := shutdownHost(t, 200*time.Millisecond, func(ctx context.Context) error {
		started <- struct{}{}
		<-ctx.Done()
		close(cancelled)
		<-never // a handler that does not return even when cancelled
		return nil
	})
	<-started
	err := stop()
	select {
	case <-cancelled:
	default:
		t.Error("the in-flight invocation's context was not cancelled after the shutdown timeout")
	}
	if err == nil || !strings.Contains(err.Error(), "still running") {
		t.Fatalf("Run = %v, want an error about the invocation still running", err)
	}
}

func TestCORS(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, cors, origin string
		creds              bool
		wantOrigin         string
	}{
		{"any origin", "*", "https://a.example", false, "*"},
		{"listed origin", "https://a.example, https://b.example", "https://b.example", false, "https://b.example"},
		{"unlisted origin", "https://a.example", "https://evil.example", false, ""},
		{"credentials echo the origin", "*", "https://a.example", true, "https://a.example"},
		{"no CORS configured", "", "https://a.example", false, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := &config.Config{Root: t.TempDir(), Host: config.DefaultHostJSON(), Settings: config.NewSettings(nil, config.LocalSettings{})}
			cfg.Local.Host.CORS, cfg.Local.Host.CORSCredentials = tc.cors, tc.creds
			h, err := New(Options{Config: cfg, Logger: NewLogger(io.Discard, "text", nil), Register: func(r *registry.Registry) error {
				return r.Add(httptrigger.Function("Hi", httptrigger.Trigger{AuthLevel: httptrigger.Anonymous}, func(context.Context, *httptrigger.Request) (*httptrigger.Response, error) {
					return httptrigger.Text(http.StatusOK, "hi"), nil
				}))
			}})
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest("GET", "/api/Hi", nil)
			req.Header.Set("Origin", tc.origin)
			w := httptest.NewRecorder()
			h.Handler().ServeHTTP(w, req)
			if w.Code != 200 || w.Header().Get("Access-Control-Allow-Origin") != tc.wantOrigin {
				t.Fatalf("GET with Origin %s: %d, Access-Control-Allow-Origin %q; want 200, %q", tc.origin, w.Code, w.Header().Get("Access-Control-Allow-Origin"), tc.wantOrigin)
			}
			if got := w.Header().Get("Access-Control-Allow-Credentials") == "true"; got != tc.creds {
				t.Fatalf("Access-Control-Allow-Credentials = %v, want %v", got, tc.creds)
			}
		})
	}
}
