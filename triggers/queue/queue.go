// Package queue owns the Azure Storage queue trigger (binding type
// "queueTrigger"): polling a queue with the Azure Functions host's
// randomized exponential back-off, dispatching messages in batches, and
// deleting, releasing or poisoning each message depending on whether its
// invocation succeeded.
//
// # Semantics
//
//   - The queue (and later its poison queue) is created if missing.
//   - Messages are fetched batchSize at a time (host.json
//     extensions.queues.batchSize, default 16) with a 10-minute visibility
//     timeout that is renewed every 5 minutes while the handler runs. The next
//     batch is fetched as soon as no more than newBatchThreshold messages are
//     in flight (default batchSize/2 × CPUs), so at most batchSize +
//     newBatchThreshold run at once.
//   - An empty poll waits 100 ms + rand(0.8–1.2)·2^(n−1)·100 ms (n = empty polls
//     in a row), capped at maxPollingInterval (default 1 min); any message
//     resets the wait. A message enqueued by an output binding of this
//     process to this queue wakes the listener at once (see
//     storage.Notifier).
//   - A message is deleted only after Deliver returned nil, which means the
//     handler succeeded and its outputs were written. On failure, a message
//     whose DequeueCount reached maxDequeueCount (default 5) is added to
//     <queue>-poison with its original content and only then deleted
//     (nothing is lost); otherwise it is made visible again after
//     visibilityTimeout (default 0). No poison queue is used for a queue
//     whose name ends in -poison or would exceed 63 characters; such
//     messages are only released. Retries by host.json "retry" happen inside
//     Deliver, before any of this.
//   - When the host shuts down, a message whose handler was interrupted is
//     released at once (visibility 0) and never poisoned for that.
//
// # Encoding
//
// messageEncoding "base64" (default) base64-decodes message text, "none"
// takes it as it is; queue outputs encode the same way. With base64, a
// message that is not valid base64 is delivered with its raw text (and a
// debug log) rather than failed: messages put by tools that do not encode
// are processed instead of ending in the poison queue. The cost is that a
// plain text which happens to be valid base64 is decoded; set "none" when
// producers do not encode.
//
// # Binding data
//
// QueueTrigger (the text), Id, DequeueCount, InsertionTime, ExpirationTime,
// NextVisibleTime, PopReceipt, and, when the text is a JSON object, its
// top-level properties (never overriding the names above).
package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/triggers"
)

// TypeName is the trigger's binding type.
const TypeName = "queueTrigger"

// Trigger describes a queue trigger binding.
type Trigger struct {
	// QueueName is the queue to listen on; %Setting% expressions are resolved.
	QueueName string
	// Connection names the storage connection setting ("" = AzureWebJobsStorage).
	Connection string
	// Name is the binding (parameter) name; "msg" when empty.
	Name string
}

// Binding returns the function.json binding.
func (t Trigger) Binding() bindings.Binding {
	name := t.Name
	if name == "" {
		name = "msg"
	}
	props := map[string]any{"queueName": t.QueueName}
	if t.Connection != "" {
		props["connection"] = t.Connection
	}
	return bindings.Binding{Type: TypeName, Direction: bindings.In, Name: name, Properties: props}
}

// Message is a queue message as the handler receives it.
type Message struct {
	// ID is the message id.
	ID string
	// Text is the decoded message body.
	Text string
	// DequeueCount counts the deliveries of this message, this one included.
	DequeueCount int64
	// InsertionTime, ExpirationTime and NextVisibleTime are the message's times.
	InsertionTime, ExpirationTime, NextVisibleTime time.Time
	// PopReceipt is the receipt of this delivery.
	PopReceipt string
}

// JSON decodes the message text into v.
func (m *Message) JSON(v any) error {
	if err := json.Unmarshal([]byte(m.Text), v); err != nil {
		return fmt.Errorf("queue message %s is not the expected JSON: %w", m.ID, err)
	}
	return nil
}

// Function builds a queue-triggered function.
func Function(name string, t Trigger, handler func(ctx context.Context, m *Message) error, opts ...registry.Option) registry.Function {
	fn := registry.Function{
		Name:    name,
		Trigger: t.Binding(),
		Handler: registry.HandlerFunc(func(ctx context.Context, inv *registry.Invocation) (any, error) {
			m, err := message(inv)
			if err != nil {
				return nil, err
			}
			return nil, handler(ctx, m)
		}),
	}
	for _, o := range opts {
		o(&fn)
	}
	return fn
}

// FunctionJSON builds a queue-triggered function whose messages are JSON
// values of type T. A message that does not decode fails the invocation (and
// so ends in the poison queue after maxDequeueCount attempts).
func FunctionJSON[T any](name string, t Trigger, handler func(ctx context.Context, v T, m *Message) error, opts ...registry.Option) registry.Function {
	return Function(name, t, func(ctx context.Context, m *Message) error {
		var v T
		if err := m.JSON(&v); err != nil {
			return err
		}
		return handler(ctx, v, m)
	}, opts...)
}

func message(inv *registry.Invocation) (*Message, error) {
	switch v := inv.Trigger.(type) {
	case *Message:
		return v, nil
	case string: // manual run without a listener
		return &Message{Text: v, DequeueCount: 1}, nil
	}
	return nil, fmt.Errorf("queue function %s: trigger value is %T, not *queue.Message", inv.Function.Name, inv.Trigger)
}

// Register registers the queue trigger plugin under "queueTrigger".
func Register(r *triggers.Registry) { r.Register(TypeName, New) }

// bindingData is the trigger's binding data.
func bindingData(m *Message) map[string]any {
	d := map[string]any{}
	var obj map[string]any
	if json.Unmarshal([]byte(m.Text), &obj) == nil {
		for k, v := range obj {
			d[k] = v
		}
	}
	d["QueueTrigger"] = m.Text
	d["Id"] = m.ID
	d["DequeueCount"] = m.DequeueCount
	d["InsertionTime"] = m.InsertionTime
	d["ExpirationTime"] = m.ExpirationTime
	d["NextVisibleTime"] = m.NextVisibleTime
	d["PopReceipt"] = m.PopReceipt
	return d
}
