// Package storage holds the app's Azure Storage samples: queue, blob and
// timer triggers with queue, blob and table output bindings.
//
//   - QueueEcho: queue echo-in → the upper-cased text on queue echo-out.
//   - QueuePoisonDemo: queue poison-demo, always fails, so each message ends
//     in poison-demo-poison after maxDequeueCount attempts.
//   - BlobToUpper: blob uploads/{name}.txt → processed/{name}.txt upper-cased.
//   - Heartbeat: every 30 s (runOnStartup off), one row per firing in the
//     table Heartbeats.
package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	bstorage "github.com/stratus-dev/stratus/bindings/storage"
	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/triggers/blob"
	"github.com/stratus-dev/stratus/triggers/queue"
	"github.com/stratus-dev/stratus/triggers/timer"
)

// Function names.
const (
	QueueEcho       = "QueueEcho"
	QueuePoisonDemo = "QueuePoisonDemo"
	BlobToUpper     = "BlobToUpper"
	Heartbeat       = "Heartbeat"
)

// HeartbeatSchedule fires at seconds 0 and 30 of every minute.
const HeartbeatSchedule = "0,30 * * * * *"

// HeartbeatScheduleEnv names the environment variable that, when set,
// replaces HeartbeatSchedule (end-to-end tests use a per-second schedule).
const HeartbeatScheduleEnv = "STRATUS_HEARTBEAT_SCHEDULE"

// HeartbeatRow is one Heartbeats table row: PartitionKey "Heartbeat", RowKey
// "<occurrence UTC yyyyMMddTHHmmssZ>_<host>", so that every firing is its own
// row and a second firing of one occurrence would show as a second row.
type HeartbeatRow struct {
	PartitionKey string
	RowKey       string
	Occurrence   time.Time
	IsPastDue    bool
	// Host is the host process (name and PID) that fired.
	Host string
}

// ErrPoisonDemo is what QueuePoisonDemo always returns.
var ErrPoisonDemo = errors.New("QueuePoisonDemo always fails")

// Register registers the storage samples.
func Register(r *registry.Registry) error {
	echoOut := bstorage.QueueOutput("out", "echo-out")
	upper := bstorage.BlobOutput("out", "processed/{name}.txt")
	beats := bstorage.TableOutput("beats", "Heartbeats")
	host, _ := os.Hostname()
	host = fmt.Sprintf("%s-%d", host, os.Getpid())
	schedule := HeartbeatSchedule
	if s := os.Getenv(HeartbeatScheduleEnv); s != "" {
		schedule = s
	}

	return errors.Join(
		r.Add(queue.Function(QueueEcho, queue.Trigger{QueueName: "echo-in"},
			func(ctx context.Context, m *queue.Message) error {
				return echoOut.Add(ctx, strings.ToUpper(m.Text))
			}, registry.WithBindings(echoOut))),

		r.Add(queue.Function(QueuePoisonDemo, queue.Trigger{QueueName: "poison-demo"},
			func(ctx context.Context, m *queue.Message) error {
				registry.Logger(ctx).Warn("failing on purpose", "text", m.Text, "dequeue_count", m.DequeueCount)
				return ErrPoisonDemo
			})),

		r.Add(blob.Function(BlobToUpper, blob.Trigger{Path: "uploads/{name}.txt"},
			func(ctx context.Context, b *blob.Blob) error {
				return upper.Write(ctx, []byte(strings.ToUpper(string(b.Data))))
			}, registry.WithBindings(upper))),

		r.Add(timer.Function(Heartbeat, timer.Trigger{Schedule: schedule},
			func(ctx context.Context, t *timer.Info) error {
				occ := t.Occurrence.UTC()
				return beats.Upsert(ctx, HeartbeatRow{
					PartitionKey: "Heartbeat",
					RowKey:       occ.Format("20060102T150405Z") + "_" + host,
					Occurrence:   occ,
					IsPastDue:    t.IsPastDue,
					Host:         host,
				})
			}, registry.WithBindings(beats))),
	)
}
