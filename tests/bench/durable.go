package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/stratus-dev/stratus/bindings/azstorage"
	"github.com/stratus-dev/stratus/durable"
	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/extension"
	"github.com/stratus-dev/stratus/durable/history"
	"github.com/stratus-dev/stratus/functions/orchestrations"
	"github.com/stratus-dev/stratus/host/app"
	"github.com/stratus-dev/stratus/host/config"
	"github.com/stratus-dev/stratus/tests/azurite"
)

var (
	figChainRate     = unit("chain3_orch_per_s", "orch/s")
	figChainP50      = unit("chain3_p50_ms", "ms")
	figChainP99      = unit("chain3_p99_ms", "ms")
	figChainRequests = unit("chain3_storage_requests_per_orch", "requests")
	figFanout        = unit("fanout1000_s", "s")
	figLatencyP50    = unit("latency_chain3_p50_ms", "ms")
	figAfterIdle     = unit("latency_after_idle_ms", "ms")
	figIdleRequests  = unit("idle_storage_requests_per_s", "requests/s")
)

func durableWorkloads() []workload {
	return []workload{
		{name: "chain3", run: benchChain3},
		{name: "fanout1000", run: benchFanout},
		{name: "latency", run: benchLatency},
		{name: "entities", run: benchEntities},
	}
}

// durableHost is an in-process host with the durable extension on a fresh,
// in-memory Azurite. Its storage requests are counted apart from the
// benchmark's own status polling, which uses separate clients.
type durableHost struct {
	az      *azurite.Instance
	ext     *extension.Extension
	client  *durable.Client
	hostReq func() int64
	probe   *durable.Client
	cancel  context.CancelFunc
	done    chan error
}

