package durable

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// Orchestrator is an orchestrator function. Its output is JSON-encoded as the
// instance output; a returned error (other than the one from
// [OrchestrationContext.ContinueAsNew]) fails the instance.
type Orchestrator func(ctx *OrchestrationContext) (any, error)

// Orchestration adapts a typed function to an [Orchestrator]: the instance
// input is decoded into In (a decode error fails the instance with a message
// naming the orchestrator), and Out is the output.
func Orchestration[In, Out any](fn func(ctx *OrchestrationContext, in In) (Out, error)) Orchestrator {
	return func(ctx *OrchestrationContext) (any, error) {
		var in In
		if err := ctx.Input(&in); err != nil {
			return nil, fmt.Errorf("decode input of orchestrator %q: %w", ctx.Name(), err)
		}
		return fn(ctx, in)
	}
}

// ActivityFunc is an activity function. input is the raw JSON input ("null"
// or empty when there is none); the result is JSON-encoded (a
// json.RawMessage is passed through).
type ActivityFunc func(ctx context.Context, input json.RawMessage) (any, error)

// Activity adapts a typed function to an [ActivityFunc]; a decode error of
// the input fails the call with a message naming the activity.
func Activity[In, Out any](fn func(ctx context.Context, in In) (Out, error)) ActivityFunc {
	return func(ctx context.Context, input json.RawMessage) (any, error) {
		var in In
		if len(input) > 0 {
			if err := json.Unmarshal(input, &in); err != nil {
				name := "?"
				if info, ok := ActivityInfoFrom(ctx); ok {
					name = info.Name
				}
				return nil, fmt.Errorf("decode input of activity %q: %w", name, err)
			}
		}
		return fn(ctx, in)
	}
}

// IdempotencyKeyTag is the TaskScheduled tag that carries an activity call's
// idempotency key.
const IdempotencyKeyTag = "stratus.idempotencyKey"

// ActivityInfo describes a running activity call. Activities read it with
// [ActivityInfoFrom].
type ActivityInfo struct {
	// Name is the activity name.
	Name string
	// InstanceID and ExecutionID identify the calling orchestration.
	InstanceID  string
	ExecutionID string
	// TaskScheduledID is the EventID of this attempt's TaskScheduled event.
	TaskScheduledID int
	// DequeueCount counts deliveries of this attempt (1 on the first).
	DequeueCount int
	// IdempotencyKey is the same for every retry attempt and redelivery of
	// one logical call (one CallActivity), and different for every other
	// call, including the same call in a later ContinueAsNew generation.
	// Use it to make side effects such as charges happen once.
	IdempotencyKey string
}

type activityInfoKey struct{}

// ActivityInfoFrom returns the ActivityInfo of the activity call ctx belongs to.
func ActivityInfoFrom(ctx context.Context) (ActivityInfo, bool) {
	info, ok := ctx.Value(activityInfoKey{}).(ActivityInfo)
	return info, ok
}

// WithActivityInfo returns a context carrying info, for code that calls an
// [ActivityFunc] directly (tests, other hosts).
func WithActivityInfo(ctx context.Context, info ActivityInfo) context.Context {
	return context.WithValue(ctx, activityInfoKey{}, info)
}

// Task is the pending result of a durable call. Await blocks the calling
// orchestrator coroutine until the task is done, then decodes the JSON result
// into out (out may be nil) or returns the task's error. Tasks may only be
// awaited inside the orchestrator (or a coroutine of it) that created them.
type Task interface {
	Await(out any) error
	Done() bool
}

// Await awaits t and returns its result decoded as T:
//
//	greeting, err := durable.Await[string](ctx.CallActivity("SayHello", "Tokyo"))
func Await[T any](t Task) (T, error) {
	var v T
	err := t.Await(&v)
	return v, err
}

// CallOption configures CallActivity and CallSubOrchestrator.
type CallOption func(*callOptions)

type callOptions struct {
	retry      *RetryPolicy
	instanceID string
}

// WithRetry retries a failed call under policy p. Each attempt, and each
// back-off timer between attempts, is recorded in history.
func WithRetry(p RetryPolicy) CallOption {
	return func(o *callOptions) { o.retry = &p }
}

