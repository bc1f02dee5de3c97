// Package triggers owns the trigger plugin contract: how a binding type name
// ("timerTrigger", "queueTrigger", ...) maps to a plugin that listens for one
// function's trigger and delivers invocations to the host's pipeline.
//
// Each trigger is its own package under triggers/ and registers itself
// explicitly (no init side effects): the host calls, for example,
// queue.Register(r). Adding a trigger therefore touches one new package and
// one line of host wiring.
package triggers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/host/registry"
)

// Deliver runs one invocation through the host's pipeline (invocation id,
// logging, timeout, panic recovery, retries, output flush). A nil error means
// the handler succeeded and its outputs are durably written, so the trigger
// may acknowledge its source (delete the message, complete the receipt).
// inv.Function must be set; the pipeline fills in ID and Logger.
type Deliver func(ctx context.Context, inv *registry.Invocation) (any, error)

// Listener listens for one function's trigger.
type Listener interface {
	// Listen blocks, delivering invocations, until ctx is cancelled; then it
	// stops taking new work, waits for in-flight deliveries and returns nil.
	// Any other return is a fatal error for the listener.
	Listen(ctx context.Context, deliver Deliver) error
}

// Factory builds a listener for fn. Errors (bad properties, unresolved
// settings) stop the host at start-up and should name the function and property.
type Factory func(env *bindings.Env, fn *registry.Function) (Listener, error)

// Registry maps binding type names to trigger factories. Type names match
// case-insensitively, as function.json does.
type Registry struct {
	mu sync.RWMutex
	m  map[string]Factory
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{m: map[string]Factory{}} }

// Register adds a factory. It panics on an empty name, a nil factory or a
// duplicate, which are programming errors in host wiring.
func (r *Registry) Register(typeName string, f Factory) {
	if typeName == "" || f == nil {
		panic("triggers: Register with empty type name or nil factory")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	key := strings.ToLower(typeName)
	if _, dup := r.m[key]; dup {
		panic("triggers: Register called twice for " + typeName)
	}
	r.m[key] = f
}

// Lookup returns the factory for a type name; the error lists known types.
func (r *Registry) Lookup(typeName string) (Factory, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if f, ok := r.m[strings.ToLower(typeName)]; ok {
		return f, nil
	}
	known := make([]string, 0, len(r.m))
	for k := range r.m {
		known = append(known, k)
	}
	slices.Sort(known)
	return nil, fmt.Errorf("unknown trigger type %q (known: %s)", typeName, strings.Join(known, ", "))
}

// ListenerFunc adapts a function to [Listener].
type ListenerFunc func(ctx context.Context, deliver Deliver) error

// Listen calls f.
func (f ListenerFunc) Listen(ctx context.Context, deliver Deliver) error { return f(ctx, deliver) }

// ManualTrigger is an optional Listener capability: building an invocation
// from the admin endpoint's {"input": "..."} body (POST /admin/functions/{name}),
// as the Azure Functions host does for non-HTTP functions. Listeners without
// it receive the input string as the trigger value.
type ManualTrigger interface {
	ManualInvocation(input string) (*registry.Invocation, error)
}
