package timer

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/host/config"
	"github.com/stratus-dev/stratus/tests/triggertest"
)

func TestMain(m *testing.M) { triggertest.Main(m) }

// fakeClock is a manual clock: After channels fire when Advance passes them.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
	armed   chan struct{}
}

type fakeWaiter struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(now time.Time) *fakeClock {
	return &fakeClock{now: now, armed: make(chan struct{}, 64)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, fakeWaiter{c.now.Add(d), ch})
	select {
	case c.armed <- struct{}{}:
	default:
	}
	return ch
}

// Advance moves the clock and fires due waiters.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	keep := c.waiters[:0]
	for _, w := range c.waiters {
		if !w.at.After(c.now) {
			w.ch <- c.now
		} else {
			keep = append(keep, w)
		}
	}
	c.waiters = keep
}

func hostJSON() *config.HostJSON {
	h := config.DefaultHostJSON()
	p := config.TimeSpan(15 * time.Second)
	r := config.TimeSpan(100 * time.Millisecond)
	h.Singleton.ListenerLockPeriod = &p
	h.Singleton.ListenerLockRecoveryPollingInterval = &r
	return &h
}

func listener(t *testing.T, env *bindings.Env, name string, trig Trigger, h func(context.Context, *Info) error, opts ...ListenerOption) *Listener {
	t.Helper()
	fn := Function(name, trig, h)
	l, err := NewListener(env, &fn, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestFakeClockScheduleCollapsesMissedRunsAndDetectsPastDue(t *testing.T) {
	t.Parallel()
	env := triggertest.Env(t, hostJSON())
	start := time.Date(2024, 5, 1, 10, 0, 30, 0, time.UTC)
	clock := newFakeClock(start)
	runs := make(chan *Info, 8)
	handler := func(_ context.Context, i *Info) error { runs <- i; return nil }
	name := triggertest.Unique("FakeMinute")
	l := listener(t, env, name, Trigger{Schedule: "0 * * * * *"}, handler, WithClock(clock))
	if !l.UseMonitor() {
		t.Fatal("useMonitor is off for a once-a-minute schedule")
	}
	r := triggertest.Run(t, l, triggertest.Deliver)

	<-clock.armed
	clock.Advance(30 * time.Second) // 10:01:00
	first := <-runs
	if want := start.Add(30 * time.Second); !first.Occurrence.Equal(want) || first.IsPastDue {
		t.Fatalf("first run = %+v, want occurrence %s, not past due", first, want)
	}
	<-clock.armed
	clock.Advance(5*time.Minute + 10*time.Second) // 10:06:10: five occurrences missed
	second := <-runs
	if want := time.Date(2024, 5, 1, 10, 6, 0, 0, time.UTC); !second.Occurrence.Equal(want) {
		t.Fatalf("after a 5-minute gap the run is for %s, want only the latest, %s", second.Occurrence, want)
	}
	if second.ScheduleStatus == nil || !second.ScheduleStatus.Last.Equal(first.Occurrence) {
		t.Fatalf("status before the second run = %+v, want Last = %s", second.ScheduleStatus, first.Occurrence)
	}
	<-clock.armed
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}

	// "Restart" 24 minutes later: 10:07 was missed, so one past-due run.
	clock2 := newFakeClock(time.Date(2024, 5, 1, 10, 30, 0, 0, time.UTC))
	l2 := listener(t, env, name, Trigger{Schedule: "0 * * * * *"}, handler, WithClock(clock2))
	triggertest.Run(t, l2, triggertest.Deliver)
	pd := <-runs
	if !pd.IsPastDue || pd.ScheduleStatus == nil || !pd.ScheduleStatus.Next.Equal(time.Date(2024, 5, 1, 10, 7, 0, 0, time.UTC)) {
		t.Fatalf("restart run = %+v (status %+v), want past due with Next 10:07", pd, pd.ScheduleStatus)
	}
	<-clock2.armed
	st, _, err := l2.readStatus(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2024, 5, 1, 10, 31, 0, 0, time.UTC); !st.Next.Equal(want) {
		t.Fatalf("status after the past-due run = %+v, want Next %s", st, want)
	}
}

func TestPastDueWithRealClock(t *testing.T) {
	t.Parallel()
	env := triggertest.Env(t, hostJSON())
	name := triggertest.Unique("DailyPastDue")
	sched, _ := ParseSchedule("0 0 3 * * *", nil)
	now := time.Now().UTC()
	last := sched.Next(now.Add(-72 * time.Hour))
	stored := &ScheduleStatus{Last: last, Next: sched.Next(last), LastUpdated: last}
	runs := make(chan *Info, 2)
	l := listener(t, env, name, Trigger{Schedule: "0 0 3 * * *"}, func(_ context.Context, i *Info) error { runs <- i; return nil })
	if err := l.writeStatus(context.Background(), stored, nil); err != nil {
		t.Fatal(err)
	}
	triggertest.Run(t, l, triggertest.Deliver)
	got := <-runs
	if !got.IsPastDue || got.ScheduleStatus == nil || !got.ScheduleStatus.Next.Equal(stored.Next) {
		t.Fatalf("run = %+v status %+v, want past due with the stored status", got, got.ScheduleStatus)
	}
}

func TestRunOnStartup(t *testing.T) {
	t.Parallel()
	env := triggertest.Env(t, hostJSON())
	runs := make(chan *Info, 2)
	l := listener(t, env, triggertest.Unique("Startup"), Trigger{Schedule: "0 0 3 1 1 *", RunOnStartup: true}, func(_ context.Context, i *Info) error { runs <- i; return nil })
	triggertest.Run(t, l, triggertest.Deliver)
	if got := <-runs; got.IsPastDue || got.ScheduleStatus == nil {
		t.Fatalf("startup run = %+v, want not past due, with a status", got)
	}
}

// occurrences records which occurrences ran, and where.
type occurrences struct {
	mu   sync.Mutex
	runs map[time.Time][]string
	n    chan struct{}
}

func newOccurrences() *occurrences {
	return &occurrences{runs: map[time.Time][]string{}, n: make(chan struct{}, 1000)}
}

func (o *occurrences) handler(who string) func(context.Context, *Info) error {
	return func(_ context.Context, i *Info) error {
		o.mu.Lock()
		o.runs[i.Occurrence] = append(o.runs[i.Occurrence], who)
		o.mu.Unlock()
		o.n <- struct{}{}
		return nil
	}
}

func (o *occurrences) check(t *testing.T) {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	for occ, who := range o.runs {
		if len(who) != 1 {
			t.Errorf("occurrence %s fired %d times (%v)", occ.Format(time.TimeOnly), len(who), who)
		}
	}
}

func TestTwoListenersFireEachOccurrenceOnce(t *testing.T) {
	t.Parallel()
	occ := newOccurrences()
	trig := Trigger{Schedule: "* * * * * *"}
	name := triggertest.Unique("PerSecond")
	a := listener(t, triggertest.Env(t, hostJSON()), name, trig, occ.handler("a"))
	b := listener(t, triggertest.Env(t, hostJSON()), name, trig, occ.handler("b"))
	ra := triggertest.Run(t, a, triggertest.Deliver)
	rb := triggertest.Run(t, b, triggertest.Deliver)
	for range 3 {
		<-occ.n
	}
	// Hand the lock over: the leader stops (releasing its lease) and the
	// other takes over.
	if err := ra.Stop(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		<-occ.n
	}
	if err := rb.Stop(); err != nil {
		t.Fatal(err)
	}
	occ.check(t)
}

// Two instances that both believe they lead (a hand-over where the old
// holder has not noticed its loss yet) still fire each occurrence once: the
// status blob's conditional write decides.
func TestTwoLeadersAtOnceFireEachOccurrenceOnce(t *testing.T) {
	t.Parallel()
	occ := newOccurrences()
	trig := Trigger{Schedule: "* * * * * *"}
	name := triggertest.Unique("SplitBrain")
	a := listener(t, triggertest.Env(t, hostJSON()), name, trig, occ.handler("a"))
	b := listener(t, triggertest.Env(t, hostJSON()), name, trig, occ.handler("b"))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { a.lead(ctx, triggertest.Deliver) })
	wg.Go(func() { b.lead(ctx, triggertest.Deliver) })
	for range 4 {
		<-occ.n
	}
	cancel()
	wg.Wait()
	occ.check(t)
}

