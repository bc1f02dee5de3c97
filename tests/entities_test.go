package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/tests/azurite"
	"github.com/stratus-dev/stratus/tests/hosttest"
)

// readEntity reads an entity's state through the management API; it
// returns the HTTP status and the body.
func readEntity(t *testing.T, h *hosttest.Process, name, key string) (int, []byte) {
	t.Helper()
	code, b, _, err := h.Do(context.Background(), "GET", mgmt+"/entities/"+name+"/"+key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return code, b
}

// signalEntity signals an entity through the management API.
func signalEntity(h *hosttest.Process, name, key, op string, input any) (int, error) {
	var body []byte
	if input != nil {
		body, _ = json.Marshal(input)
	}
	code, _, _, err := h.Do(context.Background(), "POST", mgmt+"/entities/"+name+"/"+key+"?op="+op, body)
	return code, err
}

// waitEntityValue polls a number-valued entity until it reads want; it
// fails when it reads more, or when the timeout passes.
func waitEntityValue(t *testing.T, h *hosttest.Process, name, key string, want float64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		code, b := readEntity(t, h, name, key)
		last = fmt.Sprintf("%d %s", code, b)
		if code == http.StatusOK {
			var v float64
			mustJSON(t, b, &v)
			if v == want {
				return
			}
			if v > want {
				t.Fatalf("%s@%s reads %v, more than %v: an operation ran twice", name, key, v, want)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s@%s reads %s after %v, want %v\nhost log tail:\n%s", name, key, last, timeout, want, tail(h.Logs(), 40))
}

// stayValue checks that a number-valued entity keeps reading want for d
// (redelivered messages would show up as a larger value).
func stayValue(t *testing.T, h *hosttest.Process, name, key string, want float64, d time.Duration) {
	t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		code, b := readEntity(t, h, name, key)
		var v float64
		mustJSON(t, b, &v)
		if code != http.StatusOK || v != want {
			t.Fatalf("%s@%s reads %d %s, want %v to stay", name, key, code, b, want)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func TestEntityCounterCalledByConcurrentOrchestrations(t *testing.T) {
	t.Parallel()
	az := azurite.Shared(t)
	h, _ := startDurableHost(t, az)
	ids := make([]string, 8)
	for i := range ids {
		ids[i] = startOrchestration(t, h, "CounterLoop", "", map[string]any{"key": "c1", "times": 50, "amount": 1})
	}
	for _, id := range ids {
		st := waitFor(t, h, id, 3*time.Minute, "Completed", "Failed")
		if st.RuntimeStatus != "Completed" {
			t.Fatalf("%s: %s %s", id, st.RuntimeStatus, st.Output)
		}
	}
	code, b := readEntity(t, h, "Counter", "c1")
	if code != http.StatusOK || strings.TrimSpace(string(b)) != "400" {
		t.Fatalf("Counter@c1: %d %s, want 200 400", code, b)
	}
	// Entities are listed; the entity instance has the Durable Functions shape.
	code, lb, _, err := h.Do(context.Background(), "GET", mgmt+"/entities/counter?fetchState=true", nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("list: %d %s %v", code, lb, err)
	}
	var items []struct {
		EntityID struct{ Name, Key string } `json:"entityId"`
		State    json.RawMessage            `json:"state"`
	}
	mustJSON(t, lb, &items)
	if len(items) != 1 || items[0].EntityID.Name != "counter" || items[0].EntityID.Key != "c1" || string(items[0].State) != "400" {
		t.Fatalf("list: %s", lb)
	}
	_, st := getStatus(t, h, "@counter@c1", "?showInput=true")
	var cs struct {
		EntityExists bool `json:"entityExists"`
	}
	var in struct {
		State string `json:"state"`
	}
	mustJSON(t, st.CustomStatus, &cs)
	mustJSON(t, st.Input, &in)
	if st.RuntimeStatus != "Running" || !cs.EntityExists || in.State != "400" {
		t.Fatalf("entity instance status: %+v", st)
	}
}

func TestEntityCounterConcurrentHTTPSignals(t *testing.T) {
	t.Parallel()
	az := azurite.Shared(t)
	h, _ := startDurableHost(t, az)
	if code, _ := readEntity(t, h, "Counter", "c1"); code != http.StatusNotFound {
		t.Fatalf("a missing entity reads %d, want 404", code)
	}
	var wg sync.WaitGroup
	var bad atomic.Int64
	sem := make(chan struct{}, 64)
	for range 400 {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if code, err := signalEntity(h, "Counter", "c1", "add", 1); err != nil || code != http.StatusAccepted {
				bad.Add(1)
				t.Errorf("signal: %d %v", code, err)
			}
		})
	}
	wg.Wait()
	if bad.Load() > 0 {
		t.FailNow()
	}
	waitEntityValue(t, h, "Counter", "c1", 400, 2*time.Minute)
	stayValue(t, h, "Counter", "c1", 400, 2*time.Second)

	// DELETE signals delete: the entity disappears from reads and listings.
	code, _, _, err := h.Do(context.Background(), "DELETE", mgmt+"/entities/Counter/c1", nil)
	if err != nil || code != http.StatusAccepted {
		t.Fatalf("delete: %d %v", code, err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if code, _ := readEntity(t, h, "Counter", "c1"); code == http.StatusNotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the deleted entity still reads")
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, lb, _, _ := h.Do(context.Background(), "GET", mgmt+"/entities", nil)
	if strings.TrimSpace(string(lb)) != "[]" {
		t.Fatalf("entities after delete: %s", lb)
	}
}

func TestEntityInventoryTransfersUnderContention(t *testing.T) {
	t.Parallel()
	az := azurite.Shared(t)
	h, _ := startDurableHost(t, az)
	for _, p := range []string{"p1", "p2"} {
		if code, err := signalEntity(h, "Inventory", p, "restock", 50); err != nil || code != http.StatusAccepted {
			t.Fatalf("restock %s: %d %v", p, code, err)
		}
	}
	var ids []string
	for i := range 24 {
		in := map[string]any{"from": "p1", "to": "p2", "quantity": 1 + i%4}
		if i%2 == 1 {
			in["from"], in["to"] = "p2", "p1"
		}
		ids = append(ids, startOrchestration(t, h, "TransferStock", "", in))
	}
	// Reservations from outside the critical sections contend too.
	for range 10 {
		if code, err := signalEntity(h, "Inventory", "p1", "reserve", 1); err != nil || code != http.StatusAccepted {
			t.Fatalf("reserve: %d %v", code, err)
		}
	}
	moved := 0
	for _, id := range ids {
		st := waitFor(t, h, id, 3*time.Minute, "Completed", "Failed")
		if st.RuntimeStatus != "Completed" {
			t.Fatalf("%s: %s %s", id, st.RuntimeStatus, st.Output)
		}
		if string(st.Output) == "true" {
			moved++
		}
	}
	type stock struct{ Available, Reserved int }
	deadline := time.Now().Add(time.Minute)
	for {
		var s [2]stock
		for i, p := range []string{"p1", "p2"} {
			code, b := readEntity(t, h, "Inventory", p)
			if code != http.StatusOK {
				t.Fatalf("Inventory@%s: %d %s", p, code, b)
			}
			mustJSON(t, b, &s[i])
		}
		total := s[0].Available + s[0].Reserved + s[1].Available + s[1].Reserved
		if total != 100 {
			t.Fatalf("stock %+v: total %d, want 100 (an update was lost or doubled)", s, total)
		}
		if s[0].Reserved == 10 && s[1].Reserved == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stock %+v: want 10 reserved on p1", s)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if moved == 0 {
		t.Fatal("no transfer moved stock")
	}
}

// TestEntitySignalsSurviveKill kills the host that processes an entity
// (SIGKILL) while it works through a burst of signals, and restarts it.
// The signals go through a second host that stays up, so every one of them
// was accepted for sure; each must be applied exactly once.
func TestEntitySignalsSurviveKill(t *testing.T) {
	t.Parallel()
	az := azurite.Shared(t)
	hj, _ := durableHostJSON(t)
	worker := hosttest.Start(t, hosttest.Options{Storage: az.ConnectionString, HostJSON: hj})
	// The first host owns the task hub's partitions once it has processed
	// a signal; the second one, started after, gets none while it lives.
	if code, err := signalEntity(worker, "Counter", "k1", "add", 1); err != nil || code != http.StatusAccepted {
		t.Fatalf("first signal: %d %v", code, err)
	}
	waitEntityValue(t, worker, "Counter", "k1", 1, time.Minute)
	front := hosttest.Start(t, hosttest.Options{Storage: az.ConnectionString, HostJSON: hj})

	const burst = 600
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for range burst {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if code, err := signalEntity(front, "Counter", "k1", "add", 1); err != nil || code != http.StatusAccepted {
				t.Errorf("signal: %d %v", code, err)
			}
		})
	}
	// Kill the worker once it is busy with the burst.
	var seen float64
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if code, b := readEntity(t, front, "Counter", "k1"); code == http.StatusOK {
			mustJSON(t, b, &seen)
			if seen > 1 {
				break
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	worker.Kill()
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("killed the worker when the counter read %v of %d", seen, burst+1)
	if seen >= burst+1 {
		t.Log("the burst was fully processed before the kill; the restart part still runs")
	}
	restarted := hosttest.Start(t, hosttest.Options{Storage: az.ConnectionString, HostJSON: hj})
	_ = restarted
	want := float64(burst + 1)
	// Partitions move once the dead worker's leases expire, and the messages
	// it held come back after the 10 s visibility timeout: wait past both.
	waitEntityValue(t, front, "Counter", "k1", want, 3*time.Minute)
	stayValue(t, front, "Counter", "k1", want, 15*time.Second)
}
