package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
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
// benchmark's own status polling, which uses separate clients (and a
// separate request counter).
type durableHost struct {
	name    string
	cfg     *benchConfig
	az      *azurite.Instance
	ext     *extension.Extension
	client  *durable.Client
	clients *azstorage.Clients
	hostReq func() int64
	probe   *durable.Client
	stalls  *stallMonitor
	usage   cpuUsage
	ops     *azstorage.Operations
	cancel  context.CancelFunc
	done    chan error
}

func startDurableHost(name string, bc *benchConfig) (*durableHost, error) {
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
	d := &durableHost{name: name, cfg: bc, az: az, ext: ext, client: ext.Client(), clients: clients, hostReq: clients.Requests.Load,
		probe: durable.NewClient(probeBackend), cancel: cancel, done: make(chan error, 1)}
	d.stalls = startStallMonitor(probeClients)
	go func() { d.done <- h.Run(ctx, ln) }()
	// Wait until the hub is up: a first orchestration completes.
	if _, err := d.runOne(ctx, "HelloSequence", time.Minute); err != nil {
		d.stop()
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	return d, nil
}

// measure starts the measured window: the host's operation counts (with
// -ops), the CPU accounting and the stall monitor restart here.
func (d *durableHost) measure() {
	if d.cfg.ops {
		d.ops = d.clients.CountOperations()
	}
	d.usage = readCPU()
	d.stalls.reset()
}

// report ends the measured window: it prints the window's CPU use, any
// Azurite stall and (with -ops) the requests by operation to stderr.
func (d *durableHost) report(window time.Duration) {
	u := readCPU().sub(d.usage)
	fmt.Fprintf(os.Stderr, "bench %s: window %.2f s, host CPU %.2f s, Azurite CPU %.2f s\n", d.name, window.Seconds(), u.self.Seconds(), u.children.Seconds())
	if worst, at := d.stalls.worst(); worst >= stallThreshold {
		fmt.Fprintf(os.Stderr, "bench %s: WARNING Azurite stalled: a probe request sent %.1f s into the window took %v; figures include the stall\n",
			d.name, at.Seconds(), worst.Round(time.Millisecond))
	}
	if d.ops != nil {
		fmt.Fprintf(os.Stderr, "bench %s: host storage requests by operation:\n%s", d.name, d.ops)
	}
}

func (d *durableHost) stop() {
	d.stalls.stop()
	d.cancel()
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
	}
	d.az.Stop()
}

// oneRunPoll is how often runOne reads the instance row. The figure is the
// host's own CompletedTime − CreatedTime, so the interval does not enter it;
// it is short enough to start the next run soon and long enough that the
// probe's reads (on Azurite's single thread) hardly delay the host's.
const oneRunPoll = 5 * time.Millisecond

// runOne starts one instance and waits for it; it returns the latency the
// host recorded (CompletedTime − CreatedTime).
func (d *durableHost) runOne(ctx context.Context, name string, timeout time.Duration) (time.Duration, error) {
	id, err := d.client.ScheduleNew(ctx, name, nil)
	if err != nil {
		return 0, err
	}
	time.Sleep(2 * oneRunPoll)
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
		time.Sleep(oneRunPoll)
	}
	return 0, fmt.Errorf("instance %s did not complete within %v", id, timeout)
}

// benchChain3 is W1: 500 HelloSequence instances started at once.
func benchChain3(cfg *benchConfig) (map[string]float64, error) {
	d, err := startDurableHost("chain3", cfg)
	if err != nil {
		return nil, err
	}
	defer d.stop()
	ctx := context.Background()
	const n = 500
	d.measure()
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
	// The last acknowledgements run in the background after the rows say
	// Completed; they are part of the cost.
	time.Sleep(300 * time.Millisecond)
	requests := d.hostReq() - before
	elapsed := end.Sub(start)
	d.report(elapsed)
	return map[string]float64{
		figChainRate:     float64(n) / elapsed.Seconds(),
		figChainP50:      ms(percentile(lat, 0.50)),
		figChainP99:      ms(percentile(lat, 0.99)),
		figChainRequests: float64(requests) / n,
	}, nil
}

// waitAll polls the instances' rows until all are Completed and returns
// their recorded latencies and the latest completion time. Each poll is a
// query of the whole Instances table (a scan on Azurite), so it polls only
// once a second: the figures come from the rows' times, not from when the
// poll saw them.
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
			time.Sleep(time.Second)
		}
	}
	return lat, last, nil
}

// benchFanout is W2: one orchestration fanning out 1000 activities and in.
func benchFanout(cfg *benchConfig) (map[string]float64, error) {
	d, err := startDurableHost("fanout1000", cfg)
	if err != nil {
		return nil, err
	}
	defer d.stop()
	ctx := context.Background()
	d.measure()
	id, err := d.client.ScheduleNew(ctx, "FanOutFanIn", 1000)
	if err != nil {
		return nil, err
	}
	lat, _, err := waitAll(ctx, d.probe, []string{id}, 2*time.Minute)
	if err != nil {
		return nil, err
	}
	time.Sleep(300 * time.Millisecond)
	d.report(lat[0])
	return map[string]float64{figFanout: lat[0].Seconds()}, nil
}

