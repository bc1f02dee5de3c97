package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/stratus-dev/stratus/bindings/azstorage"
	"github.com/stratus-dev/stratus/bindings/storage"
	fstorage "github.com/stratus-dev/stratus/functions/storage"
	"github.com/stratus-dev/stratus/host/app"
	"github.com/stratus-dev/stratus/host/config"
	"github.com/stratus-dev/stratus/tests/azurite"
	"github.com/stratus-dev/stratus/triggers"
	"github.com/stratus-dev/stratus/triggers/queue"
)

var figQueue = unit("queue_msgs_per_s", "msg/s")

// queueMessages is how many messages one QueueEcho run processes.
const queueMessages = 1000

// benchQueue measures QueueEcho end to end on a fresh Azurite: 1000 messages
// wait on echo-in, a host with the storage samples (only QueueEcho enabled,
// host.json defaults: batchSize 16, newBatchThreshold 8 × cores) starts, and
// the clock runs until all 1000 upper-cased copies are on echo-out. Each
// message costs the host a share of a batched dequeue, an enqueue and a
// delete.
//
// Azurite's dequeue cost grows with the number of messages resident in the
// queue, so this figure depends on the backlog: on a 2-core machine it was
// about 400 msg/s with 250 messages, 280 with 1000 and 170 with 2000. It is
// an Azurite figure; against Azure Storage the per-request latency dominates.
func benchQueue(*benchConfig) (map[string]float64, error) {
	az, err := azurite.Launch()
	if err != nil {
		return nil, err
	}
	defer az.Stop()
	c, err := azstorage.Open(az.ConnectionString)
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	in, out := c.Queue.NewQueueClient("echo-in"), c.Queue.NewQueueClient("echo-out")
	if err := storage.CreateQueue(ctx, in); err != nil {
		return nil, err
	}
	if err := fill(ctx, func(i int) error {
		return storage.Enqueue(ctx, in, base64.StdEncoding.EncodeToString([]byte("message "+strconv.Itoa(i))))
	}); err != nil {
		return nil, fmt.Errorf("fill echo-in: %w", err)
	}

	cfg := &config.Config{Root: ".", Host: config.DefaultHostJSON(),
		Settings: config.NewSettings(nil, config.LocalSettings{Values: map[string]string{"AzureWebJobsStorage": az.ConnectionString}})}
	cfg.Host.Functions = []string{fstorage.QueueEcho}
	h, err := app.New(app.Options{Config: cfg, Logger: app.NewLogger(io.Discard, "text", map[string]string{"default": "Warning"}),
		Register: fstorage.Register, Triggers: []func(*triggers.Registry){queue.Register}})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- h.Run(rctx, ln) }()
	defer func() { cancel(); <-done }()
	deadline := start.Add(5 * time.Minute)
	for {
		p, err := out.GetProperties(ctx, nil)
		if err == nil && p.ApproximateMessagesCount != nil && *p.ApproximateMessagesCount >= queueMessages {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("echo-out did not reach %d messages within 5 minutes", queueMessages)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return map[string]float64{figQueue: queueMessages / time.Since(start).Seconds()}, nil
}

// fill runs put(0..queueMessages-1) from 32 goroutines.
func fill(ctx context.Context, put func(i int) error) error {
	const workers = 32
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < queueMessages; i += workers {
				if err := put(i); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}
