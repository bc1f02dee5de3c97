package durable_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/stratus-dev/stratus/durable"
	"github.com/stratus-dev/stratus/durable/backend/memory"
)

// host runs a worker over an in-memory task hub for the examples and
// returns a client and a function that stops the worker.
func host(orchestrators map[string]durable.Orchestrator, activities map[string]durable.ActivityFunc) (*durable.Client, func()) {
	b := memory.New()
	w := durable.NewWorker(b, durable.WorkerOptions{
		Orchestrators: func(n string) (durable.Orchestrator, bool) { o, ok := orchestrators[n]; return o, ok },
		Activities:    func(n string) (durable.ActivityFunc, bool) { a, ok := activities[n]; return a, ok },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	return durable.NewClient(b), func() { cancel(); <-done }
}

// Function chaining: an orchestrator calls an activity three times, one
// after the other.
func ExampleOrchestration() {
	client, stop := host(
		map[string]durable.Orchestrator{"HelloSequence": durable.Orchestration(func(ctx *durable.OrchestrationContext, _ any) ([]string, error) {
			var out []string
			for _, city := range []string{"Tokyo", "Seattle", "London"} {
				g, err := durable.Await[string](ctx.CallActivity("SayHello", city))
				if err != nil {
					return nil, err
				}
				out = append(out, g)
			}
			return out, nil
		})},
		map[string]durable.ActivityFunc{"SayHello": durable.Activity(func(_ context.Context, name string) (string, error) {
			return "Hello " + name + "!", nil
		})},
	)
	defer stop()
	ctx := context.Background()
	id, _ := client.ScheduleNew(ctx, "HelloSequence", nil)
	st, _ := client.WaitForCompletion(ctx, id)
	fmt.Println(st.RuntimeStatus, st.Output)
	// Output: Completed ["Hello Tokyo!","Hello Seattle!","Hello London!"]
}

// Fan-out of multi-step work: each subscription is charged and then
// notified in its own coroutine; all run in parallel.
func ExampleOrchestrationContext_Go() {
	client, stop := host(
		map[string]durable.Orchestrator{"Billing": durable.Orchestration(func(ctx *durable.OrchestrationContext, subs []string) (int, error) {
			ts := make([]durable.Task, len(subs))
			for i, s := range subs {
				ts[i] = ctx.Go(func(ctx *durable.OrchestrationContext) (any, error) {
					cents, err := durable.Await[int](ctx.CallActivity("Charge", s))
					if err != nil {
						return nil, err
					}
					return cents, ctx.CallActivity("Notify", s).Await(nil)
				})
			}
			if err := ctx.WhenAll(ts...); err != nil {
				return 0, err
			}
			total := 0
			for _, t := range ts {
				c, _ := durable.Await[int](t)
				total += c
			}
			return total, nil
		})},
		map[string]durable.ActivityFunc{
			"Charge": durable.Activity(func(ctx context.Context, sub string) (int, error) {
				// info.IdempotencyKey is stable across retries: pass it to the
				// payment provider so a subscription is never charged twice.
				_, _ = durable.ActivityInfoFrom(ctx)
				return 100 * len(sub), nil
			}),
			"Notify": durable.Activity(func(context.Context, string) (any, error) { return nil, nil }),
		},
	)
	defer stop()
	ctx := context.Background()
	id, _ := client.ScheduleNew(ctx, "Billing", []string{"ann", "bob", "carol"})
	st, _ := client.WaitForCompletion(ctx, id)
	fmt.Println(st.Output)
	// Output: 1100
}

// An approval that races a durable timer.
func ExampleOrchestrationContext_WaitForExternalEvent() {
	client, stop := host(
		map[string]durable.Orchestrator{"Approval": func(ctx *durable.OrchestrationContext) (any, error) {
			var who string
			err := ctx.WaitForExternalEvent("Approval", durable.WithTimeout(72*time.Hour)).Await(&who)
			if errors.Is(err, durable.ErrTimeout) {
				return "timed out", nil
			}
			return "approved by " + who, err
		}},
		nil,
	)
	defer stop()
	ctx := context.Background()
	id, _ := client.ScheduleNew(ctx, "Approval", nil, durable.WithStartInstanceID("order-42"))
	// The event may arrive before the orchestrator waits: it is buffered.
	_ = client.RaiseEvent(ctx, id, "Approval", "ann")
	st, _ := client.WaitForCompletion(ctx, id)
	fmt.Println(st.Output)
	// Output: "approved by ann"
}

// Retries with back-off run on durable timers; a failure that is not
// retried any more surfaces as a *TaskFailedError.
func ExampleWithRetry() {
	calls := 0
	client, stop := host(
		map[string]durable.Orchestrator{"Retry": func(ctx *durable.OrchestrationContext) (any, error) {
			p := durable.RetryPolicy{FirstRetryInterval: time.Millisecond, BackoffCoefficient: 2, MaxAttempts: 3}
			err := ctx.CallActivity("Flaky", nil, durable.WithRetry(p)).Await(nil)
			var tf *durable.TaskFailedError
			if errors.As(err, &tf) {
				return fmt.Sprintf("gave up on %s: %s", tf.TaskName, tf.Details.ErrorMessage), nil
			}
			return "ok", err
		}},
		map[string]durable.ActivityFunc{"Flaky": func(context.Context, json.RawMessage) (any, error) {
			calls++
			return nil, fmt.Errorf("attempt %d failed", calls)
		}},
	)
	defer stop()
	ctx := context.Background()
	id, _ := client.ScheduleNew(ctx, "Retry", nil)
	st, _ := client.WaitForCompletion(ctx, id)
	fmt.Println(st.Output)
	// Output: "gave up on Flaky: attempt 3 failed"
}

// An eternal orchestration restarts itself with ContinueAsNew, which it
// returns.
func ExampleOrchestrationContext_ContinueAsNew() {
	client, stop := host(
		map[string]durable.Orchestrator{"Countdown": durable.Orchestration(func(ctx *durable.OrchestrationContext, n int) (string, error) {
			if n > 0 {
				if err := ctx.Sleep(time.Millisecond); err != nil {
					return "", err
				}
				return "", ctx.ContinueAsNew(n - 1)
			}
			return "lift-off", nil
		})},
		nil,
	)
	defer stop()
	ctx := context.Background()
	id, _ := client.ScheduleNew(ctx, "Countdown", 3)
	st, _ := client.WaitForCompletion(ctx, id)
	fmt.Println(st.Output, st.Generation)
	// Output: "lift-off" 3
}
