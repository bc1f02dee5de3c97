// Package bindings owns binding metadata (the function.json model), binding
// expressions ({name}, %Setting%, {rand-guid}, {DateTime}) and the environment
// that input and output bindings are bound against.
//
// Concrete bindings live in sub-packages (queue, blob, table, ...). A binding
// handle is declared once, next to the function that uses it, and captured by
// the handler's closure; its writes are buffered on the invocation and flushed
// only after the handler succeeded.
package bindings

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/stratus-dev/stratus/bindings/azstorage"
	"github.com/stratus-dev/stratus/host/config"
)

// Direction of a binding.
type Direction string

// Binding directions, as function.json spells them.
const (
	In    Direction = "in"
	Out   Direction = "out"
	InOut Direction = "inout"
)

// Binding is one entry of function.json's "bindings" array.
type Binding struct {
	// Type is the binding type name, e.g. "queueTrigger" or "blob".
	Type string
	// Direction is in, out or inout.
	Direction Direction
	// Name is the binding's parameter name.
	Name string
	// Properties are the type-specific properties (queueName, path, ...).
	Properties map[string]any
}

// Metadata returns b itself, so that plain metadata satisfies [Declared].
func (b Binding) Metadata() Binding { return b }

// String returns the string property key, or "".
func (b Binding) String(key string) string {
	s, _ := b.Properties[key].(string)
	return s
}

// Bool returns the boolean property key, or def when absent.
func (b Binding) Bool(key string, def bool) bool {
	v, ok := b.Properties[key].(bool)
	if !ok {
		return def
	}
	return v
}

// Int returns the integer property key, or def when absent.
func (b Binding) Int(key string, def int) int {
	switch v := b.Properties[key].(type) {
	case int:
		return v
	case float64:
		return int(v)
	}
	return def
}

// Strings returns the string-list property key.
func (b Binding) Strings(key string) []string {
	switch v := b.Properties[key].(type) {
	case []string:
		return v
	case []any:
		out := make([]string, 0, len(v))
		for _, x := range v {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// MarshalJSON writes the binding the way function.json does: type, direction
// and name next to the properties.
func (b Binding) MarshalJSON() ([]byte, error) {
	m := make(map[string]any, len(b.Properties)+3)
	maps.Copy(m, b.Properties)
	m["type"] = b.Type
	m["direction"] = string(b.Direction)
	m["name"] = b.Name
	return json.Marshal(m)
}

// UnmarshalJSON reads a function.json binding.
func (b *Binding) UnmarshalJSON(data []byte) error {
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	t, _ := m["type"].(string)
	d, _ := m["direction"].(string)
	n, _ := m["name"].(string)
	if t == "" {
		return fmt.Errorf("binding has no \"type\"")
	}
	delete(m, "type")
	delete(m, "direction")
	delete(m, "name")
	*b = Binding{Type: t, Direction: Direction(d), Name: n, Properties: m}
	return nil
}

// SortedKeys returns the property names in order (for stable output).
func (b Binding) SortedKeys() []string { return slices.Sorted(maps.Keys(b.Properties)) }

// Declared is anything a function declares as a binding: plain metadata, or a
// typed handle (an output binding the handler writes to).
type Declared interface {
	Metadata() Binding
}

// Binder is implemented by handles that need the host's environment (storage
// clients, settings) before the first invocation. The host calls Bind once at
// start-up; an error stops the host.
type Binder interface {
	Bind(env *Env) error
}

// Env is what bindings and trigger plugins get from the host.
type Env struct {
	// Settings resolves app settings and connection strings.
	Settings *config.Settings
	// Logger is the host logger.
	Logger *slog.Logger
	// HostID scopes locks, receipts and timer status blobs, as in the Azure
	// Functions host.
	HostID string
	// Storage opens (or returns the cached) clients for a connection name;
	// "" means AzureWebJobsStorage.
	Storage func(connection string) (*azstorage.Clients, error)
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Host is the parsed host.json (extensions.queues, extensions.blobs,
	// singleton, ...); nil means every default.
	Host *config.HostJSON
	// Services holds what host extensions offer to bindings, by name (the
	// durable extension's client is "durableClient"). Extensions fill it in
	// their Init, before any binding is bound.
	Services map[string]any
}

// Service returns the extension service registered under name, or nil.
func (e *Env) Service(name string) any {
	if e == nil {
		return nil
	}
	return e.Services[name]
}

// HostJSON returns Env.Host, or the defaults when it is nil.
func (e *Env) HostJSON() *config.HostJSON {
	if e == nil || e.Host == nil {
		h := config.DefaultHostJSON()
		return &h
	}
	return e.Host
}

// Clock returns the current time from Env.Now.
func (e *Env) Clock() time.Time {
	if e.Now == nil {
		return time.Now()
	}
	return e.Now()
}
