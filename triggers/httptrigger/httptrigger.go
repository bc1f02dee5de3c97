// Package httptrigger is the HTTP trigger plugin (binding type "httpTrigger"):
// ASP.NET Core style route templates under the host's route prefix, method
// filters, function/host/master keys, and the request and response types HTTP
// handlers use.
//
// The package is named httptrigger rather than http so that it does not
// shadow net/http in the files that use both.
package httptrigger

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/triggers"
)

// TypeName is the binding type this plugin serves.
const TypeName = "httpTrigger"

// AuthLevel is a function's HTTP authorization level.
type AuthLevel string

// Authorization levels.
const (
	// Anonymous functions need no key.
	Anonymous AuthLevel = "anonymous"
	// FunctionLevel functions need a function key, a host key or the master key.
	FunctionLevel AuthLevel = "function"
	// AdminLevel functions need the master key.
	AdminLevel AuthLevel = "admin"
)

// Trigger is an HTTP trigger's configuration (function.json properties).
type Trigger struct {
	// Route is the route template; the function name when empty.
	Route string
	// Methods are the accepted methods; all when empty.
	Methods []string
	// AuthLevel defaults to FunctionLevel, as in Azure Functions.
	AuthLevel AuthLevel
}

// Request is what an HTTP-triggered handler receives.
type Request struct {
	// Method is the HTTP method.
	Method string
	// URL is the full request URL.
	URL *url.URL
	// Header holds the request headers.
	Header http.Header
	// Query holds the query parameters.
	Query url.Values
	// Params holds the route values.
	Params map[string]string
	// Body is the request body (read fully, at most MaxBodyBytes).
	Body []byte
	// Raw is the underlying request, for anything else.
	Raw *http.Request
}

// Bind decodes the JSON body into v with a clear error.
func (r *Request) Bind(v any) error {
	if len(r.Body) == 0 {
		return fmt.Errorf("request body is empty; expected JSON")
	}
	if err := json.Unmarshal(r.Body, v); err != nil {
		return fmt.Errorf("request body is not valid JSON for this function: %w", err)
	}
	return nil
}

// Response is what an HTTP-triggered handler returns.
type Response struct {
	// Status is the HTTP status code (200 when zero).
	Status int
	// Header holds response headers.
	Header http.Header
	// Body is the response body.
	Body []byte
}

// JSON returns a response with v encoded as JSON.
func JSON(status int, v any) *Response {
	b, err := json.Marshal(v)
	if err != nil {
		return Text(http.StatusInternalServerError, "encode response: "+err.Error())
	}
	return &Response{Status: status, Header: http.Header{"Content-Type": {"application/json; charset=utf-8"}}, Body: b}
}

// Text returns a plain-text response.
func Text(status int, s string) *Response {
	return &Response{Status: status, Header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, Body: []byte(s)}
}

// HandlerFunc is the typed handler of an HTTP-triggered function.
type HandlerFunc func(ctx context.Context, req *Request) (*Response, error)

// Function builds a registry.Function with an HTTP trigger.
func Function(name string, t Trigger, h HandlerFunc, opts ...registry.Option) registry.Function {
	props := map[string]any{"authLevel": string(t.level())}
	if len(t.Methods) > 0 {
		ms := make([]any, len(t.Methods))
		for i, m := range t.Methods {
			ms[i] = strings.ToLower(m)
		}
		props["methods"] = ms
	}
	if t.Route != "" {
		props["route"] = t.Route
	}
	fn := registry.Function{
		Name:    name,
		Trigger: bindings.Binding{Type: TypeName, Direction: bindings.In, Name: "req", Properties: props},
		Bindings: []bindings.Declared{
			bindings.Binding{Type: "http", Direction: bindings.Out, Name: "res"},
		},
		Handler: registry.HandlerFunc(func(ctx context.Context, inv *registry.Invocation) (any, error) {
			req, ok := inv.Trigger.(*Request)
			if !ok {
				return nil, fmt.Errorf("function %s: trigger value is %T, not *httptrigger.Request", name, inv.Trigger)
			}
			return h(ctx, req)
		}),
	}
	for _, o := range opts {
		o(&fn)
	}
	return fn
}

func (t Trigger) level() AuthLevel {
	if t.AuthLevel == "" {
		return FunctionLevel
	}
	return t.AuthLevel
}

// TriggerOf reads a Trigger back from function metadata.
func TriggerOf(fn *registry.Function) (Trigger, error) {
	b := fn.Trigger
	t := Trigger{Route: b.String("route"), Methods: b.Strings("methods"), AuthLevel: AuthLevel(strings.ToLower(b.String("authLevel")))}
	switch t.AuthLevel {
	case "":
		t.AuthLevel = FunctionLevel
	case Anonymous, FunctionLevel, AdminLevel:
	default:
		return t, fmt.Errorf("function %s: authLevel %q is not anonymous, function or admin", fn.Name, t.AuthLevel)
	}
	if t.Route == "" {
		t.Route = fn.Name
	}
	for i, m := range t.Methods {
		t.Methods[i] = strings.ToUpper(m)
	}
	return t, nil
}

// Register registers the HTTP trigger plugin, serving routes through router.
func Register(r *triggers.Registry, router *Router) {
	r.Register(TypeName, func(env *bindings.Env, fn *registry.Function) (triggers.Listener, error) {
		t, err := TriggerOf(fn)
		if err != nil {
			return nil, err
		}
		if t.Route, err = env.Settings.Resolve(t.Route); err != nil {
			return nil, fmt.Errorf("function %s: route: %w", fn.Name, err)
		}
		if _, err := router.add(fn, t); err != nil {
			return nil, err
		}
		// The router serves the route through the deliver the host gave it
		// (Router.SetDeliver); the listener only marks the route's lifetime.
		return triggers.ListenerFunc(func(ctx context.Context, _ triggers.Deliver) error {
			<-ctx.Done()
			return nil
		}), nil
	})
}

// MaxBodyBytes bounds request bodies (the Azure Functions host's limit).
const MaxBodyBytes = 100 << 20

func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxBodyBytes {
		return nil, errBodyTooLarge
	}
	return b, nil
}

var errBodyTooLarge = fmt.Errorf("request body exceeds %d bytes", MaxBodyBytes)
