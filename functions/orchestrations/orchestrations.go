// Package orchestrations holds the app's durable samples: the classic
// Durable Functions patterns written against the durable package.
//
//   - HelloSequence: function chaining; calls SayHello for Tokyo, Seattle and
//     London and returns the three greetings.
//   - FanOutFanIn: input n; runs n Square activities in parallel and returns
//     the sum of their results.
//   - ApprovalWorkflow: waits for the external event Approval, racing a
//     durable timer (timeoutSeconds, default 24 h), and returns the event's
//     data or that it timed out.
//   - RetryDemo: calls FlakyStep, which fails its first `failures` attempts,
//     under a retry policy, and returns the number of attempts it took.
//   - Chain: input {"steps": n, "delayMs": d}; n ChainStep activities one
//     after the other, each adding its index to a running total.
//   - EchoPayload: returns its input after a round trip through the Echo
//     activity (large payloads spill to blobs on the way).
//   - HttpStart: POST /api/orchestrators/{functionName}/{instanceId?} starts
//     any orchestrator with the request body as input and answers with the
//     check-status payload.
//   - DurableClientInfo: GET /api/durable/client (master key) answers the
//     binding data of its durableClient binding, from which language SDKs
//     build their durable clients.
package orchestrations

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/stratus-dev/stratus/durable"
	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/triggers/httptrigger"
)

// Register adds the durable samples.
func Register(r *registry.Registry) error {
	return errors.Join(
		durable.RegisterOrchestrator(r, "HelloSequence", durable.Orchestration(helloSequence)),
		durable.RegisterActivity(r, "SayHello", durable.Activity(sayHello)),
		durable.RegisterOrchestrator(r, "FanOutFanIn", durable.Orchestration(fanOutFanIn)),
		durable.RegisterActivity(r, "Square", durable.Activity(square)),
		durable.RegisterOrchestrator(r, "ApprovalWorkflow", durable.Orchestration(approvalWorkflow)),
		durable.RegisterOrchestrator(r, "RetryDemo", durable.Orchestration(retryDemo)),
		durable.RegisterActivity(r, "FlakyStep", durable.Activity(flaky.step)),
		durable.RegisterOrchestrator(r, "Chain", durable.Orchestration(chain)),
		durable.RegisterActivity(r, "ChainStep", durable.Activity(chainStep)),
		durable.RegisterOrchestrator(r, "EchoPayload", durable.Orchestration(echoPayload)),
		durable.RegisterActivity(r, "Echo", durable.Activity(echo)),
		registerStarter(r),
		registerClientInfo(r),
	)
}

func helloSequence(ctx *durable.OrchestrationContext, _ any) ([]string, error) {
	var out []string
	for _, city := range []string{"Tokyo", "Seattle", "London"} {
		greeting, err := durable.Await[string](ctx.CallActivity("SayHello", city))
		if err != nil {
			return nil, err
		}
		out = append(out, greeting)
	}
	return out, nil
}

func sayHello(ctx context.Context, name string) (string, error) {
	if name == "" {
		return "", errors.New("SayHello needs a name")
	}
	return "Hello " + name + "!", nil
}

func fanOutFanIn(ctx *durable.OrchestrationContext, n int) (int, error) {
	if n < 0 || n > 10000 {
		return 0, fmt.Errorf("FanOutFanIn takes a number from 0 to 10000, not %d", n)
	}
	tasks := make([]durable.Task, n)
	for i := range n {
		tasks[i] = ctx.CallActivity("Square", i+1)
	}
	if err := ctx.WhenAll(tasks...); err != nil {
		return 0, err
	}
	sum := 0
	for _, t := range tasks {
		v, err := durable.Await[int](t)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

func square(ctx context.Context, x int) (int, error) { return x * x, nil }

// ApprovalResult is ApprovalWorkflow's output.
type ApprovalResult struct {
	// Approved is the Approval event's data; absent on timeout.
	Approval json.RawMessage `json:"approval,omitempty"`
	// TimedOut is true when no Approval arrived before the deadline.
	TimedOut bool `json:"timedOut"`
	// Request is the workflow's input.
	Request json.RawMessage `json:"request"`
}

func approvalWorkflow(ctx *durable.OrchestrationContext, in json.RawMessage) (ApprovalResult, error) {
	var opts struct {
		TimeoutSeconds float64 `json:"timeoutSeconds"`
	}
	if len(in) > 0 && in[0] == '{' {
		if err := json.Unmarshal(in, &opts); err != nil {
			return ApprovalResult{}, fmt.Errorf("ApprovalWorkflow input: %w", err)
		}
	}
	timeout := 24 * time.Hour
	if opts.TimeoutSeconds > 0 {
		timeout = time.Duration(opts.TimeoutSeconds * float64(time.Second))
	}
	res := ApprovalResult{Request: in}
	ctx.SetCustomStatus(map[string]any{"waitingFor": "Approval", "deadline": ctx.CurrentUTCTime().Add(timeout)})
	var approval json.RawMessage
	err := ctx.WaitForExternalEvent("Approval", durable.WithTimeout(timeout)).Await(&approval)
	switch {
	case errors.Is(err, durable.ErrTimeout):
		res.TimedOut = true
	case err != nil:
		return res, err
	default:
		res.Approval = approval
	}
	ctx.SetCustomStatus(nil)
	return res, nil
}

func registerStarter(r *registry.Registry) error {
	client := durable.ClientInput("starter")
	return r.Add(httptrigger.Function("HttpStart",
		httptrigger.Trigger{Route: "orchestrators/{functionName}/{instanceId?}", Methods: []string{"POST"}, AuthLevel: httptrigger.Anonymous},
		func(ctx context.Context, req *httptrigger.Request) (*httptrigger.Response, error) {
			var input any
			if len(req.Body) > 0 {
				if !json.Valid(req.Body) {
					return httptrigger.Text(http.StatusBadRequest, "the request body must be JSON (the orchestrator's input)"), nil
				}
				input = json.RawMessage(req.Body)
			}
			var opts []durable.StartOption
			if id := req.Params["instanceId"]; id != "" {
				opts = append(opts, durable.WithStartInstanceID(id))
			}
			name := req.Params["functionName"]
			if fn, ok := r.Lookup(name); !ok || fn.Trigger.Type != durable.OrchestrationTriggerType {
				return httptrigger.Text(http.StatusNotFound, fmt.Sprintf("no orchestrator function named %q", name)), nil
			} else {
				name = fn.Name
			}
			id, err := client.Client().ScheduleNew(ctx, name, input, opts...)
			switch {
			case errors.Is(err, backend.ErrInstanceExists):
				return httptrigger.Text(http.StatusConflict, err.Error()), nil
			case errors.Is(err, durable.ErrInvalidInstanceID):
				return httptrigger.Text(http.StatusBadRequest, err.Error()), nil
			case err != nil:
				return nil, err
			}
			registry.Logger(ctx).Info("started orchestration", "orchestrator", name, "instance_id", id)
			return client.CheckStatusResponse(req, id), nil
		},
		registry.WithBindings(client)))
}
