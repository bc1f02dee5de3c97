package storage

import (
	"context"
	"fmt"
	"regexp"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/host/registry"
)

// QueueOut is a queue output binding (function.json type "queue").
type QueueOut struct {
	handle
}

var (
	_ bindings.Declared = (*QueueOut)(nil)
	_ bindings.Binder   = (*QueueOut)(nil)
)

// QueueOutput declares a queue output binding named name that writes to
// queueName (a binding expression). The queue is created if missing.
func QueueOutput(name, queueName string, opts ...Option) *QueueOut {
	return &QueueOut{handle: newHandle("queue", bindings.Out, name, map[string]any{"queueName": queueName}, opts)}
}

// Add buffers one message: a string or []byte is sent as it is, any other
// value as JSON. The message is enqueued (with the host's messageEncoding)
// only after the handler succeeded.
func (q *QueueOut) Add(ctx context.Context, v any) error { return q.AddAll(ctx, v) }

// AddAll buffers several messages, as an array returned to a queue output
// does in Azure Functions.
func (q *QueueOut) AddAll(ctx context.Context, vs ...any) error {
	if err := q.ready(); err != nil {
		return err
	}
	inv, err := invocation(ctx)
	if err != nil {
		return err
	}
	name, err := q.expand(ctx, q.md.String("queueName"))
	if err != nil {
		return err
	}
	if err := ValidateQueueName(name); err != nil {
		return fmt.Errorf("queue binding %q: %w", q.md.Name, err)
	}
	enc := MessageEncoding(q.env)
	msgs := make([]string, 0, len(vs))
	for _, v := range vs {
		b, err := payload(v)
		if err != nil {
			return fmt.Errorf("queue binding %q: %w", q.md.Name, err)
		}
		msgs = append(msgs, EncodeMessage(b, enc))
	}
	c := q.clients
	inv.Defer(registry.PendingFunc(func(ctx context.Context) error {
		qc := c.Queue.NewQueueClient(name)
		for _, m := range msgs {
			if err := Enqueue(ctx, qc, m); err != nil {
				return fmt.Errorf("queue %s: %w", name, err)
			}
		}
		NotifierFor(c).Publish(QueueTopic(name), "")
		return nil
	}))
	return nil
}

var queueNameRE = regexp.MustCompile(`^[a-z0-9](?:[a-z0-9]|-[a-z0-9]){2,62}$`)

// ValidateQueueName checks the Azure Storage queue naming rules: 3-63
// lower-case letters, digits and single hyphens, starting and ending with a
// letter or digit.
func ValidateQueueName(name string) error {
	if len(name) > 63 || !queueNameRE.MatchString(name) {
		return fmt.Errorf("queue name %q is invalid: use 3-63 lower-case letters, digits and single hyphens", name)
	}
	return nil
}

// Enqueue puts an already encoded message, creating the queue when it does
// not exist.
func Enqueue(ctx context.Context, qc *azqueue.QueueClient, encoded string) error {
	_, err := qc.EnqueueMessage(ctx, encoded, nil)
	if IsNotFound(err) {
		if err = CreateQueue(ctx, qc); err != nil {
			return err
		}
		_, err = qc.EnqueueMessage(ctx, encoded, nil)
	}
	return err
}

// CreateQueue creates a queue; an existing queue is not an error.
func CreateQueue(ctx context.Context, qc *azqueue.QueueClient) error {
	if _, err := qc.Create(ctx, nil); err != nil && !IsConflict(err) {
		return fmt.Errorf("create queue: %w", err)
	}
	return nil
}
