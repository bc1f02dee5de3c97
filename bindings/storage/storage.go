// Package storage owns the Azure Storage input and output bindings (queue
// output, blob input and output, table input and output) and the small
// pieces the storage triggers share with them: queue message encoding,
// "create if missing" writes, storage error classification and the
// in-process [Notifier] that lets an output binding wake a local listener.
//
// A binding is a typed handle declared once, next to the function, and
// captured by the handler's closure:
//
//	echoOut := storage.QueueOutput("out", "echo-out")
//	fn := queue.Function("QueueEcho", queue.Trigger{QueueName: "echo-in"},
//		func(ctx context.Context, m *queue.Message) error {
//			return echoOut.Add(ctx, strings.ToUpper(m.Text))
//		}, registry.WithBindings(echoOut))
//
// Handles implement [bindings.Declared] (their function.json metadata) and
// [bindings.Binder] (the host binds them to its storage clients at start-up).
// Paths, queue and table names and keys are binding expressions evaluated
// with [bindings.Expand] against the invocation's binding data ({name} from
// the trigger, {rand-guid}, {DateTime}, %Setting%).
//
// Output writes are not sent when the handler calls them: they are buffered
// on the invocation with [registry.Invocation.Defer] and the pipeline flushes
// them only after the handler succeeded, so a failed invocation writes
// nothing. Input reads happen when called.
package storage

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/bindings/azstorage"
	"github.com/stratus-dev/stratus/host/config"
	"github.com/stratus-dev/stratus/host/registry"
)

// ErrNotFound is returned (wrapped) by input bindings when the blob or
// entity does not exist.
var ErrNotFound = errors.New("not found")

// ErrNotBound is returned when a handle is used before the host bound it
// (the function was not registered with registry.WithBindings(handle)).
var ErrNotBound = errors.New("binding is not bound to storage (declare it with registry.WithBindings)")

// ErrNoInvocation is returned when an output is written with a context that
// carries no invocation.
var ErrNoInvocation = errors.New("output binding used outside an invocation (pass the handler's ctx)")

// Option sets a binding property.
type Option func(*bindings.Binding)

// Connection names the storage connection setting (default
// AzureWebJobsStorage).
func Connection(name string) Option { return prop("connection", name) }

// PartitionKey sets the table binding's partitionKey expression.
func PartitionKey(expr string) Option { return prop("partitionKey", expr) }

// RowKey sets the table binding's rowKey expression.
func RowKey(expr string) Option { return prop("rowKey", expr) }

// Filter sets the table input binding's OData filter expression.
func Filter(expr string) Option { return prop("filter", expr) }

// Take limits the number of entities a table input query returns.
func Take(n int) Option { return prop("take", n) }

func prop(k string, v any) Option {
	return func(b *bindings.Binding) { b.Properties[k] = v }
}

// handle is what every binding handle shares: its metadata and, once bound,
// the host's environment and clients.
type handle struct {
	md      bindings.Binding
	env     *bindings.Env
	clients *azstorage.Clients
}

func newHandle(typ string, dir bindings.Direction, name string, props map[string]any, opts []Option) handle {
	b := bindings.Binding{Type: typ, Direction: dir, Name: name, Properties: props}
	for _, o := range opts {
		o(&b)
	}
	return handle{md: b}
}

// Metadata returns the function.json binding.
func (h *handle) Metadata() bindings.Binding { return h.md }

// Bind resolves the connection to the host's shared clients and checks that
// every %Setting% the binding's properties reference is set, so that a
// missing setting stops the host at start-up rather than failing each
// invocation.
func (h *handle) Bind(env *bindings.Env) error {
	if env.Settings != nil {
		for _, k := range h.md.SortedKeys() {
			if v, ok := h.md.Properties[k].(string); ok && k != "connection" {
				if _, err := env.Settings.Resolve(v); err != nil {
					return fmt.Errorf("property %s %q: %w", k, v, err)
				}
			}
		}
	}
	c, err := env.Storage(h.md.String("connection"))
	if err != nil {
		return fmt.Errorf("property connection: %w", err)
	}
	h.env, h.clients = env, c
	return nil
}

func (h *handle) ready() error {
	if h.clients == nil {
		return fmt.Errorf("%s binding %q: %w", h.md.Type, h.md.Name, ErrNotBound)
	}
	return nil
}

// expand evaluates expr as a binding expression against the binding data of
// the invocation in ctx (no data when there is none).
func (h *handle) expand(ctx context.Context, expr string) (string, error) {
	var data map[string]any
	if inv := registry.FromContext(ctx); inv != nil {
		data = inv.Data
	}
	var settings *config.Settings
	now := time.Now()
	if h.env != nil {
		settings, now = h.env.Settings, h.env.Clock()
	}
	v, err := bindings.Expand(expr, data, settings, now)
	if err != nil {
		return "", fmt.Errorf("%s binding %q: %w", h.md.Type, h.md.Name, err)
	}
	return v, nil
}

// Message encodings (host.json extensions.queues.messageEncoding).
const (
	EncodingBase64 = "base64"
	EncodingNone   = "none"
)

// MessageEncoding returns the host's queue message encoding, base64 by default.
func MessageEncoding(env *bindings.Env) string {
	if strings.EqualFold(env.HostJSON().Extensions.Queues.MessageEncoding, EncodingNone) {
		return EncodingNone
	}
	return EncodingBase64
}

// EncodeMessage encodes a message body for the queue.
func EncodeMessage(body []byte, encoding string) string {
	if encoding == EncodingNone {
		return string(body)
	}
	return base64.StdEncoding.EncodeToString(body)
}

// DecodeMessage decodes a queue message body. With base64 encoding, a body
// that is not valid base64 is returned as it is and ok is false: a message
// put by a tool that does not encode is processed rather than lost.
func DecodeMessage(raw, encoding string) (body []byte, ok bool) {
	if encoding == EncodingNone {
		return []byte(raw), true
	}
	b, err := base64.StdEncoding.DecodeString(raw)
	if err != nil {
		return []byte(raw), false
	}
	return b, true
}

// payload turns an output value into bytes: strings and byte slices as they
// are, everything else as JSON.
func payload(v any) ([]byte, error) {
	switch x := v.(type) {
	case string:
		return []byte(x), nil
	case []byte:
		return x, nil
	case json.RawMessage:
		return x, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode output as JSON: %w", err)
	}
	return b, nil
}

// StatusCode returns the HTTP status of a storage error, or 0.
func StatusCode(err error) int {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.StatusCode
	}
	return 0
}

// ErrorCode returns the storage error code (x-ms-error-code), or "".
func ErrorCode(err error) string {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return re.ErrorCode
	}
	return ""
}

// IsNotFound reports a 404 from storage.
func IsNotFound(err error) bool { return StatusCode(err) == http.StatusNotFound }

// IsConflict reports a 409 or 412 from storage (already exists, lease
// present, condition not met).
func IsConflict(err error) bool {
	c := StatusCode(err)
	return c == http.StatusConflict || c == http.StatusPreconditionFailed
}

func invocation(ctx context.Context) (*registry.Invocation, error) {
	inv := registry.FromContext(ctx)
	if inv == nil {
		return nil, ErrNoInvocation
	}
	return inv, nil
}