// WithInstanceID sets the instance id of a sub-orchestration (by default a
// [OrchestrationContext.NewGUID]). Retries reuse the id.
func WithInstanceID(id string) CallOption {
	return func(o *callOptions) { o.instanceID = id }
}

// EventOption configures WaitForExternalEvent.
type EventOption func(*eventOptions)

type eventOptions struct{ timeout time.Duration }

// WithTimeout makes WaitForExternalEvent race a durable timer of d: if the
// timer fires first, Await returns an error matching [ErrTimeout]. d <= 0
// means no timeout.
func WithTimeout(d time.Duration) EventOption {
	return func(o *eventOptions) { o.timeout = d }
}

// ContinueAsNewOption configures ContinueAsNew.
type ContinueAsNewOption func(*continueOptions)

type continueOptions struct{ keep bool }

// KeepUnprocessedEvents carries external events that arrived but were not
// yet awaited into the new execution (otherwise they are dropped).
func KeepUnprocessedEvents() ContinueAsNewOption {
	return func(o *continueOptions) { o.keep = true }
}

// DefaultMaxRetryInterval is the MaxRetryInterval used when a RetryPolicy
// leaves it zero (Durable Functions' default, six days).
const DefaultMaxRetryInterval = 6 * 24 * time.Hour

// RetryPolicy retries failed activity and sub-orchestration calls, as
// Durable Functions' RetryOptions. The delay after attempt n (1-based) is
// FirstRetryInterval × BackoffCoefficient^(n-1), capped by MaxRetryInterval.
// Retrying stops after MaxAttempts attempts, when Handle returns false, or
// once RetryTimeout has passed since the first attempt was scheduled. Unlike
// DurableTask.Core, no timer is waited for after the last attempt.
type RetryPolicy struct {
	// FirstRetryInterval is the delay before the second attempt; it must be
	// positive.
	FirstRetryInterval time.Duration
	// BackoffCoefficient multiplies the delay after each attempt; 0 means 1.
	BackoffCoefficient float64
	// MaxRetryInterval caps each delay; 0 means DefaultMaxRetryInterval.
	MaxRetryInterval time.Duration
	// MaxAttempts counts all attempts, the first included; < 1 means 1.
	MaxAttempts int
	// RetryTimeout bounds the whole retry window; 0 means unbounded.
	RetryTimeout time.Duration
	// Handle decides whether a failure is retried; nil retries all.
	Handle func(*TaskFailedError) bool
}

func (p *RetryPolicy) validate() error {
	if p.FirstRetryInterval <= 0 {
		return fmt.Errorf("retry policy: FirstRetryInterval must be positive, not %s", p.FirstRetryInterval)
	}
	if p.BackoffCoefficient < 0 {
		return fmt.Errorf("retry policy: BackoffCoefficient must not be negative")
	}
	return nil
}

// nextDelay returns the delay before the next attempt after attempt (1-based)
// failed with failure, or false to stop retrying. firstAt is when the first
// attempt was scheduled, now the current orchestration time.
func (p *RetryPolicy) nextDelay(attempt int, firstAt, now time.Time, failure *TaskFailedError) (time.Duration, bool) {
	maxAttempts := max(p.MaxAttempts, 1)
	if attempt >= maxAttempts {
		return 0, false
	}
	if p.Handle != nil && !p.Handle(failure) {
		return 0, false
	}
	if p.RetryTimeout > 0 && !now.Before(firstAt.Add(p.RetryTimeout)) {
		return 0, false
	}
	coeff := p.BackoffCoefficient
	if coeff == 0 {
		coeff = 1
	}
	maxInterval := p.MaxRetryInterval
	if maxInterval <= 0 {
		maxInterval = DefaultMaxRetryInterval
	}
	d := float64(p.FirstRetryInterval) * math.Pow(coeff, float64(attempt-1))
	if math.IsInf(d, 0) || math.IsNaN(d) || d >= float64(maxInterval) {
		return maxInterval, true
	}
	return time.Duration(d), true
}