func TestClaimIsExclusive(t *testing.T) {
	t.Parallel()
	const n = 8
	ls := make([]*Listener, n)
	name := triggertest.Unique("Claim")
	for i := range ls {
		ls[i] = listener(t, triggertest.Env(t, hostJSON()), name, Trigger{Schedule: "0 * * * * *"}, func(context.Context, *Info) error { return nil })
	}
	for round := range 3 {
		at := time.Date(2024, 1, 1, 0, round, 0, 0, time.UTC)
		var mu sync.Mutex
		var winners []int
		var errs []error
		var wg sync.WaitGroup
		for i, l := range ls {
			wg.Go(func() {
				_, ok, err := l.claim(context.Background(), at)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
				}
				if ok {
					winners = append(winners, i)
				}
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		if len(winners) != 1 {
			t.Fatalf("round %d: %d claims won (%v), want 1", round, len(winners), winners)
		}
	}
}

func TestInfoJSON(t *testing.T) {
	t.Parallel()
	at := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	i := &Info{ScheduleStatus: &ScheduleStatus{Last: at, Next: at.Add(time.Hour), LastUpdated: at}, IsPastDue: true}
	b, err := i.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"Schedule":{"AdjustForDST":true},"ScheduleStatus":{"Last":"2024-01-02T03:04:05Z","Next":"2024-01-02T04:04:05Z","LastUpdated":"2024-01-02T03:04:05Z"},"IsPastDue":true}`
	if string(b) != want {
		t.Fatalf("JSON = %s\nwant   %s", b, want)
	}
}

func TestFactoryErrors(t *testing.T) {
	t.Parallel()
	env := triggertest.Env(t, nil)
	for _, tc := range []struct{ sched, want string }{{"", "empty"}, {"%NOPE%", "NOPE"}, {"1 2", "fields"}} {
		fn := Function("F", Trigger{Schedule: tc.sched}, func(context.Context, *Info) error { return nil })
		if _, err := New(env, &fn); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("schedule %q: err = %v, want %q", tc.sched, err, tc.want)
		}
	}
}

func TestScheduleFromSettingsAndTimeZone(t *testing.T) {
	t.Parallel()
	env := triggertest.Env(t, hostJSON())
	cs, _ := env.Settings.Connection("")
	env.Settings = config.NewSettings(nil, config.LocalSettings{Values: map[string]string{
		"AzureWebJobsStorage": cs, "WEBSITE_TIME_ZONE": "Europe/Paris",
		"Nightly": "0 0 1 * * *", "Often": "*/10 * * * * *", "Every5": "00:05:00", "Every10s": "00:00:10",
	}})
	noop := func(context.Context, *Info) error { return nil }
	cases := []struct {
		schedule   string
		from, want time.Time
		useMonitor bool
	}{
		// 01:00 in Paris is 00:00 UTC in winter and 23:00 UTC in summer.
		{"%Nightly%", time.Date(2024, 1, 10, 12, 0, 0, 0, time.UTC), time.Date(2024, 1, 11, 0, 0, 0, 0, time.UTC), true},
		{"%Nightly%", time.Date(2024, 7, 10, 12, 0, 0, 0, time.UTC), time.Date(2024, 7, 10, 23, 0, 0, 0, time.UTC), true},
		// More than once a minute: useMonitor is off by default.
		{"%Often%", time.Date(2024, 1, 1, 0, 0, 1, 0, time.UTC), time.Date(2024, 1, 1, 0, 0, 10, 0, time.UTC), false},
		// TimeSpan schedules: the previous occurrence plus the interval.
		{"%Every5%", time.Date(2024, 1, 1, 0, 0, 1, 0, time.UTC), time.Date(2024, 1, 1, 0, 5, 1, 0, time.UTC), true},
		{"%Every10s%", time.Date(2024, 1, 1, 0, 0, 1, 0, time.UTC), time.Date(2024, 1, 1, 0, 0, 11, 0, time.UTC), false},
	}
	for _, tc := range cases {
		l := listener(t, env, "Zoned", Trigger{Schedule: tc.schedule}, noop)
		if got := l.Schedule().Next(tc.from); !got.Equal(tc.want) {
			t.Errorf("%s: next after %s = %s, want %s", tc.schedule, tc.from, got.UTC(), tc.want)
		}
		if l.UseMonitor() != tc.useMonitor {
			t.Errorf("%s: useMonitor = %v, want %v", tc.schedule, l.UseMonitor(), tc.useMonitor)
		}
	}
	env.Settings = config.NewSettings(nil, config.LocalSettings{Values: map[string]string{"AzureWebJobsStorage": cs, "WEBSITE_TIME_ZONE": "Mars/Olympus"}})
	fn := Function("BadZone", Trigger{Schedule: "0 0 1 * * *"}, noop)
	if _, err := New(env, &fn); err == nil || !strings.Contains(err.Error(), "WEBSITE_TIME_ZONE") {
		t.Fatalf("unknown zone: err = %v, want it to name WEBSITE_TIME_ZONE", err)
	}
}

// A stored status from a different schedule is not a missed occurrence: the
// next occurrence is recomputed and the first run is not past due.
func TestChangedScheduleIsNotPastDue(t *testing.T) {
	t.Parallel()
	env := triggertest.Env(t, hostJSON())
	clock := newFakeClock(time.Date(2024, 5, 1, 10, 0, 30, 0, time.UTC))
	runs := make(chan *Info, 2)
	l := listener(t, env, triggertest.Unique("Changed"), Trigger{Schedule: "0 0 11 * * *"}, func(_ context.Context, i *Info) error { runs <- i; return nil }, WithClock(clock))
	// Written by the old, once-a-minute schedule; its Next (10:00) has passed.
	old := &ScheduleStatus{Last: time.Date(2024, 5, 1, 9, 59, 0, 0, time.UTC), Next: time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)}
	if err := l.writeStatus(context.Background(), old, nil); err != nil {
		t.Fatal(err)
	}
	triggertest.Run(t, l, triggertest.Deliver)
	<-clock.armed
	clock.Advance(59*time.Minute + 30*time.Second) // 11:00:00
	got := <-runs
	if got.IsPastDue || !got.Occurrence.Equal(time.Date(2024, 5, 1, 11, 0, 0, 0, time.UTC)) {
		t.Fatalf("first run = %+v, want the 11:00 occurrence, not past due", got)
	}
}
