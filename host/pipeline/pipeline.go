// Package pipeline owns the invocation pipeline every function invocation goes
// through, whatever its trigger: an invocation id, structured log fields, the
// functionTimeout, panic recovery, the invocation retry policy (timer and queue
// triggers), and the flush of buffered output bindings, which happens only
// after the handler succeeded.
package pipeline

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/host/config"
	"github.com/stratus-dev/stratus/host/registry"
)

// Pipeline runs invocations. It is safe for concurrent use.
type Pipeline struct {
	// Logger is the host logger; invocations log with function and
	// invocation_id fields added.
	Logger *slog.Logger
	// Timeout bounds each attempt; 0 means unbounded.
	Timeout time.Duration
	// Retry is the host-wide retry policy (host.json "retry"); a function's
	// own policy wins.
	Retry *config.RetryPolicy
	// RetryTriggers are the trigger types the retry policy applies to.
	RetryTriggers map[string]bool

	inflight sync.WaitGroup
	mu       sync.Mutex
	closed   bool
	stopping chan struct{} // closed by Close: retry waits end
}

// stop returns the channel Close closes.
func (p *Pipeline) stop() chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping == nil {
		p.stopping = make(chan struct{})
	}
	return p.stopping
}

// DefaultRetryTriggers are the trigger types whose invocations the Azure
// Functions host retries by policy; queue and blob triggers retry through
// their dequeue count in addition.
var DefaultRetryTriggers = map[string]bool{"timerTrigger": true, "queueTrigger": true}

// PanicError is a handler panic turned into an error.
type PanicError struct {
	Value any
	Stack string
}

func (e *PanicError) Error() string { return fmt.Sprintf("function panicked: %v", e.Value) }

// TimeoutError reports an attempt that exceeded functionTimeout.
type TimeoutError struct {
	Function string
	Timeout  time.Duration
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("timeout value of %s was exceeded by function: Functions.%s", config.FormatTimeSpan(e.Timeout), e.Function)
}

// ErrShuttingDown is returned for invocations that arrive after Close.
var ErrShuttingDown = errors.New("host is shutting down")

// Deliver runs inv (inv.Function must be set) and returns the handler's
// value. A nil error means the handler succeeded and its outputs are flushed.
func (p *Pipeline) Deliver(ctx context.Context, inv *registry.Invocation) (any, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrShuttingDown
	}
	p.inflight.Add(1)
	p.mu.Unlock()
	defer p.inflight.Done()

	fn := inv.Function
	if inv.ID == "" {
		inv.ID = bindings.NewGUID()
	}
	log := p.Logger
	if log == nil {
		log = slog.Default()
	}
	inv.Logger = log.With("category", "Function."+fn.Name, "function", fn.Name, "invocation_id", inv.ID)

	var policy *config.RetryPolicy
	if p.RetryTriggers[fn.Trigger.Type] {
		policy = cmp.Or(fn.Retry, p.Retry)
	}
	for {
		out, err := p.attempt(ctx, inv)
		if err == nil {
			return out, nil
		}
		if policy == nil || ctx.Err() != nil || (policy.MaxRetryCount >= 0 && inv.RetryCount >= policy.MaxRetryCount) {
			return nil, err
		}
		inv.RetryCount++
		delay := policy.Delay(inv.RetryCount)
		inv.Logger.Warn("invocation failed; retrying", "retry", inv.RetryCount, "max_retries", policy.MaxRetryCount, "delay", delay, "error", err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-p.stop():
			// Shutting down: no new attempts; the trigger's own redelivery
			// (queue visibility, blob receipts) takes over.
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}

func (p *Pipeline) attempt(ctx context.Context, inv *registry.Invocation) (any, error) {
	fn := inv.Function
	start := time.Now()
	inv.Logger.Info("Executing 'Functions."+fn.Name+"'", "reason", reason(fn), "retry", inv.RetryCount)
	actx := registry.WithInvocation(ctx, inv)
	var cancel context.CancelFunc = func() {}
	if p.Timeout > 0 {
		actx, cancel = context.WithTimeout(actx, p.Timeout)
	}
	defer cancel()

	type result struct {
		out any
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				done <- result{err: &PanicError{Value: v, Stack: string(debug.Stack())}}
			}
		}()
		out, err := fn.Handler.Invoke(actx, inv)
		done <- result{out, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-actx.Done():
		if errors.Is(actx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
			res.err = &TimeoutError{Function: fn.Name, Timeout: p.Timeout}
		} else {
			// The caller gave up (shutdown, client went away): wait for the
			// handler, which sees the same cancellation.
			res = <-done
		}
	}
	dur := time.Since(start)
	if res.err == nil {
		// Outputs must become durable even if the trigger's context ends now.
		fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		res.err = inv.FlushOutputs(fctx)
		fcancel()
		if res.err != nil {
			res.err = fmt.Errorf("write outputs: %w", res.err)
		}
	} else {
		inv.DiscardOutputs()
	}
	if res.err != nil {
		attrs := []any{"duration_ms", dur.Milliseconds(), "error", res.err.Error()}
		var pe *PanicError
		if errors.As(res.err, &pe) {
			attrs = append(attrs, "stack", pe.Stack)
		}
		inv.Logger.Error("Executed 'Functions."+fn.Name+"' (Failed)", attrs...)
		return nil, res.err
	}
	inv.Logger.Info("Executed 'Functions."+fn.Name+"' (Succeeded)", "duration_ms", dur.Milliseconds())
	return res.out, nil
}

func reason(fn *registry.Function) string {
	switch fn.Trigger.Type {
	case "httpTrigger":
		return "This function was programmatically called via the host APIs."
	case "timerTrigger":
		return "Timer fired"
	}
	return "New " + fn.Trigger.Type + " event"
}

// Close stops accepting invocations, ends retry waits (the attempt that
// failed is the invocation's last) and waits for in-flight ones until ctx is
// done.
func (p *Pipeline) Close(ctx context.Context) error {
	stopping := p.stop()
	p.mu.Lock()
	if !p.closed {
		p.closed = true
		close(stopping)
	}
	p.mu.Unlock()
	done := make(chan struct{})
	go func() { p.inflight.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("in-flight invocations did not finish: %w", ctx.Err())
	}
}
