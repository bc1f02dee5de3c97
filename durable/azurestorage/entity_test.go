package azurestorage

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/durable"
)

// TestEntityLargeStateSpillsAndSurvivesRestart runs a durable entity on
// this backend with a state far over the table property limit: the state
// spills to blobs (History ExecutionStarted Input, Instances Input), reads
// back whole, and survives a restart of the backend and worker.
func TestEntityLargeStateSpillsAndSurvivesRestart(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	blob := durable.Entity(func(ctx *durable.EntityContext, s *string) (any, error) {
		var part string
		if err := ctx.Input(&part); err != nil {
			return nil, err
		}
		*s += part
		return len(*s), nil
	})
	run := func() (stop func()) {
		b := env.start(t, env.options())
		w := durable.NewWorker(b, durable.WorkerOptions{
			Entities: func(n string) (durable.EntityFunc, bool) { return blob, n == "blob" },
			Logger:   testLogger(),
		})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = w.Run(ctx); close(done) }()
		return func() {
			cancel()
			<-done
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer scancel()
			_ = b.Stop(sctx)
		}
	}
	id := durable.NewEntityID("blob", "k")
	part := strings.Repeat("x", 100_000)
	ctx := context.Background()

	stop := run()
	b := env.open(t, env.options()) // a client-only view of the hub
	client := durable.NewClient(b)
	if err := client.SignalEntity(ctx, id, "append", part); err != nil {
		t.Fatal(err)
	}
	readLen := func(want int) {
		t.Helper()
		eventually(t, 60*time.Second, "entity state", func() bool {
			s, ok, err := client.ReadEntityState(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			var v string
			return ok && json.Unmarshal(s, &v) == nil && len(v) == want
		})
	}
	readLen(len(part))
	rows := rawRows(t, b.histT, id.String())
	es := rows[rowKey(1)]
	if es["EventType"] != "ExecutionStarted" || es["Input"] != "" || !strings.Contains(es["InputBlobName"].(string), "-ExecutionStarted-") {
		t.Fatalf("the entity's ExecutionStarted row did not spill: %v %v", es["EventType"], es["InputBlobName"])
	}
	if v, _ := rawRows(t, b.instT, id.String())[""]["Input"].(string); !b.isLargeURL(v) {
		t.Fatalf("Instances Input is not a blob URL: %.80s", v)
	}
	stop()

	stop = run()
	defer stop()
	if err := client.SignalEntity(ctx, id, "append", part); err != nil {
		t.Fatal(err)
	}
	readLen(2 * len(part))
}