func startDurableHost() (*durableHost, error) {
	az, err := azurite.Launch()
	if err != nil {
		return nil, err
	}
	hj := config.DefaultHostJSON()
	hj.Extensions.DurableTask.HubName = "BenchHub"
	env := map[string]string{"AzureWebJobsStorage": az.ConnectionString}
	cfg := &config.Config{Root: ".", Host: hj, Settings: config.NewSettings(func(k string) (string, bool) { v, ok := env[k]; return v, ok }, config.LocalSettings{})}
	ext := extension.New()
	h, err := app.New(app.Options{
		Config:     cfg,
		NoAuth:     true,
		Logger:     app.NewLogger(io.Discard, "text", map[string]string{"default": "Warning"}),
		Register:   orchestrations.Register,
		Extensions: []app.Extension{ext},
	})
	if err != nil {
		az.Stop()
		return nil, err
	}
	clients, err := h.Env.Storage("")
	if err != nil {
		az.Stop()
		return nil, err
	}
	probeClients, err := azstorage.Open(az.ConnectionString)
	if err != nil {
		az.Stop()
		return nil, err
	}
	probeBackend, err := extension.OpenBackend(probeClients, &hj, app.NewLogger(io.Discard, "text", nil))
	if err != nil {
		az.Stop()
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		az.Stop()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &durableHost{az: az, ext: ext, client: ext.Client(), hostReq: clients.Requests.Load, probe: durable.NewClient(probeBackend), cancel: cancel, done: make(chan error, 1)}
	go func() { d.done <- h.Run(ctx, ln) }()
	// Wait until the hub is up: a first orchestration completes.
	if _, err := d.runOne(ctx, "HelloSequence", 2*time.Millisecond, time.Minute); err != nil {
		d.stop()
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	return d, nil
}

func (d *durableHost) stop() {
	d.cancel()
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
	}
	d.az.Stop()
}

// runOne starts one instance and waits for it, polling every poll; it
// returns the latency the host recorded (CompletedTime − CreatedTime).
func (d *durableHost) runOne(ctx context.Context, name string, poll, timeout time.Duration) (time.Duration, error) {
	id, err := d.client.ScheduleNew(ctx, name, nil)
	if err != nil {
		return 0, err
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		st, err := d.probe.GetInstance(ctx, id, false)
		if err == nil && st.RuntimeStatus.Terminal() {
			if st.RuntimeStatus != history.StatusCompleted {
				return 0, fmt.Errorf("instance %s ended %s: %s", id, st.RuntimeStatus, st.Output)
			}
			return st.CompletedTime.Sub(st.CreatedTime), nil
		}
		if err != nil && !errors.Is(err, backend.ErrInstanceNotFound) {
			return 0, err
		}
		time.Sleep(poll)
	}
	return 0, fmt.Errorf("instance %s did not complete within %v", id, timeout)
}

// benchChain3 is W1: 500 HelloSequence instances started at once.
func benchChain3(*benchConfig) (map[string]float64, error) {
	d, err := startDurableHost()
	if err != nil {
		return nil, err
	}
	defer d.stop()
	ctx := context.Background()
	const n = 500
	before := d.hostReq()
	start := time.Now()
	ids := make([]string, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			id, err := d.client.ScheduleNew(ctx, "HelloSequence", nil)
			if err != nil {
				errs <- err
				return
			}
			ids[i] = id
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	lat, end, err := waitAll(ctx, d.probe, ids, 2*time.Minute)
	if err != nil {
		return nil, err
	}
	requests := d.hostReq() - before
	elapsed := end.Sub(start)
	return map[string]float64{
		figChainRate:     float64(n) / elapsed.Seconds(),
		figChainP50:      ms(percentile(lat, 0.50)),
		figChainP99:      ms(percentile(lat, 0.99)),
		figChainRequests: float64(requests) / n,
	}, nil
}

// waitAll polls the instances' rows until all are Completed and returns
// their recorded latencies and the latest completion time.
func waitAll(ctx context.Context, probe *durable.Client, ids []string, timeout time.Duration) ([]time.Duration, time.Time, error) {
	pending := map[string]bool{}
	for _, id := range ids {
		pending[id] = true
	}
	var lat []time.Duration
	var last time.Time
	deadline := time.Now().Add(timeout)
	for len(pending) > 0 {
		if time.Now().After(deadline) {
			return nil, time.Time{}, fmt.Errorf("%d of %d instances did not complete within %v", len(pending), len(ids), timeout)
		}
		token := ""
		for {
			page, err := probe.Query(ctx, backend.InstanceQuery{RuntimeStatus: []history.Status{history.StatusCompleted, history.StatusFailed}, PageSize: 1000, ContinuationToken: token})
			if err != nil {
				return nil, time.Time{}, err
			}
			for _, st := range page.Instances {
				if !pending[st.InstanceID] {
					continue
				}
				if st.RuntimeStatus != history.StatusCompleted {
					return nil, time.Time{}, fmt.Errorf("instance %s failed: %s", st.InstanceID, st.Output)
				}
				delete(pending, st.InstanceID)
				lat = append(lat, st.CompletedTime.Sub(st.CreatedTime))
				if st.CompletedTime.After(last) {
					last = st.CompletedTime
				}
			}
			if token = page.ContinuationToken; token == "" {
				break
			}
		}
		if len(pending) > 0 {
			time.Sleep(250 * time.Millisecond)
		}
	}
	return lat, last, nil
}

// benchFanout is W2: one orchestration fanning out 1000 activities and in.
func benchFanout(*benchConfig) (map[string]float64, error) {
	d, err := startDurableHost()
	if err != nil {
		return nil, err
	}
	defer d.stop()
	ctx := context.Background()
	id, err := d.client.ScheduleNew(ctx, "FanOutFanIn", 1000)
	if err != nil {
		return nil, err
	}
	lat, _, err := waitAll(ctx, d.probe, []string{id}, 2*time.Minute)
	if err != nil {
		return nil, err
	}
	return map[string]float64{figFanout: lat[0].Seconds()}, nil
}

// benchLatency is W3: 20 chain-3 runs one at a time, then one more after
// 60 s of idleness, during which the host's storage requests are counted.
func benchLatency(*benchConfig) (map[string]float64, error) {
	d, err := startDurableHost()
	if err != nil {
		return nil, err
	}
	defer d.stop()
	ctx := context.Background()
	var lat []time.Duration
	for range 20 {
		l, err := d.runOne(ctx, "HelloSequence", 2*time.Millisecond, time.Minute)
		if err != nil {
			return nil, err
		}
		lat = append(lat, l)
	}
	// Let in-flight deletes and renewals settle before counting idle traffic.
	time.Sleep(2 * time.Second)
	const idle = 60 * time.Second
	before := d.hostReq()
	time.Sleep(idle)
	idleRate := float64(d.hostReq()-before) / idle.Seconds()
	after, err := d.runOne(ctx, "HelloSequence", 2*time.Millisecond, time.Minute)
	if err != nil {
		return nil, err
	}
	return map[string]float64{
		figLatencyP50:   ms(percentile(lat, 0.50)),
		figAfterIdle:    ms(after),
		figIdleRequests: idleRate,
	}, nil
}

func percentile(v []time.Duration, p float64) time.Duration {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p)
	return s[i]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
