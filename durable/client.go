package durable

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
)

// Client is the durable client: it starts, inspects and controls
// orchestration instances through a task hub's backend.Client.
type Client struct {
	b   backend.Client
	now func() time.Time
}

// NewClient returns a client over b.
func NewClient(b backend.Client) *Client {
	return &Client{b: b, now: time.Now}
}

// Backend returns the backend client c uses.
func (c *Client) Backend() backend.Client { return c.b }

// StartOption configures ScheduleNew.
type StartOption func(*startOptions)

type startOptions struct {
	instanceID string
	startAt    time.Time
	tags       map[string]string
}

// WithStartInstanceID starts the instance under id instead of a generated
// one (a random 32-hex-digit GUID). The id must pass [ValidateInstanceID].
func WithStartInstanceID(id string) StartOption {
	return func(o *startOptions) { o.instanceID = id }
}

// WithStartTime schedules the start: the instance stays Pending until t.
func WithStartTime(t time.Time) StartOption {
	return func(o *startOptions) { o.startAt = t }
}

// WithStartTags attaches tags to the instance (ExecutionStarted Tags).
func WithStartTags(tags map[string]string) StartOption {
	return func(o *startOptions) { o.tags = tags }
}

// ScheduleNew starts orchestrator with input (JSON-encoded; a
// json.RawMessage or []byte of JSON is passed through) and returns the
// instance id. Starting an id used by a non-terminal instance returns an
// error matching backend.ErrInstanceExists; an invalid id one matching
// [ErrInvalidInstanceID].
func (c *Client) ScheduleNew(ctx context.Context, orchestrator string, input any, opts ...StartOption) (string, error) {
	ev, err := newExecutionStarted(orchestrator, input, c.now().UTC(), opts)
	if err != nil {
		return "", err
	}
	id := ev.OrchestrationInstance.InstanceID
	if err := c.b.CreateInstance(ctx, ev); err != nil {
		return "", fmt.Errorf("schedule %s %s: %w", orchestrator, id, err)
	}
	return id, nil
}

// newExecutionStarted builds the ExecutionStarted event that starts
// orchestrator with input at now: the instance id from the options (checked)
// or a new one, a new execution id, the scheduled start time and tags.
func newExecutionStarted(orchestrator string, input any, now time.Time, opts []StartOption) (*history.Event, error) {
	var o startOptions
	for _, f := range opts {
		f(&o)
	}
	if orchestrator == "" {
		return nil, errors.New("start orchestration: orchestrator name must not be empty")
	}
	id := o.instanceID
	if id == "" {
		id = newGUIDN()
	} else if err := ValidateInstanceID(id); err != nil {
		return nil, err
	}
	in, err := encodeJSON(input)
	if err != nil {
		return nil, fmt.Errorf("start %s: encode input: %w", orchestrator, err)
	}
	ev := &history.Event{
		EventType:             history.ExecutionStarted,
		EventID:               -1,
		Timestamp:             now,
		OrchestrationInstance: &history.Instance{InstanceID: id, ExecutionID: newGUIDN()},
		Name:                  orchestrator,
		Input:                 in,
		Tags:                  o.tags,
	}
	if !o.startAt.IsZero() {
		t := o.startAt.UTC()
		ev.ScheduledStartTime = &t
	}
	return ev, nil
}

// GetInstance returns the status of instance id (backend.ErrInstanceNotFound
// when there is none). fetchInput includes the input.
func (c *Client) GetInstance(ctx context.Context, id string, fetchInput bool) (*backend.InstanceState, error) {
	st, err := c.b.GetInstance(ctx, id, fetchInput)
	if err != nil {
		return nil, fmt.Errorf("get instance %s: %w", id, err)
	}
	return st, nil
}

// GetHistory returns the history of the current execution of instance id.
func (c *Client) GetHistory(ctx context.Context, id string) ([]*history.Event, error) {
	h, err := c.b.GetHistory(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("get history of %s: %w", id, err)
	}
	return h, nil
}

