package durable

import (
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
)

// t0 is the time of the first episode in executor tests.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// sim drives one instance through the executor the way the worker does,
// committing each episode to an in-test history. Every step runs twice: on
// the parked executor (the cache path) and on a fresh executor that replays
// the committed history (the cold path); the two outcomes must be identical.
type sim struct {
	t    *testing.T
	g    *engine
	id   string
	exec string
	hist []*history.Event
	ex   *executor
	now  time.Time
	last *backend.OrchestrationCompletion
}

func newSim(t *testing.T, orchs map[string]Orchestrator) *sim {
	t.Helper()
	g := &engine{
		orchestrators: func(n string) (Orchestrator, bool) { o, ok := orchs[n]; return o, ok },
		logger:        slog.New(slog.DiscardHandler),
		watchdog:      5 * time.Second,
	}
	s := &sim{t: t, g: g, id: "i1", exec: "e1", now: t0}
	t.Cleanup(func() {
		if s.ex != nil {
			s.ex.close()
		}
	})
	return s
}

// start delivers ExecutionStarted for orchestrator name with a JSON input.
func (s *sim) start(name, input string) *backend.OrchestrationCompletion {
	return s.step(&history.Event{EventType: history.ExecutionStarted, EventID: -1, Timestamp: s.now, Name: name, Input: input,
		OrchestrationInstance: &history.Instance{InstanceID: s.id, ExecutionID: s.exec}})
}

// at moves the clock of the next episodes.
func (s *sim) at(d time.Duration) *sim { s.now = t0.Add(d); return s }

func (s *sim) step(events ...*history.Event) *backend.OrchestrationCompletion {
	s.t.Helper()
	wi := func() *backend.OrchestrationWorkItem {
		return &backend.OrchestrationWorkItem{InstanceID: s.id, ExecutionID: s.exec, History: cloneAll(s.hist), NewEvents: cloneAll(events)}
	}
	cold, coldEx, _ := s.g.process(nil, wi(), s.now)
	coldEx.close()
	warm, ex, _ := s.g.process(s.ex, wi(), s.now)
	if a, b := summarize(cold), summarize(warm); a != b {
		s.t.Fatalf("cold replay and cached execution differ:\ncold:\n%s\ncached:\n%s", a, b)
	}
	if ex.cacheable() {
		s.ex = ex
	} else {
		ex.close()
		s.ex = nil
	}
	if warm.ResetHistory {
		s.hist = cloneAll(warm.NewHistory)
	} else {
		s.hist = append(s.hist, cloneAll(warm.NewHistory)...)
	}
	s.exec = warm.ExecutionID
	s.last = warm
	return warm
}

func cloneAll(es []*history.Event) []*history.Event {
	out := make([]*history.Event, len(es))
	for i, e := range es {
		out[i] = e.Clone()
	}
	return out
}

// describe renders an event with the fields tests look at.
func describe(e *history.Event) string {
	switch e.EventType {
	case history.TaskScheduled:
		return fmt.Sprintf("TaskScheduled#%d(%s %s)", e.EventID, e.Name, e.Input)
	case history.TaskCompleted:
		return fmt.Sprintf("TaskCompleted(#%d %s)", e.TaskScheduledID, e.Result)
	case history.TaskFailed:
		return fmt.Sprintf("TaskFailed(#%d %s)", e.TaskScheduledID, e.Reason)
	case history.TimerCreated:
		return fmt.Sprintf("TimerCreated#%d(+%s)", e.EventID, e.FireAt.Sub(t0))
	case history.TimerFired:
		return fmt.Sprintf("TimerFired(#%d)", e.TimerID)
	case history.ExecutionCompleted:
		return fmt.Sprintf("ExecutionCompleted(%s %s)", e.OrchestrationStatus, e.Result)
	case history.EventRaised:
		return fmt.Sprintf("EventRaised(%s %s)", e.Name, e.Input)
	case history.ExecutionStarted:
		return fmt.Sprintf("ExecutionStarted(%s %s)", e.Name, e.Input)
	case history.SubOrchestrationInstanceCreated:
		return fmt.Sprintf("SubOrchestrationInstanceCreated#%d(%s %s %s)", e.EventID, e.Name, e.InstanceID, e.Input)
	case history.SubOrchestrationInstanceCompleted:
		return fmt.Sprintf("SubOrchestrationInstanceCompleted(#%d %s)", e.TaskScheduledID, e.Result)
	case history.SubOrchestrationInstanceFailed:
		return fmt.Sprintf("SubOrchestrationInstanceFailed(#%d %s)", e.TaskScheduledID, e.Reason)
	case history.EventSent:
		return fmt.Sprintf("EventSent#%d(%s %s %s)", e.EventID, e.InstanceID, e.Name, e.Input)
	}
	return e.String()
}

