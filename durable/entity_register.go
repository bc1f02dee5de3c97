package durable

import (
	"context"
	"fmt"
	"strings"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/host/registry"
)

// RegisterEntity registers entity function name (trigger type
// entityTrigger). Entity names are case-insensitive: the entity's id uses
// the lower-cased name (@counter@key for "Counter"). The durable worker
// runs its operations; it is never invoked through the HTTP or admin
// paths.
func RegisterEntity(r *registry.Registry, name string, fn EntityFunc, opts ...registry.Option) error {
	if fn == nil {
		return fmt.Errorf("entity %s: nil function", name)
	}
	if name == "" || strings.Contains(name, "@") {
		return fmt.Errorf("entity %q: the name must be non-empty and must not contain '@'", name)
	}
	return r.Add(registry.Function{
		Name: name,
		Trigger: bindings.Binding{Type: EntityTriggerType, Direction: bindings.In, Name: "context",
			Properties: map[string]any{"entityName": name}},
		Handler: entityHandler{name: name, fn: fn},
	}, opts...)
}

// EntityOf returns the entity function behind a function registered with
// [RegisterEntity].
func EntityOf(fn *registry.Function) (EntityFunc, bool) {
	h, ok := fn.Handler.(entityHandler)
	return h.fn, ok
}

type entityHandler struct {
	name string
	fn   EntityFunc
}

func (h entityHandler) Invoke(context.Context, *registry.Invocation) (any, error) {
	return nil, fmt.Errorf("entity %s is run by the durable engine; signal it with a durable client (POST /runtime/webhooks/durabletask/entities/%s/{key}?op=...)", h.name, strings.ToLower(h.name))
}
