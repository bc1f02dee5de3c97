package app

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/stratus-dev/stratus/host/config"
	"github.com/stratus-dev/stratus/host/registry"
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
