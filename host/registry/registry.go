// Package registry owns the function registry and the invocation model: what a
// function is (a name, one trigger, bindings and a handler), what one
// invocation carries, and the buffer of output-binding writes that is flushed
// only when the handler succeeded.
//
// The registry is the single source that the HTTP server, the trigger plugins,
// the admin endpoints and function.json generation read from.
package registry

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/host/config"
)

// Handler runs one invocation. The value it returns is the function's return
// value ($return): an HTTP response for HTTP triggers, a result for activities.
type Handler interface {
	Invoke(ctx context.Context, inv *Invocation) (any, error)
}

// HandlerFunc adapts a plain function to [Handler].
type HandlerFunc func(ctx context.Context, inv *Invocation) (any, error)

// Invoke calls f.
func (f HandlerFunc) Invoke(ctx context.Context, inv *Invocation) (any, error) { return f(ctx, inv) }

// Function is one registered function.
type Function struct {
	// Name is the function name (letters, digits, '_' and '-', starting with a letter).
	Name string
	// Trigger is the trigger binding's metadata; its Type selects the trigger plugin.
	Trigger bindings.Binding
	// Bindings are the function's other bindings, as metadata or typed handles.
	Bindings []bindings.Declared
	// Handler runs invocations.
	Handler Handler
	// Retry overrides host.json's retry policy for this function (timer and
	// queue triggers).
	Retry *config.RetryPolicy
	// Disabled functions are registered but never fire (also settable with
	// the app setting AzureWebJobs.<Name>.Disabled).
	Disabled bool
}

// Option configures a Function at registration.
type Option func(*Function)

// WithBindings adds input/output bindings.
func WithBindings(b ...bindings.Declared) Option {
	return func(f *Function) { f.Bindings = append(f.Bindings, b...) }
}

// WithRetry sets the function's invocation retry policy.
func WithRetry(p config.RetryPolicy) Option {
	return func(f *Function) { f.Retry = &p }
}

// Disabled registers the function disabled.
func Disabled() Option { return func(f *Function) { f.Disabled = true } }

// Metadata returns the function.json bindings array: the trigger first.
func (f *Function) Metadata() []bindings.Binding {
	out := []bindings.Binding{f.Trigger}
	for _, b := range f.Bindings {
		out = append(out, b.Metadata())
	}
	return out
}

var nameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,127}$`)

// ValidateName checks a function name against the Azure Functions rules.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("function name %q is invalid: use 1-128 letters, digits, '_' or '-', starting with a letter", name)
	}
	return nil
}

// Registry holds the registered functions. It is safe for concurrent use.
type Registry struct {
	mu    sync.RWMutex
	fns   map[string]*Function // by lower-cased name
	order []*Function
}

// New returns an empty registry.
func New() *Registry { return &Registry{fns: map[string]*Function{}} }

// Add registers fn with opts applied. Names are unique regardless of case, as
// in Azure Functions.
func (r *Registry) Add(fn Function, opts ...Option) error {
	for _, o := range opts {
		o(&fn)
	}
	if err := ValidateName(fn.Name); err != nil {
		return err
	}
	if fn.Trigger.Type == "" {
		return fmt.Errorf("function %s: no trigger", fn.Name)
	}
	if fn.Handler == nil {
		return fmt.Errorf("function %s: no handler", fn.Name)
	}
	if fn.Trigger.Direction == "" {
		fn.Trigger.Direction = bindings.In
	}
	names := map[string]bool{strings.ToLower(fn.Trigger.Name): true}
	for _, b := range fn.Bindings {
		md := b.Metadata()
		if md.Name == "" {
			return fmt.Errorf("function %s: a %s binding has no name", fn.Name, md.Type)
		}
		if names[strings.ToLower(md.Name)] {
			return fmt.Errorf("function %s: binding name %q is used twice", fn.Name, md.Name)
		}
		names[strings.ToLower(md.Name)] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	key := strings.ToLower(fn.Name)
	if prev, ok := r.fns[key]; ok {
		return fmt.Errorf("function %s is registered twice (the first as %s)", fn.Name, prev.Name)
	}
	f := fn
	r.fns[key] = &f
	r.order = append(r.order, &f)
	return nil
}

// Lookup finds a function by name, ignoring case.
func (r *Registry) Lookup(name string) (*Function, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	f, ok := r.fns[strings.ToLower(name)]
	return f, ok
}

// Functions returns the registered functions sorted by name.
func (r *Registry) Functions() []*Function {
	r.mu.RLock()
	out := slices.Clone(r.order)
	r.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Function) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// ByTrigger returns the functions whose trigger type is t.
func (r *Registry) ByTrigger(t string) []*Function {
	var out []*Function
	for _, f := range r.Functions() {
		if f.Trigger.Type == t {
			out = append(out, f)
		}
	}
	return out
}

// Invocation is one run of a function.
type Invocation struct {
	// ID is the invocation id (a GUID).
	ID string
	// Function is the function being invoked.
	Function *Function
	// Trigger is the trigger's value, typed by the trigger plugin
	// (*httptrigger.Request, *queue.Message, *timer.Info, ...).
	Trigger any
	// Data is the binding data: trigger metadata that binding expressions
	// ({name}) read.
	Data map[string]any
	// Logger carries the function and invocation id fields.
	Logger *slog.Logger
	// RetryCount is the number of earlier attempts of this invocation under
	// the function's retry policy.
	RetryCount int

	mu      sync.Mutex
	pending []Pending
}

// Pending is a buffered output write.
type Pending interface {
	// Flush makes the write durable.
	Flush(ctx context.Context) error
}

// PendingFunc adapts a function to [Pending].
type PendingFunc func(ctx context.Context) error

// Flush calls f.
func (f PendingFunc) Flush(ctx context.Context) error { return f(ctx) }

// Defer buffers an output write until the handler has succeeded.
func (inv *Invocation) Defer(p Pending) {
	inv.mu.Lock()
	inv.pending = append(inv.pending, p)
	inv.mu.Unlock()
}

// FlushOutputs writes every buffered output, in order, and stops at the first
// error. The buffer is emptied either way.
func (inv *Invocation) FlushOutputs(ctx context.Context) error {
	inv.mu.Lock()
	p := inv.pending
	inv.pending = nil
	inv.mu.Unlock()
	for i, w := range p {
		if err := w.Flush(ctx); err != nil {
			return fmt.Errorf("output %d of %d: %w", i+1, len(p), err)
		}
	}
	return nil
}

// DiscardOutputs drops every buffered output (the handler failed).
func (inv *Invocation) DiscardOutputs() {
	inv.mu.Lock()
	inv.pending = nil
	inv.mu.Unlock()
}

type invocationKey struct{}

// WithInvocation returns ctx carrying inv.
func WithInvocation(ctx context.Context, inv *Invocation) context.Context {
	return context.WithValue(ctx, invocationKey{}, inv)
}

// FromContext returns the invocation ctx carries, or nil.
func FromContext(ctx context.Context) *Invocation {
	inv, _ := ctx.Value(invocationKey{}).(*Invocation)
	return inv
}

// Logger returns the invocation's logger from ctx, or slog.Default().
func Logger(ctx context.Context) *slog.Logger {
	if inv := FromContext(ctx); inv != nil && inv.Logger != nil {
		return inv.Logger
	}
	return slog.Default()
}
