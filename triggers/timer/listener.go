package timer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/bindings/storage"
	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/triggers"
	"github.com/stratus-dev/stratus/triggers/internal/singleton"
)

// Clock is the time source of the scheduling loop.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// After returns a channel that receives once d has passed.
	After(d time.Duration) <-chan time.Time
}

type realClock struct{ now func() time.Time }

func (c realClock) Now() time.Time                         { return c.now() }
func (c realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// ListenerOption configures a listener.
type ListenerOption func(*Listener)

// WithClock replaces the clock (tests).
func WithClock(c Clock) ListenerOption { return func(l *Listener) { l.clock = c } }

// Listener runs one timer function's schedule.
type Listener struct {
	fn           *registry.Function
	sched        Schedule
	loc          *time.Location
	runOnStartup bool
	useMonitor   bool
	blob         *azblob.Client
	status       *blockblob.Client
	lock         *singleton.Lock
	clock        Clock
	log          *slog.Logger
	started      bool // runOnStartup has been considered
}

var (
	_ triggers.Listener      = (*Listener)(nil)
	_ triggers.ManualTrigger = (*Listener)(nil)
)

// StatusBlobName is the status blob of a timer function inside
// azure-webjobs-hosts.
func StatusBlobName(hostID, function string) string {
	return "timers/" + hostID + "/Host.Functions." + function + "/status"
}

// NewListener builds the listener of fn's timer trigger.
func NewListener(env *bindings.Env, fn *registry.Function, opts ...ListenerOption) (*Listener, error) {
	b := fn.Trigger
	expr, err := env.Settings.Resolve(b.String("schedule"))
	if err != nil {
		return nil, fmt.Errorf("timerTrigger schedule: %w", err)
	}
	loc, err := Location(env.Settings.Get("WEBSITE_TIME_ZONE"))
	if err != nil {
		return nil, err
	}
	sched, err := ParseSchedule(expr, loc)
	if err != nil {
		return nil, fmt.Errorf("timerTrigger: %w", err)
	}
	c, err := env.Storage("")
	if err != nil {
		return nil, fmt.Errorf("timerTrigger: %w", err)
	}
	log := env.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "timerTrigger", "function", fn.Name)
	period, retry := singleton.Options(env)
	l := &Listener{
		fn: fn, sched: sched, loc: loc,
		runOnStartup: b.Bool("runOnStartup", false),
		useMonitor:   b.Bool("useMonitor", true) && MinGap(sched, time.Date(2024, 1, 1, 0, 0, 0, 0, loc)) >= time.Minute,
		blob:         c.Blob,
		status:       c.Blob.ServiceClient().NewContainerClient(singleton.HostsContainer).NewBlockBlobClient(StatusBlobName(env.HostID, fn.Name)),
		lock: &singleton.Lock{Blob: c.Blob, Name: singleton.ListenerLockName(env.HostID, fn.Name),
			Period: period, RetryInterval: retry, Logger: log},
		clock: realClock{now: env.Clock},
		log:   log,
	}
	for _, o := range opts {
		o(l)
	}
	return l, nil
}

// Schedule returns the parsed schedule.
func (l *Listener) Schedule() Schedule { return l.sched }

// UseMonitor reports whether the schedule status is monitored.
func (l *Listener) UseMonitor() bool { return l.useMonitor }

// ManualInvocation builds a run for the admin endpoint (not past due).
func (l *Listener) ManualInvocation(string) (*registry.Invocation, error) {
	now := l.clock.Now()
	return l.invocation(&Info{Schedule: l.sched, Occurrence: now}), nil
}

func (l *Listener) invocation(info *Info) *registry.Invocation {
	return &registry.Invocation{
		Function: l.fn,
		Trigger:  info,
		Data:     map[string]any{"TimerTrigger": info.Occurrence.In(l.loc).Format("1/2/2006 3:04:05 PM")},
	}
}

// Listen runs the schedule while this instance holds the listener lock.
func (l *Listener) Listen(ctx context.Context, deliver triggers.Deliver) error {
	return l.lock.Run(ctx, func(ctx context.Context) { l.lead(ctx, deliver) })
}

