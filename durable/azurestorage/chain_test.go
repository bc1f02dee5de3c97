package azurestorage

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/durable/history"
)

// TestChain runs chain-3 orchestrations (HelloSequence) end to end through
// the backend, checks their output and history, and logs what one costs in
// storage requests and time.
func TestChain(t *testing.T) {
	t.Parallel()
	env := newEnv(t)
	b := env.start(t, env.options())
	finished := make(chan string, 16)
	runWorkers(t, b, (&chain{cities: cities}).step, 2, func(id string) { finished <- id })
	ctx := context.Background()
	run := func(id string) time.Duration {
		t0 := time.Now()
		if err := b.CreateInstance(ctx, startedEvent(id, "HelloSequence", "null")); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-finished:
			if got != id {
				t.Fatalf("finished %s, want %s", got, id)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s did not finish", id)
		}
		return time.Since(t0)
	}
	run("warm")
	const n = 10
	var lat []time.Duration
	r0 := env.clients.Requests.Load()
	for i := range n {
		lat = append(lat, run(fmt.Sprintf("seq-%d", i)))
	}
	b.acks.Wait()
	reqs := env.clients.Requests.Load() - r0
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("chain-3: %.1f storage requests per orchestration (including idle polls at 200 ms), sequential latency p50 %s",
		float64(reqs)/n, lat[n/2])
	if per := float64(reqs) / n; per > 30 {
		t.Errorf("chain-3 costs %.1f storage requests, want at most 30", per)
	}

	for i := range n {
		st, err := b.GetInstance(ctx, fmt.Sprintf("seq-%d", i), true)
		if err != nil || st.RuntimeStatus != history.StatusCompleted || st.Output != helloOutput {
			t.Fatalf("seq-%d: %+v %v", i, st, err)
		}
	}
	h, err := b.GetHistory(ctx, "seq-0")
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range h {
		types = append(types, e.EventType.String())
	}
	want := "[OrchestratorStarted ExecutionStarted TaskScheduled OrchestratorCompleted OrchestratorStarted TaskCompleted TaskScheduled OrchestratorCompleted " +
		"OrchestratorStarted TaskCompleted TaskScheduled OrchestratorCompleted OrchestratorStarted TaskCompleted ExecutionCompleted OrchestratorCompleted]"
	if fmt.Sprint(types) != want {
		t.Fatalf("history %v", types)
	}
}
