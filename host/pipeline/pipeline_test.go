package pipeline

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/host/config"
	"github.com/stratus-dev/stratus/host/registry"
)

func fn(trigger string, h registry.HandlerFunc) *registry.Function {
	return &registry.Function{Name: "F", Trigger: bindings.Binding{Type: trigger}, Handler: h}
}

func TestPanicBecomesError(t *testing.T) {
	t.Parallel()
	p := &Pipeline{}
	inv := &registry.Invocation{Function: fn("httpTrigger", func(context.Context, *registry.Invocation) (any, error) { panic("boom") })}
	_, err := p.Deliver(context.Background(), inv)
	var pe *PanicError
	if !errors.As(err, &pe) || pe.Value != "boom" || !strings.Contains(pe.Stack, "pipeline_test.go") {
		t.Fatalf("err = %v, want PanicError with stack", err)
	}
	if inv.ID == "" {
		t.Fatal("invocation got no id")
	}
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	p := &Pipeline{Timeout: 20 * time.Millisecond}
	release := make(chan struct{})
	defer close(release)
	inv := &registry.Invocation{Function: fn("queueTrigger", func(ctx context.Context, _ *registry.Invocation) (any, error) {
		<-release // ignores its context, like a stuck handler
		return nil, nil
	})}
	_, err := p.Deliver(context.Background(), inv)
	var te *TimeoutError
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "Functions.F") {
		t.Fatalf("err = %v, want TimeoutError", err)
	}
}

func TestOutputsFlushOnlyOnSuccess(t *testing.T) {
	t.Parallel()
	var flushed atomic.Int32
	write := registry.PendingFunc(func(context.Context) error { flushed.Add(1); return nil })
	p := &Pipeline{}
	ok := &registry.Invocation{Function: fn("queueTrigger", func(ctx context.Context, inv *registry.Invocation) (any, error) {
		registry.FromContext(ctx).Defer(write)
		return "done", nil
	})}
	if out, err := p.Deliver(context.Background(), ok); err != nil || out != "done" {
		t.Fatalf("Deliver = %v, %v", out, err)
	}
	failed := &registry.Invocation{Function: fn("queueTrigger", func(ctx context.Context, inv *registry.Invocation) (any, error) {
		registry.FromContext(ctx).Defer(write)
		return nil, errors.New("no")
	})}
	if _, err := p.Deliver(context.Background(), failed); err == nil {
		t.Fatal("want error")
	}
	if got := flushed.Load(); got != 1 {
		t.Fatalf("flushed %d outputs, want 1 (the failed invocation's output must be dropped)", got)
	}
}

func TestRetryPolicyAppliesToQueueAndTimerOnly(t *testing.T) {
	t.Parallel()
	d := config.TimeSpan(time.Millisecond)
	policy := &config.RetryPolicy{Strategy: "fixedDelay", MaxRetryCount: 2, DelayInterval: &d}
	p := &Pipeline{Retry: policy, RetryTriggers: DefaultRetryTriggers}
	for _, tc := range []struct {
		trigger string
		calls   int32
	}{{"timerTrigger", 3}, {"queueTrigger", 3}, {"httpTrigger", 1}} {
		var calls atomic.Int32
		inv := &registry.Invocation{Function: fn(tc.trigger, func(context.Context, *registry.Invocation) (any, error) {
			calls.Add(1)
			return nil, errors.New("fail")
		})}
		_, _ = p.Deliver(context.Background(), inv)
		if calls.Load() != tc.calls {
			t.Errorf("%s: %d calls, want %d", tc.trigger, calls.Load(), tc.calls)
		}
	}
}

func TestCloseRejectsNewWork(t *testing.T) {
	t.Parallel()
	p := &Pipeline{}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err := p.Deliver(context.Background(), &registry.Invocation{Function: fn("httpTrigger", func(context.Context, *registry.Invocation) (any, error) { return nil, nil })})
	if !errors.Is(err, ErrShuttingDown) {
		t.Fatalf("err = %v", err)
	}
}

func TestFunctionRetryPolicyWinsOverHost(t *testing.T) {
	t.Parallel()
	ms := config.TimeSpan(time.Millisecond)
	host := &config.RetryPolicy{Strategy: "fixedDelay", MaxRetryCount: 5, DelayInterval: &ms}
	p := &Pipeline{Retry: host, RetryTriggers: DefaultRetryTriggers}
	var calls atomic.Int32
	var retryCounts []int
	f := fn("timerTrigger", func(_ context.Context, inv *registry.Invocation) (any, error) {
		calls.Add(1)
		retryCounts = append(retryCounts, inv.RetryCount)
		return nil, errors.New("fail")
	})
	f.Retry = &config.RetryPolicy{Strategy: "exponentialBackoff", MaxRetryCount: 1, MinimumInterval: &ms, MaximumInterval: &ms}
	inv := &registry.Invocation{Function: f}
	if _, err := p.Deliver(context.Background(), inv); err == nil {
		t.Fatal("want the last attempt's error")
	}
	if calls.Load() != 2 || inv.RetryCount != 1 || retryCounts[0] != 0 || retryCounts[1] != 1 {
		t.Fatalf("%d calls with retry counts %v, want 2 (the function's maxRetryCount 1 wins over the host's 5)", calls.Load(), retryCounts)
	}
}

func TestCloseEndsRetryWaits(t *testing.T) {
	t.Parallel()
	hour := config.TimeSpan(time.Hour)
	p := &Pipeline{Retry: &config.RetryPolicy{Strategy: "fixedDelay", MaxRetryCount: -1, DelayInterval: &hour}, RetryTriggers: DefaultRetryTriggers}
	failed := make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		_, err := p.Deliver(context.Background(), &registry.Invocation{Function: fn("queueTrigger", func(context.Context, *registry.Invocation) (any, error) {
			failed <- struct{}{}
			return nil, errors.New("fail")
		})})
		done <- err
	}()
	<-failed
	// The invocation now waits an hour for its retry; shutting down ends it.
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil || err.Error() != "fail" {
		t.Fatalf("Deliver = %v, want the failed attempt's error", err)
	}
}
