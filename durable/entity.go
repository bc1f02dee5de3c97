package durable

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
)

// EntityID identifies a durable entity: the entity function's name (always
// lower case, as Durable Functions) and a key. Its instance id in the task
// hub is "@name@key".
type EntityID struct {
	Name string
	Key  string
}

// NewEntityID returns the id of entity name (lower-cased) with key.
func NewEntityID(name, key string) EntityID {
	return EntityID{Name: strings.ToLower(name), Key: key}
}

// String returns the entity's instance id, "@name@key".
func (id EntityID) String() string { return "@" + id.Name + "@" + id.Key }

// ErrInvalidEntityID is matched by the errors of [ParseEntityID].
var ErrInvalidEntityID = errors.New("invalid entity id")

// ParseEntityID parses an entity instance id "@name@key" (the key may
// contain '@'; the name is lower-cased).
func ParseEntityID(s string) (EntityID, error) {
	if !strings.HasPrefix(s, "@") {
		return EntityID{}, fmt.Errorf("%w: %q does not start with '@'", ErrInvalidEntityID, s)
	}
	name, key, ok := strings.Cut(s[1:], "@")
	if !ok || name == "" {
		return EntityID{}, fmt.Errorf("%w: %q is not of the form @name@key", ErrInvalidEntityID, s)
	}
	return NewEntityID(name, key), nil
}

// IsEntityInstance reports whether an instance id names an entity.
func IsEntityInstance(instanceID string) bool { return strings.HasPrefix(instanceID, "@") }

func (id EntityID) validate() error {
	if id.Name == "" {
		return fmt.Errorf("%w: the entity name must not be empty", ErrInvalidEntityID)
	}
	if strings.Contains(id.Name, "@") {
		return fmt.Errorf("%w: entity name %q contains '@'", ErrInvalidEntityID, id.Name)
	}
	if len(id.String()) > 256 {
		return fmt.Errorf("%w: entity id %q is longer than 256 characters", ErrInvalidEntityID, id.String())
	}
	return nil
}

// EntityFunc is an entity function. It runs one operation at a time: ctx
// names the operation and holds the entity's state. The returned value
// (when not nil) is the operation's result; otherwise the value passed to
// [EntityContext.Return]. A returned error (or a panic) fails the
// operation: its state changes, signals and orchestration starts are
// discarded, and a caller gets the error.
type EntityFunc func(ctx *EntityContext) (any, error)

