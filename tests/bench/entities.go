package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/stratus-dev/stratus/bindings/azstorage"
	"github.com/stratus-dev/stratus/durable"
	"github.com/stratus-dev/stratus/durable/extension"
	"github.com/stratus-dev/stratus/functions/entities"
	"github.com/stratus-dev/stratus/host/app"
	"github.com/stratus-dev/stratus/host/config"
	"github.com/stratus-dev/stratus/tests/azurite"
)

var figEntityOps = unit("entity_ops_per_s", "ops/s")

// Entity workload size: signals spread over a few Counter entities, so
// that the figure shows batching per entity and parallelism across them.
const (
	entityBenchSignals  = 4000
	entityBenchCounters = 8
)

// benchEntities is W4: entityBenchSignals client signals "add 1" to
// entityBenchCounters Counter entities, sent 32 at a time; the figure is
// signals per second from the first send until the last entity has
// committed its last operation (the Instances rows' LastUpdatedTime).
func benchEntities(*benchConfig) (map[string]float64, error) {
	az, err := azurite.Launch()
	if err != nil {
		return nil, err
	}
	defer az.Stop()
	hj := config.DefaultHostJSON()
	hj.Extensions.DurableTask.HubName = "BenchEntities"
	env := map[string]string{"AzureWebJobsStorage": az.ConnectionString}
	cfg := &config.Config{Root: ".", Host: hj, Settings: config.NewSettings(func(k string) (string, bool) { v, ok := env[k]; return v, ok }, config.LocalSettings{})}
	ext := extension.New()
	h, err := app.New(app.Options{
		Config: cfg, NoAuth: true,
		Logger:     app.NewLogger(io.Discard, "text", map[string]string{"default": "Warning"}),
		Register:   entities.Register,
		Extensions: []app.Extension{ext},
	})
	if err != nil {
		return nil, err
	}
	probeClients, err := azstorage.Open(az.ConnectionString)
	if err != nil {
		return nil, err
	}
	probeBackend, err := extension.OpenBackend(probeClients, &hj, app.NewLogger(io.Discard, "text", nil))
	if err != nil {
		return nil, err
	}
	probe := durable.NewClient(probeBackend)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.Run(ctx, ln) }()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
		}
	}()
	client := ext.Client()
	ids := make([]durable.EntityID, entityBenchCounters)
	for i := range ids {
		ids[i] = durable.NewEntityID("Counter", fmt.Sprintf("bench%d", i))
	}
	// Warm-up: the hub is up once an entity has processed a signal.
	warm := durable.NewEntityID("Counter", "warmup")
	if err := client.SignalEntity(ctx, warm, "add", 1); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	if _, err := waitCounters(ctx, probe, []durable.EntityID{warm}, 1, time.Minute); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}

	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, entityBenchSignals)
	sem := make(chan struct{}, 32)
	for i := range entityBenchSignals {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := client.SignalEntity(ctx, ids[i%len(ids)], "add", 1); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return nil, fmt.Errorf("signal: %w", err)
	}
	end, err := waitCounters(ctx, probe, ids, entityBenchSignals/len(ids), 2*time.Minute)
	if err != nil {
		return nil, err
	}
	return map[string]float64{figEntityOps: entityBenchSignals / end.Sub(start).Seconds()}, nil
}

// waitCounters polls until every counter reads want and returns the
// latest LastOperationTime among them.
func waitCounters(ctx context.Context, probe *durable.Client, ids []durable.EntityID, want int, timeout time.Duration) (time.Time, error) {
	deadline := time.Now().Add(timeout)
	for {
		var last time.Time
		ready := 0
		for _, id := range ids {
			es, err := probe.GetEntity(ctx, id)
			if err != nil {
				return time.Time{}, err
			}
			var n float64
			if es.Exists && json.Unmarshal(es.State, &n) == nil && int(n) == want {
				ready++
				if es.LastOperationTime.After(last) {
					last = es.LastOperationTime
				}
			}
		}
		if ready == len(ids) {
			return last, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, fmt.Errorf("%d of %d counters reached %d within %v", ready, len(ids), want, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