// Query lists instances.
func (c *Client) Query(ctx context.Context, q backend.InstanceQuery) (*backend.InstancePage, error) {
	p, err := c.b.QueryInstances(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("query instances: %w", err)
	}
	return p, nil
}

// running checks that instance id exists and has not finished.
func (c *Client) running(ctx context.Context, id string) error {
	st, err := c.b.GetInstance(ctx, id, false)
	if err != nil {
		return err
	}
	if st.RuntimeStatus.Terminal() {
		return fmt.Errorf("%w (%s)", ErrInstanceFinished, st.RuntimeStatus)
	}
	return nil
}

func (c *Client) send(ctx context.Context, what, id string, ev *history.Event) error {
	if err := c.running(ctx, id); err != nil {
		return fmt.Errorf("%s %s: %w", what, id, err)
	}
	ev.EventID = -1
	ev.Timestamp = c.now().UTC()
	if err := c.b.SendEvent(ctx, backend.Message{TargetInstanceID: id, Event: ev}); err != nil {
		return fmt.Errorf("%s %s: %w", what, id, err)
	}
	return nil
}

// RaiseEvent sends external event name with data (JSON-encoded; raw JSON is
// passed through) to instance id. It returns backend.ErrInstanceNotFound or
// [ErrInstanceFinished] (wrapped) when the instance cannot receive it.
func (c *Client) RaiseEvent(ctx context.Context, id, name string, data any) error {
	if name == "" {
		return errors.New("raise event: event name must not be empty")
	}
	in, err := encodeJSON(data)
	if err != nil {
		return fmt.Errorf("raise event %s on %s: encode data: %w", name, id, err)
	}
	return c.send(ctx, "raise event "+name+" on", id, &history.Event{EventType: history.EventRaised, Name: name, Input: in})
}

// Terminate ends instance id as Terminated; its output is reason. It works
// while the instance is suspended.
func (c *Client) Terminate(ctx context.Context, id, reason string) error {
	in, _ := encodeJSON(reason)
	return c.send(ctx, "terminate", id, &history.Event{EventType: history.ExecutionTerminated, Input: in})
}

// Suspend pauses instance id: it stays Suspended, and events sent to it wait,
// until Resume.
func (c *Client) Suspend(ctx context.Context, id, reason string) error {
	return c.send(ctx, "suspend", id, &history.Event{EventType: history.ExecutionSuspended, Reason: reason})
}

// Resume resumes a suspended instance.
func (c *Client) Resume(ctx context.Context, id, reason string) error {
	return c.send(ctx, "resume", id, &history.Event{EventType: history.ExecutionResumed, Reason: reason})
}

// Purge deletes instance id's history and status
// (backend.ErrInstanceNotFound when there is none).
func (c *Client) Purge(ctx context.Context, id string) error {
	if err := c.b.PurgeInstance(ctx, id); err != nil {
		return fmt.Errorf("purge %s: %w", id, err)
	}
	return nil
}

// PurgeBy deletes the terminal instances f selects and returns how many.
func (c *Client) PurgeBy(ctx context.Context, f backend.PurgeFilter) (int, error) {
	n, err := c.b.PurgeInstances(ctx, f)
	if err != nil {
		return n, fmt.Errorf("purge instances: %w", err)
	}
	return n, nil
}

// WaitForCompletion polls instance id, with back-off from 5 ms to 1 s, until
// it is Completed, Failed, Terminated or Canceled (ContinuedAsNew keeps
// waiting), and returns its status with input. It returns ctx's error when
// ctx ends first.
func (c *Client) WaitForCompletion(ctx context.Context, id string) (*backend.InstanceState, error) {
	delay := 5 * time.Millisecond
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for %s: %w", id, ctx.Err())
		case <-t.C:
		}
		st, err := c.b.GetInstance(ctx, id, true)
		if err != nil {
			return nil, fmt.Errorf("wait for %s: %w", id, err)
		}
		if st.RuntimeStatus.Terminal() {
			return st, nil
		}
		t.Reset(delay)
		delay = min(delay*2, time.Second)
	}
}
