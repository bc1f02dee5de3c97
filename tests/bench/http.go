package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stratus-dev/stratus/functions/hello"
	"github.com/stratus-dev/stratus/host/app"
	"github.com/stratus-dev/stratus/host/config"
)

var (
	figHTTP     = unit("http_req_per_s", "req/s")
	figBareHTTP = unit("http_bare_req_per_s", "req/s")
	figHTTPRel  = unit("http_vs_bare_ratio", "ratio")
)

// benchHTTP measures HttpHello through the whole host (routing, keys,
// pipeline, logging at Warning) and a bare net/http handler answering the
// same text, with the same load generator in the same run.
func benchHTTP(*benchConfig) (map[string]float64, error) {
	cfg := &config.Config{Root: ".", Host: config.DefaultHostJSON(), Settings: config.NewSettings(nil, config.LocalSettings{})}
	h, err := app.New(app.Options{Config: cfg, Logger: app.NewLogger(io.Discard, "text", map[string]string{"default": "Warning"}), Register: hello.Register})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx, ln) }()
	defer func() { cancel(); <-done }()
	hostRate, err := load("http://" + ln.Addr().String() + "/api/hello?name=Bench")
	if err != nil {
		return nil, fmt.Errorf("host: %w", err)
	}

	bare := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "Hello, "+r.URL.Query().Get("name")+". This HTTP triggered function executed successfully.")
	})}
	bln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() { _ = bare.Serve(bln) }()
	defer bare.Close()
	bareRate, err := load("http://" + bln.Addr().String() + "/api/hello?name=Bench")
	if err != nil {
		return nil, fmt.Errorf("bare: %w", err)
	}
	return map[string]float64{figHTTP: hostRate, figBareHTTP: bareRate, figHTTPRel: hostRate / bareRate}, nil
}

// load sends GETs from 32 keep-alive connections for 3 s (after 0.5 s of
// warm-up) and returns completed requests per second.
func load(url string) (float64, error) {
	const conns = 32
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var count atomic.Int64
	var firstErr atomic.Value
	measure := func(d time.Duration) {
		deadline := time.Now().Add(d)
		var wg sync.WaitGroup
		for range conns {
			wg.Go(func() {
				for time.Now().Before(deadline) {
					res, err := client.Get(url)
					if err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
					_, _ = io.Copy(io.Discard, res.Body)
					res.Body.Close()
					if res.StatusCode != 200 {
						firstErr.CompareAndSwap(nil, fmt.Errorf("status %d", res.StatusCode))
						return
					}
					count.Add(1)
				}
			})
		}
		wg.Wait()
	}
	measure(500 * time.Millisecond)
	count.Store(0)
	start := time.Now()
	measure(3 * time.Second)
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return float64(count.Load()) / time.Since(start).Seconds(), nil
}