// lead runs the schedule until ctx ends (shutdown or lost lock).
func (l *Listener) lead(ctx context.Context, deliver triggers.Deliver) {
	var st *ScheduleStatus
	for {
		var err error
		st, _, err = l.readStatus(ctx)
		if err == nil {
			break
		}
		l.log.Warn("read schedule status failed; retrying", "error", err)
		select {
		case <-ctx.Done():
			return
		case <-l.clock.After(5 * time.Second):
		}
	}
	now := l.clock.Now()
	next := l.sched.Next(now)
	immediate, pastDue := false, false
	if l.useMonitor && st != nil && !st.Next.IsZero() {
		switch {
		case !st.Last.IsZero() && !l.sched.Next(st.Last).Equal(st.Next):
			l.log.Info("schedule changed; recomputing the next occurrence")
		case now.After(st.Next):
			immediate, pastDue = true, true
		default:
			next = st.Next
		}
	}
	if !immediate && l.runOnStartup && !l.started {
		immediate = true
	}
	l.started = true

	for ctx.Err() == nil {
		var occ time.Time
		if immediate {
			occ = l.clock.Now()
		} else {
			if d := next.Sub(l.clock.Now()); d > 0 {
				l.log.Debug("timer armed", "next", next)
				select {
				case <-ctx.Done():
					return
				case <-l.clock.After(d):
				}
				if l.clock.Now().Before(next) {
					continue // woke early; wait for the rest
				}
			}
			// Woken late (a suspended process): fire once, for the latest
			// occurrence that is due.
			occ = l.latestDue(next, l.clock.Now())
		}
		prev, claimed, err := l.claim(ctx, occ)
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			l.log.Warn("claim occurrence failed; skipping it", "occurrence", occ, "error", err)
		case !claimed:
			l.log.Debug("occurrence already fired elsewhere", "occurrence", occ)
		default:
			info := &Info{Schedule: l.sched, IsPastDue: pastDue, Occurrence: occ}
			if l.useMonitor {
				info.ScheduleStatus = prev
				if info.ScheduleStatus == nil {
					info.ScheduleStatus = &ScheduleStatus{}
				}
			}
			if _, err := deliver(ctx, l.invocation(info)); err != nil && ctx.Err() == nil {
				l.log.Warn("timer function failed", "occurrence", occ, "error", err)
			}
		}
		immediate, pastDue = false, false
		// Overdue after a long run: fire at once, for the latest missed occurrence.
		next = l.latestDue(l.sched.Next(occ), l.clock.Now())
	}
}

// latestDue returns the last occurrence at or before now, starting from
// next; next itself when it is not yet due.
func (l *Listener) latestDue(next, now time.Time) time.Time {
	for i := 0; i < 1_000_000 && !next.After(now); i++ {
		n := l.sched.Next(next)
		if n.After(now) || n.IsZero() {
			break
		}
		next = n
	}
	return next
}

// claim records occ as fired in the status blob, conditionally on the ETag
// read, and reports whether this instance won it. prev is the status before.
func (l *Listener) claim(ctx context.Context, occ time.Time) (prev *ScheduleStatus, claimed bool, err error) {
	for range 5 {
		st, etag, err := l.readStatus(ctx)
		if err != nil {
			return nil, false, err
		}
		if st != nil && !st.Last.Before(occ) {
			return st, false, nil
		}
		next := &ScheduleStatus{Last: occ, Next: l.sched.Next(occ), LastUpdated: l.clock.Now()}
		err = l.writeStatus(ctx, next, etag)
		if err == nil {
			return st, true, nil
		}
		if !storage.IsConflict(err) {
			return nil, false, err
		}
		// Someone else wrote the status in between: read it again.
	}
	return nil, false, fmt.Errorf("status blob keeps changing")
}

// readStatus returns the status (nil when there is none) and its ETag.
func (l *Listener) readStatus(ctx context.Context) (*ScheduleStatus, *azcore.ETag, error) {
	res, err := l.status.DownloadStream(ctx, nil)
	if storage.IsNotFound(err) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read schedule status: %w", err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("read schedule status: %w", err)
	}
	var st ScheduleStatus
	if len(bytes.TrimSpace(data)) > 0 {
		if err := json.Unmarshal(data, &st); err != nil {
			l.log.Warn("schedule status is not valid JSON; replacing it", "error", err)
			st = ScheduleStatus{}
		}
	}
	return &st, res.ETag, nil
}

// writeStatus writes st if the blob still has etag (nil: if it does not exist).
func (l *Listener) writeStatus(ctx context.Context, st *ScheduleStatus, etag *azcore.ETag) error {
	data, err := json.Marshal(st)
	if err != nil {
		return err
	}
	cond := &blob.ModifiedAccessConditions{IfMatch: etag}
	if etag == nil {
		cond = &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}
	}
	opts := &blockblob.UploadBufferOptions{AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: cond}}
	_, err = l.status.UploadBuffer(ctx, data, opts)
	if storage.ErrorCode(err) == "ContainerNotFound" {
		if err = storage.CreateContainer(ctx, l.blob, singleton.HostsContainer); err != nil {
			return err
		}
		_, err = l.status.UploadBuffer(ctx, data, opts)
	}
	return err
}