// Entity adapts a function over typed state to an [EntityFunc]. The state
// is decoded before each operation (the zero S when the entity has none)
// and saved after it succeeds, so every successful operation leaves the
// entity existing, unless fn calls ctx.DeleteState. The operation "delete"
// (what the HTTP API's DELETE sends) deletes the state without calling fn.
//
//	counter := durable.Entity(func(ctx *durable.EntityContext, n *int) (any, error) {
//		switch ctx.Operation() {
//		case "add":
//			var d int
//			if err := ctx.Input(&d); err != nil {
//				return nil, err
//			}
//			*n += d
//		case "get":
//			return *n, nil
//		}
//		return nil, nil
//	})
func Entity[S any](fn func(ctx *EntityContext, state *S) (any, error)) EntityFunc {
	return func(ctx *EntityContext) (any, error) {
		if strings.EqualFold(ctx.Operation(), "delete") {
			ctx.DeleteState()
			return nil, nil
		}
		var s S
		if ctx.HasState() {
			if err := ctx.GetState(&s); err != nil {
				return nil, err
			}
		}
		ctx.deletedInOp = false
		out, err := fn(ctx, &s)
		if err != nil {
			return nil, err
		}
		if !ctx.deletedInOp {
			if err := ctx.SetState(s); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
}

// EntityContext is what an entity function sees of the operation it runs
// and of the entity's state.
type EntityContext struct {
	ctx       context.Context
	id        EntityID
	operation string
	input     string
	isSignal  bool
	now       time.Time
	logger    *slog.Logger

	exists      bool
	state       string
	deletedInOp bool
	result      any
	hasResult   bool

	actions []entityAction
	sched   *schedulerState
}

// entityAction is a message an operation sends when it succeeds.
type entityAction struct {
	msg backend.Message
}

// Context returns a context that ends when the worker shuts down.
func (c *EntityContext) Context() context.Context { return c.ctx }

// ID returns the entity id.
func (c *EntityContext) ID() EntityID { return c.id }

// Name returns the entity name (lower case).
func (c *EntityContext) Name() string { return c.id.Name }

// Key returns the entity key.
func (c *EntityContext) Key() string { return c.id.Key }

// Operation returns the name of the operation being run.
func (c *EntityContext) Operation() string { return c.operation }

// IsSignal reports whether the operation was signalled (no caller waits
// for its result).
func (c *EntityContext) IsSignal() bool { return c.isSignal }

// Logger returns a logger with the entity id and operation.
func (c *EntityContext) Logger() *slog.Logger { return c.logger }

// Input decodes the operation's JSON input into out.
func (c *EntityContext) Input(out any) error {
	if err := decodeJSON(c.input, out); err != nil {
		return fmt.Errorf("decode input of operation %q of entity %s: %w", c.operation, c.id, err)
	}
	return nil
}

// RawInput returns the operation's input as JSON text ("" when none).
func (c *EntityContext) RawInput() string { return c.input }

// HasState reports whether the entity has state (it exists).
func (c *EntityContext) HasState() bool { return c.exists }

// GetState decodes the entity's state into out; without state out is left
// as it is.
func (c *EntityContext) GetState(out any) error {
	if !c.exists {
		return nil
	}
	if err := decodeJSON(c.state, out); err != nil {
		return fmt.Errorf("decode state of entity %s: %w", c.id, err)
	}
	return nil
}

// SetState replaces the entity's state with v (JSON-encoded now, so later
// changes to v do not count). The entity exists afterwards.
func (c *EntityContext) SetState(v any) error {
	s, err := encodeJSON(v)
	if err != nil {
		return fmt.Errorf("encode state of entity %s: %w", c.id, err)
	}
	if s == "" {
		s = "null"
	}
	c.state, c.exists, c.deletedInOp = s, true, false
	return nil
}

// DeleteState deletes the entity's state: the entity no longer exists (it
// reads as missing and is left out of entity listings) until an operation
// sets state again.
func (c *EntityContext) DeleteState() {
	c.state, c.exists, c.deletedInOp = "", false, true
}

// Return sets the operation's result (used when the function returns nil).
func (c *EntityContext) Return(v any) {
	c.result, c.hasResult = v, true
}

// SignalEntity sends a one-way operation to another entity (or this one),
// after this operation succeeds. Option: [WithSignalTime].
func (c *EntityContext) SignalEntity(id EntityID, operation string, input any, opts ...SignalOption) error {
	if err := id.validate(); err != nil {
		return err
	}
	in, err := encodeJSON(input)
	if err != nil {
		return fmt.Errorf("encode input of signal %q to %s: %w", operation, id, err)
	}
	o := applySignalOptions(opts)
	req := &entityRequest{Op: operation, Signal: true, Input: in, ID: newGUID(), Parent: c.id.String()}
	if o.at.IsZero() || !o.at.After(c.now) {
		c.sched.label(req, id.String(), c.now)
	}
	c.actions = append(c.actions, entityAction{msg: requestMessage(id, req, o.at)})
	return nil
}

// StartNewOrchestration starts orchestrator name with input after this
// operation succeeds and returns the new instance's id. Options:
// [WithStartInstanceID] ([WithStartTime] and tags are honoured too).
func (c *EntityContext) StartNewOrchestration(name string, input any, opts ...StartOption) (string, error) {
	ev, err := newExecutionStarted(name, input, c.now, opts)
	if err != nil {
		return "", err
	}
	inst := ev.OrchestrationInstance
	m := backend.Message{TargetInstanceID: inst.InstanceID, TargetExecutionID: inst.ExecutionID, Event: ev}
	if ev.ScheduledStartTime != nil {
		m.VisibleAt = *ev.ScheduledStartTime
	}
	c.actions = append(c.actions, entityAction{msg: m})
	return inst.InstanceID, nil
}

// SignalOption configures entity signals.
type SignalOption func(*signalOptions)

type signalOptions struct{ at time.Time }

// WithSignalTime delivers the signal at t instead of now.
func WithSignalTime(t time.Time) SignalOption {
	return func(o *signalOptions) { o.at = t.UTC() }
}

func applySignalOptions(opts []SignalOption) signalOptions {
	var o signalOptions
	for _, f := range opts {
		f(&o)
	}
	return o
}

// EntityOperationFailedError is what an orchestration's CallEntity returns
// when the operation failed in the entity.
type EntityOperationFailedError struct {
	// Entity and Operation name the call.
	Entity    EntityID
	Operation string
	// Details describes the failure as the entity reported it.
	Details history.FailureDetails
}

// Error names the entity, the operation and the failure.
func (e *EntityOperationFailedError) Error() string {
	return fmt.Sprintf("operation '%s' of entity '%s' failed: %s", e.Operation, e.Entity, e.Details.ErrorMessage)
}

// ErrorType names the failure type in FailureDetails.
func (e *EntityOperationFailedError) ErrorType() string { return "EntityOperationFailed" }

// LockingRulesError reports a critical-section rule an orchestration broke:
// nested LockEntities, a call to an entity it did not lock from inside a
// critical section, or a signal to an entity it holds locked.
type LockingRulesError struct{ msg string }

// Error describes the rule.
func (e *LockingRulesError) Error() string { return e.msg }

// ErrorType names the failure type in FailureDetails.
func (e *LockingRulesError) ErrorType() string { return "LockingRulesViolation" }
