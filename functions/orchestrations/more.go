package orchestrations

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/stratus-dev/stratus/durable"
)

// RetryInput is RetryDemo's input.
type RetryInput struct {
	// Failures is how many attempts of FlakyStep fail before one succeeds.
	Failures int `json:"failures"`
	// MaxAttempts bounds the retry policy (default 5).
	MaxAttempts int `json:"maxAttempts"`
}

// RetryResult is RetryDemo's output.
type RetryResult struct {
	// Attempts is the number of FlakyStep attempts the call took.
	Attempts int `json:"attempts"`
	// Key is the idempotency key every attempt saw.
	Key string `json:"key"`
}

func retryDemo(ctx *durable.OrchestrationContext, in RetryInput) (RetryResult, error) {
	if in.MaxAttempts == 0 {
		in.MaxAttempts = 5
	}
	policy := durable.RetryPolicy{FirstRetryInterval: 200 * time.Millisecond, BackoffCoefficient: 2, MaxRetryInterval: 2 * time.Second, MaxAttempts: in.MaxAttempts}
	return durable.Await[RetryResult](ctx.CallActivity("FlakyStep", in.Failures, durable.WithRetry(policy)))
}

// flakySteps counts FlakyStep attempts per idempotency key in this process:
// the same key on every attempt of one call is what makes the count work.
type flakySteps struct {
	mu       sync.Mutex
	attempts map[string]int
}

var flaky = &flakySteps{attempts: map[string]int{}}

func (f *flakySteps) step(ctx context.Context, failures int) (RetryResult, error) {
	info, _ := durable.ActivityInfoFrom(ctx)
	f.mu.Lock()
	f.attempts[info.IdempotencyKey]++
	n := f.attempts[info.IdempotencyKey]
	f.mu.Unlock()
	if n <= failures {
		return RetryResult{}, fmt.Errorf("FlakyStep attempt %d of call %s fails on purpose (%d failures asked)", n, info.IdempotencyKey, failures)
	}
	return RetryResult{Attempts: n, Key: info.IdempotencyKey}, nil
}

// ChainInput is Chain's input.
type ChainInput struct {
	Steps   int `json:"steps"`
	DelayMs int `json:"delayMs"`
}

// chainStepInput is one ChainStep call.
type chainStepInput struct {
	Index   int `json:"index"`
	Total   int `json:"total"`
	DelayMs int `json:"delayMs"`
}

func chain(ctx *durable.OrchestrationContext, in ChainInput) (int, error) {
	if in.Steps < 0 || in.Steps > 1000 {
		return 0, fmt.Errorf("Chain takes 0 to 1000 steps, not %d", in.Steps)
	}
	total := 0
	for i := 1; i <= in.Steps; i++ {
		next, err := durable.Await[int](ctx.CallActivity("ChainStep", chainStepInput{Index: i, Total: total, DelayMs: in.DelayMs}))
		if err != nil {
			return 0, err
		}
		total = next
		ctx.SetCustomStatus(map[string]int{"step": i, "total": total})
	}
	return total, nil
}

func chainStep(ctx context.Context, in chainStepInput) (int, error) {
	if in.DelayMs > 0 {
		select {
		case <-time.After(time.Duration(in.DelayMs) * time.Millisecond):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return in.Total + in.Index, nil
}

func echoPayload(ctx *durable.OrchestrationContext, in json.RawMessage) (json.RawMessage, error) {
	return durable.Await[json.RawMessage](ctx.CallActivity("Echo", in))
}

func echo(ctx context.Context, in json.RawMessage) (json.RawMessage, error) { return in, nil }