func describeAll(es []*history.Event) string {
	var parts []string
	for _, e := range es {
		parts = append(parts, describe(e))
	}
	return strings.Join(parts, " ")
}

// newEvents is the episode without its OrchestratorStarted and
// OrchestratorCompleted markers.
func newEvents(c *backend.OrchestrationCompletion) string {
	var es []*history.Event
	for _, e := range c.NewHistory {
		if e.EventType != history.OrchestratorStarted && e.EventType != history.OrchestratorCompleted {
			es = append(es, e)
		}
	}
	return describeAll(es)
}

func describeMsg(m backend.Message) string {
	s := m.TargetInstanceID + "<-" + describe(m.Event)
	if !m.VisibleAt.IsZero() {
		s += fmt.Sprintf("@+%s", m.VisibleAt.Sub(t0))
	}
	return s
}

func outbound(c *backend.OrchestrationCompletion) string {
	var parts []string
	for _, m := range c.Outbound {
		parts = append(parts, describeMsg(m))
	}
	return strings.Join(parts, " ")
}

func summarize(c *backend.OrchestrationCompletion) string {
	st := c.State
	fd := ""
	if st.FailureDetails != nil {
		fd = st.FailureDetails.ErrorType + ": " + st.FailureDetails.ErrorMessage
	}
	return fmt.Sprintf("reset=%v\nhistory=%s\noutbound=%s\ncarryover=%s\nstatus=%s output=%s custom=%s failure=%s",
		c.ResetHistory, describeAll(c.NewHistory), outbound(c), describeAll(c.Carryover), st.RuntimeStatus, st.Output, st.CustomStatus, fd)
}

// Event constructors for tests.
func completed(id int, result string) *history.Event {
	return &history.Event{EventType: history.TaskCompleted, EventID: -1, TaskScheduledID: id, Result: result}
}

func failed(id int, msg string) *history.Event {
	return &history.Event{EventType: history.TaskFailed, EventID: -1, TaskScheduledID: id, Reason: msg,
		FailureDetails: &history.FailureDetails{ErrorType: "errors.errorString", ErrorMessage: msg}}
}

func fired(id int) *history.Event {
	return &history.Event{EventType: history.TimerFired, EventID: -1, TimerID: id}
}

func raised(name, data string) *history.Event {
	return &history.Event{EventType: history.EventRaised, EventID: -1, Name: name, Input: data}
}

func terminated(reason string) *history.Event {
	return &history.Event{EventType: history.ExecutionTerminated, EventID: -1, Input: reason}
}

func suspended() *history.Event {
	return &history.Event{EventType: history.ExecutionSuspended, EventID: -1, Reason: "pause"}
}

func resumed() *history.Event {
	return &history.Event{EventType: history.ExecutionResumed, EventID: -1, Reason: "go on"}
}

// coroutineGoroutines counts goroutines running orchestrator coroutines.
func coroutineGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	return strings.Count(string(buf), "durable.(*coroutine).run")
}

// waitNoCoroutines waits until no coroutine goroutine is left, failing the
// test if some remain after a generous bound.
func waitNoCoroutines(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for coroutineGoroutines() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d coroutine goroutines leaked", coroutineGoroutines())
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

var _ = slices.Contains[[]string]

func slogDiscard() *slog.Logger { return slog.New(slog.DiscardHandler) }
