package durable

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/triggers/httptrigger"
)

// Binding type names of the durable triggers and the client binding, as
// function.json spells them.
const (
	OrchestrationTriggerType = "orchestrationTrigger"
	ActivityTriggerType      = "activityTrigger"
	EntityTriggerType        = "entityTrigger"
	ClientBindingType        = "durableClient"
)

// ClientService is the name under which the durable host extension offers
// its [ClientProvider] in bindings.Env.Services.
const ClientService = "durableClient"

// RegisterOrchestrator registers orchestrator function name in the host's
// function registry (trigger type orchestrationTrigger). The durable
// extension runs it; it is never invoked through the HTTP or admin paths.
func RegisterOrchestrator(r *registry.Registry, name string, o Orchestrator, opts ...registry.Option) error {
	if o == nil {
		return fmt.Errorf("orchestrator %s: nil function", name)
	}
	return r.Add(registry.Function{
		Name: name,
		Trigger: bindings.Binding{Type: OrchestrationTriggerType, Direction: bindings.In, Name: "context",
			Properties: map[string]any{"orchestration": name}},
		Handler: orchestratorHandler{name: name, o: o},
	}, opts...)
}

// RegisterActivity registers activity function name (trigger type
// activityTrigger). Every call runs through the host's invocation pipeline:
// it gets an invocation id, log fields, the functionTimeout, panic recovery,
// and output bindings flushed only when it succeeds.
func RegisterActivity(r *registry.Registry, name string, a ActivityFunc, opts ...registry.Option) error {
	if a == nil {
		return fmt.Errorf("activity %s: nil function", name)
	}
	return r.Add(registry.Function{
		Name: name,
		Trigger: bindings.Binding{Type: ActivityTriggerType, Direction: bindings.In, Name: "input",
			Properties: map[string]any{"activity": name}},
		Handler: activityHandler{a: a},
	}, opts...)
}

// OrchestratorOf returns the orchestrator behind a function registered with
// [RegisterOrchestrator].
func OrchestratorOf(fn *registry.Function) (Orchestrator, bool) {
	h, ok := fn.Handler.(orchestratorHandler)
	return h.o, ok
}

// ActivityOf returns the activity behind a function registered with
// [RegisterActivity].
func ActivityOf(fn *registry.Function) (ActivityFunc, bool) {
	h, ok := fn.Handler.(activityHandler)
	return h.a, ok
}

type orchestratorHandler struct {
	name string
	o    Orchestrator
}

func (h orchestratorHandler) Invoke(context.Context, *registry.Invocation) (any, error) {
	return nil, fmt.Errorf("orchestrator %s is run by the durable engine; start it with a durable client (POST /runtime/webhooks/durabletask/orchestrators/%s)", h.name, h.name)
}

// ActivityCall is the trigger value of an activity invocation that the
// durable worker hands to the host pipeline.
type ActivityCall struct {
	// Info describes the call.
	Info ActivityInfo
	// Run runs the activity with the pipeline's context.
	Run func(ctx context.Context) (any, error)
}

type activityHandler struct{ a ActivityFunc }

func (h activityHandler) Invoke(ctx context.Context, inv *registry.Invocation) (any, error) {
	switch t := inv.Trigger.(type) {
	case *ActivityCall:
		return t.Run(ctx)
	case string:
		// A manual run (POST /admin/functions/{name}): the input is JSON, or
		// a plain string.
		in := json.RawMessage(t)
		if !json.Valid(in) {
			in, _ = json.Marshal(t)
		}
		return h.a(ctx, in)
	case nil:
		return h.a(ctx, json.RawMessage("null"))
	}
	return nil, fmt.Errorf("activity trigger value is %T, not *durable.ActivityCall", inv.Trigger)
}

// ClientProvider is what the durable host extension offers to durableClient
// bindings.
type ClientProvider interface {
	// DurableClient returns the task hub's client.
	DurableClient() *Client
	// CheckStatus returns the Durable Functions check-status payload of
	// instance id (management URLs under baseURL, such as
	// "http://127.0.0.1:7071") and its status query URL.
	CheckStatus(baseURL, instanceID string) (payload any, statusURL string)
	// BindingData returns the durableClient binding data language SDKs read
	// (taskHubName, creationUrls, managementUrls, baseUrl, ...).
	BindingData(baseURL string) any
}

// ClientBinding is a durableClient input binding: it gives a function the
// durable client of the host's task hub.
type ClientBinding struct {
	md bindings.Binding
	p  ClientProvider
}

var (
	_ bindings.Declared = (*ClientBinding)(nil)
	_ bindings.Binder   = (*ClientBinding)(nil)
)

// ClientInput declares a durableClient binding named name.
func ClientInput(name string) *ClientBinding {
	return &ClientBinding{md: bindings.Binding{Type: ClientBindingType, Direction: bindings.In, Name: name, Properties: map[string]any{}}}
}

// Metadata returns the function.json entry.
func (c *ClientBinding) Metadata() bindings.Binding { return c.md }

// Bind finds the durable extension's client.
func (c *ClientBinding) Bind(env *bindings.Env) error {
	p, ok := env.Service(ClientService).(ClientProvider)
	if !ok {
		return errors.New("durableClient binding: the durable task extension is not enabled in this host")
	}
	if be, ok := p.(interface{ BindError() error }); ok {
		if err := be.BindError(); err != nil {
			return err
		}
	}
	c.p = p
	return nil
}

// Client returns the durable client. It panics when the binding was not
// bound, which only happens outside a host.
func (c *ClientBinding) Client() *Client {
	if c.p == nil {
		panic("durable: ClientBinding used before the host bound it")
	}
	return c.p.DurableClient()
}

// BindingData returns the durableClient binding data for the request's
// host, as language SDKs expect it.
func (c *ClientBinding) BindingData(req *httptrigger.Request) any {
	return c.p.BindingData(baseURL(req))
}

// CheckStatusResponse is the answer of an HTTP starter, as Durable
// Functions' CreateCheckStatusResponse: 202 with the management URLs of
// instance id, a Location header pointing at its status and Retry-After.
func (c *ClientBinding) CheckStatusResponse(req *httptrigger.Request, id string) *httptrigger.Response {
	payload, loc := c.p.CheckStatus(baseURL(req), id)
	resp := httptrigger.JSON(http.StatusAccepted, payload)
	resp.Header.Set("Location", loc)
	resp.Header.Set("Retry-After", "10")
	return resp
}

// baseURL is scheme://host of the request, as the management URLs need.
func baseURL(req *httptrigger.Request) string {
	scheme := "http"
	if req.Raw != nil && req.Raw.TLS != nil {
		scheme = "https"
	}
	if p := req.Header.Get("X-Forwarded-Proto"); p != "" {
		scheme = strings.ToLower(strings.TrimSpace(strings.Split(p, ",")[0]))
	}
	host := ""
	if req.Raw != nil {
		host = req.Raw.Host
	}
	if host == "" && req.URL != nil {
		host = req.URL.Host
	}
	return scheme + "://" + host
}