// benchLatency is W3: 20 chain-3 runs one at a time, then one more after
// 60 s of idleness, during which the host's storage requests are counted.
//
// The 20 runs fit well inside Azurite's first 60 s; its first queue GC
// sweep falls into the idle minute, where it delays nothing of ours (and
// after a few hundred messages it is short). The stall monitor reports it
// should it reach a measured window.
func benchLatency(cfg *benchConfig) (map[string]float64, error) {
	d, err := startDurableHost("latency", cfg)
	if err != nil {
		return nil, err
	}
	defer d.stop()
	ctx := context.Background()
	var lat []time.Duration
	d.measure()
	t0 := time.Now()
	for range 20 {
		l, err := d.runOne(ctx, "HelloSequence", time.Minute)
		if err != nil {
			return nil, err
		}
		lat = append(lat, l)
	}
	d.name = "latency (20 sequential)"
	d.report(time.Since(t0))
	// Let in-flight deletes settle before counting idle traffic.
	time.Sleep(2 * time.Second)
	const idle = 60 * time.Second
	d.measure()
	before := d.hostReq()
	time.Sleep(idle)
	idleRate := float64(d.hostReq()-before) / idle.Seconds()
	d.name = "latency (idle)"
	d.report(idle)
	d.measure()
	after, err := d.runOne(ctx, "HelloSequence", time.Minute)
	if err != nil {
		return nil, err
	}
	d.name = "latency (after idle)"
	d.report(after)
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

// traceStalls (-stalls) prints every probe slower than 100 ms.
var traceStalls bool

// stallThreshold is the probe latency reported as an Azurite stall (its
// queue GC blocks every request; a healthy request takes about 1 ms).
const stallThreshold = 250 * time.Millisecond

// stallMonitor sends a cheap request (queue service properties) to Azurite
// every 200 ms on its own clients and keeps the slowest answer since the
// last reset, so that a run hit by Azurite's queue GC stall says so.
type stallMonitor struct {
	mu      sync.Mutex
	max     time.Duration
	maxAt   time.Time // when the slowest probe was sent
	since   time.Time // last reset
	started time.Time // of the request in flight, zero when none
	quit    chan struct{}
	done    chan struct{}
}

func startStallMonitor(c *azstorage.Clients) *stallMonitor {
	m := &stallMonitor{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for {
			select {
			case <-m.quit:
				return
			case <-time.After(200 * time.Millisecond):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			m.mu.Lock()
			m.started = time.Now()
			m.mu.Unlock()
			c0 := readCPU().children
			_, _ = c.Queue.GetServiceProperties(ctx, nil)
			cancel()
			if traceStalls {
				if d := time.Since(m.started); d > 100*time.Millisecond {
					fmt.Fprintf(os.Stderr, "bench: slow probe at %s took %v, Azurite CPU meanwhile %v\n", m.started.Format("15:04:05.000"), d, readCPU().children-c0)
				}
			}
			m.mu.Lock()
			if d := time.Since(m.started); d > m.max {
				m.max, m.maxAt = d, m.started
			}
			m.started = time.Time{}
			m.mu.Unlock()
		}
	}()
	return m
}

func (m *stallMonitor) reset() {
	m.mu.Lock()
	m.max, m.since = 0, time.Now()
	m.mu.Unlock()
}

// worst is the slowest probe since the last reset, counting one still in
// flight, and when (after the reset) it was sent.
func (m *stallMonitor) worst() (time.Duration, time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w, at := m.max, m.maxAt
	if !m.started.IsZero() && time.Since(m.started) > w {
		w, at = time.Since(m.started), m.started
	}
	return w, at.Sub(m.since)
}

func (m *stallMonitor) stop() {
	close(m.quit)
	<-m.done
}

// cpuUsage is CPU time used by this process (host and benchmark) and by its
// live child processes (Azurite).
type cpuUsage struct{ self, children time.Duration }

func (u cpuUsage) sub(v cpuUsage) cpuUsage {
	return cpuUsage{self: u.self - v.self, children: u.children - v.children}
}

// readCPU reads /proc: this process's utime+stime and those of its direct
// children (Azurite runs as one node process).
func readCPU() cpuUsage {
	var u cpuUsage
	self := strconv.Itoa(os.Getpid())
	u.self = procCPU("/proc/self/stat")
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		f := statFields(string(b))
		if len(f) > 13 && f[1] == self {
			u.children += ticks(f[11]) + ticks(f[12])
		}
	}
	return u
}

func procCPU(path string) time.Duration {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	f := statFields(string(b))
	if len(f) < 13 {
		return 0
	}
	return ticks(f[11]) + ticks(f[12])
}

// statFields splits /proc/PID/stat after the command name: field 0 is the
// state, 1 the parent pid, 11 utime, 12 stime.
func statFields(s string) []string {
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	return strings.Fields(s)
}

// ticks converts clock ticks (USER_HZ, 100 on Linux) to a duration.
func ticks(s string) time.Duration {
	n, _ := strconv.ParseInt(s, 10, 64)
	return time.Duration(n) * 10 * time.Millisecond
}
