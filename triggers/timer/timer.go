// Package timer owns the timer trigger (binding type "timerTrigger"): parsing
// schedules, the scheduling loop, the schedule status kept in blob storage,
// and firing each occurrence once across all the host processes that share
// a storage account.
//
// # Schedules
//
// NCRONTAB with six fields ({second} {minute} {hour} {day} {month}
// {day-of-week}, parsed with robfig/cron) or five (no seconds), or a TimeSpan
// "hh:mm:ss" (every occurrence is the previous plus the interval). %Setting%
// expressions are resolved. Cron schedules run in the zone named by the app
// setting WEBSITE_TIME_ZONE (IANA name), UTC by default.
//
// # One firing per occurrence
//
// The loop runs only in the instance holding the listener lock, a blob lease
// on azure-webjobs-hosts/locks/{hostId}/Host.Functions.<Name>.Listener
// (host.json singleton.listenerLockPeriod, renewed; the others retry every
// listenerLockRecoveryPollingInterval). A lease alone is not enough: around a
// hand-over (a holder that stalled past its lease, a release racing a new
// acquisition) two instances can both believe they lead. So every firing is
// first claimed in the status blob
// azure-webjobs-hosts/timers/{hostId}/Host.Functions.<Name>/status
// ({"Last","Next","LastUpdated"}): the instance reads it with its ETag, skips
// the occurrence when Last is already at or after it, and otherwise writes
// Last = occurrence, Next = the following occurrence with If-Match on that
// ETag (If-None-Match * when the blob is new). Storage lets exactly one
// conditional write win, and only the winner invokes the function. We chose
// the status blob over a per-occurrence marker blob because it is one blob
// per timer that the host keeps anyway, it costs one read and one write per
// firing, and it doubles as the useMonitor record.
//
// The consequence is that the status is written when an occurrence starts,
// not when it ends as in the Azure Functions host: a process that crashes
// mid-run does not run that occurrence again (at most once per occurrence;
// the function's retry policy handles failures that the process survives).
// When useMonitor is off the blob is still written, as the claim record, but
// it is not used for past-due detection and the handler gets no
// ScheduleStatus.
//
// # useMonitor, runOnStartup, past due
//
// useMonitor defaults to on, and is off when the schedule fires more than
// once a minute. When on, at start (and whenever this instance becomes the
// leader) a stored Next earlier than now means an occurrence was missed: the
// function runs once at once with IsPastDue true (missed runs collapse into
// one). A stored Next that no longer follows from Last under the current
// schedule means the schedule changed: Next is recomputed and nothing is
// past due. Otherwise runOnStartup runs the function once when this process
// first becomes the leader. Runs of one timer never overlap; after a run the
// timer is re-armed from the occurrence, and when the next occurrence is
// already past it fires at once, only for the latest missed occurrence.
package timer

import (
	"context"
	"encoding/json"

	"time"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/triggers"
)

// TypeName is the trigger's binding type.
const TypeName = "timerTrigger"

// Trigger describes a timer trigger binding.
type Trigger struct {
	// Schedule is an NCRONTAB expression or a TimeSpan; %Setting% allowed.
	Schedule string
	// RunOnStartup runs the function when the host starts.
	RunOnStartup bool
	// UseMonitor overrides the useMonitor default (on unless the schedule
	// fires more than once a minute).
	UseMonitor *bool
	// Name is the binding name; "timer" when empty.
	Name string
}

// Binding returns the function.json binding.
func (t Trigger) Binding() bindings.Binding {
	name := t.Name
	if name == "" {
		name = "timer"
	}
	props := map[string]any{"schedule": t.Schedule}
	if t.RunOnStartup {
		props["runOnStartup"] = true
	}
	if t.UseMonitor != nil {
		props["useMonitor"] = *t.UseMonitor
	}
	return bindings.Binding{Type: TypeName, Direction: bindings.In, Name: name, Properties: props}
}

// ScheduleStatus is the stored schedule status.
type ScheduleStatus struct {
	// Last is the last occurrence that fired.
	Last time.Time `json:"Last"`
	// Next is the occurrence expected after Last.
	Next time.Time `json:"Next"`
	// LastUpdated is when the status was written.
	LastUpdated time.Time `json:"LastUpdated"`
}

// Info is the timer value a handler receives (TimerInfo).
type Info struct {
	// Schedule is the timer's schedule.
	Schedule Schedule
	// ScheduleStatus is the status before this run; nil when useMonitor is off.
	ScheduleStatus *ScheduleStatus
	// IsPastDue reports that this run is for an occurrence missed while no
	// host was running.
	IsPastDue bool
	// Occurrence is the scheduled time this run is for (the current time for
	// past-due, startup and manual runs). Not part of TimerInfo's JSON.
	Occurrence time.Time
}

// MarshalJSON writes TimerInfo as the Azure Functions host sends it.
func (i *Info) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Schedule       json.RawMessage
		ScheduleStatus *ScheduleStatus
		IsPastDue      bool
	}{scheduleJSON(), i.ScheduleStatus, i.IsPastDue})
}

// Function builds a timer-triggered function.
func Function(name string, t Trigger, handler func(ctx context.Context, info *Info) error, opts ...registry.Option) registry.Function {
	fn := registry.Function{
		Name:    name,
		Trigger: t.Binding(),
		Handler: registry.HandlerFunc(func(ctx context.Context, inv *registry.Invocation) (any, error) {
			info, ok := inv.Trigger.(*Info)
			if !ok {
				info = &Info{Occurrence: time.Now().UTC()}
			}
			return nil, handler(ctx, info)
		}),
	}
	for _, o := range opts {
		o(&fn)
	}
	return fn
}

// Register registers the timer trigger plugin under "timerTrigger".
func Register(r *triggers.Registry) { r.Register(TypeName, New) }

// New is the timerTrigger factory.
func New(env *bindings.Env, fn *registry.Function) (triggers.Listener, error) {
	return NewListener(env, fn)
}
