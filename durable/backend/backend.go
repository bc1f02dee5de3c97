// Package backend owns the contract between the durable runtime and a task
// hub's storage: how work items are fetched, completed and abandoned, and what
// a durable client may ask of the store. The Azure Storage task hub
// (durable/azurestorage) implements it; so does an in-memory store used by
// unit tests of the runtime.
//
// The unit of work is the one of DurableTask: the backend hands out a work
// item (an orchestration's history plus its new messages, or one activity
// call); the runtime computes the outcome; the backend commits the outcome and
// only then acknowledges (deletes) the messages the work item consumed. A
// crash at any point therefore repeats work, never loses it.
package backend

import (
	"context"
	"errors"
	"time"

	"github.com/stratus-dev/stratus/durable/history"
)

// Sentinel errors. Methods document which ones they return.
var (
	// ErrInstanceNotFound: no instance with that id exists.
	ErrInstanceNotFound = errors.New("instance not found")
	// ErrInstanceExists: starting an instance whose id is in use by a
	// non-terminal instance.
	ErrInstanceExists = errors.New("an instance with this id is already running")
	// ErrWorkItemLost: the work item's lock or lease was lost (another worker
	// owns the instance now, or the history changed underneath); the outcome
	// was not committed and the messages will be redelivered.
	ErrWorkItemLost = errors.New("work item lost")
	// ErrStopped: the backend is shutting down.
	ErrStopped = errors.New("backend stopped")
)

// InstanceState is the status row of one instance (the Instances table).
type InstanceState struct {
	InstanceID         string
	ExecutionID        string
	Name               string
	Version            string
	RuntimeStatus      history.Status
	Input              string // JSON, "" when not fetched or null
	Output             string // JSON result, failure details or termination reason
	CustomStatus       string // JSON, "" when unset
	CreatedTime        time.Time
	LastUpdatedTime    time.Time
	CompletedTime      time.Time
	ScheduledStartTime time.Time
	FailureDetails     *history.FailureDetails
	Generation         int
	Tags               map[string]string
}

// Message is an event sent to an instance (or, for TaskScheduled, to the
// activity work-item queue).
type Message struct {
	// TargetInstanceID is the instance the event is for.
	TargetInstanceID string
	// TargetExecutionID is the execution the event is for; "" means the
	// instance's current execution (raise event, terminate, entity signals).
	TargetExecutionID string
	// Event is the event. TaskScheduled goes to the activity queue;
	// everything else to the target's control queue.
	Event *history.Event
	// VisibleAt delays delivery (timers, scheduled starts, delayed signals);
	// zero means now.
	VisibleAt time.Time
}

// OrchestrationWorkItem is an instance's committed history plus the new
// messages for it, handed to exactly one worker at a time.
type OrchestrationWorkItem struct {
	InstanceID string
	// ExecutionID is the current execution ("" for a brand-new instance whose
	// first message is ExecutionStarted).
	ExecutionID string
	// History is the committed history of the current execution.
	History []*history.Event
	// NewEvents are the messages to apply, in delivery order. Duplicates
	// already in History have been removed by the backend.
	NewEvents []*history.Event
	// State is private to the backend (receipts, ETags, leases).
	State any
}

// OrchestrationCompletion is the outcome of running a work item.
type OrchestrationCompletion struct {
	// ExecutionID is the execution the history below belongs to (a new one
	// after ContinueAsNew).
	ExecutionID string
	// ResetHistory is true when the history restarts (ContinueAsNew): then
	// NewHistory is the whole history of the new execution.
	ResetHistory bool
	// NewHistory are the events to append to the committed history.
	NewHistory []*history.Event
	// Outbound are the messages to send: activity calls, timers,
	// sub-orchestration starts, events, replies to a parent.
	Outbound []Message
	// State is the new status row.
	State InstanceState
	// Carryover are events delivered to the instance but not consumed by this
	// work item (for example, messages for a suspended instance); the backend
	// must redeliver them with the next work item.
	Carryover []*history.Event
}

// ActivityWorkItem is one scheduled activity call.
type ActivityWorkItem struct {
	InstanceID  string
	ExecutionID string
	// Event is the TaskScheduled event.
	Event *history.Event
	// DequeueCount counts deliveries of this call (1 on the first).
	DequeueCount int
	// State is private to the backend.
	State any
}

// InstanceQuery filters and pages instance listings.
type InstanceQuery struct {
	RuntimeStatus    []history.Status
	CreatedFrom      time.Time // inclusive; zero = unbounded
	CreatedTo        time.Time // inclusive; zero = unbounded
	InstanceIDPrefix string
	PageSize         int // 0 = backend default (100)
	// ContinuationToken is "" for the first page.
	ContinuationToken string
	FetchInput        bool
	// IncludeEntities lists entity instances (ids starting with '@') too;
	// EntitiesOnly lists nothing else.
	IncludeEntities bool
	EntitiesOnly    bool
}

// InstancePage is one page of a query.
type InstancePage struct {
	Instances []*InstanceState
	// ContinuationToken is "" on the last page.
	ContinuationToken string
}

// PurgeFilter selects instances to purge. Only terminal instances are purged.
type PurgeFilter struct {
	CreatedFrom   time.Time
	CreatedTo     time.Time
	RuntimeStatus []history.Status
}

// Client is what durable clients need from a task hub.
type Client interface {
	// CreateInstance starts an instance: started is its ExecutionStarted
	// event (OrchestrationInstance set, ScheduledStartTime optional).
	// Returns ErrInstanceExists when the id is used by a non-terminal instance.
	CreateInstance(ctx context.Context, started *history.Event) error
	// SendEvent delivers an event (EventRaised, ExecutionTerminated,
	// ExecutionSuspended, ExecutionResumed, GenericEvent) to an instance's
	// current execution. It does not check that the instance exists.
	SendEvent(ctx context.Context, m Message) error
	// GetInstance returns the status row, or ErrInstanceNotFound.
	GetInstance(ctx context.Context, instanceID string, fetchInput bool) (*InstanceState, error)
	// GetHistory returns the current execution's history, or ErrInstanceNotFound.
	GetHistory(ctx context.Context, instanceID string) ([]*history.Event, error)
	// QueryInstances lists instances.
	QueryInstances(ctx context.Context, q InstanceQuery) (*InstancePage, error)
	// PurgeInstance deletes an instance's history, status and blobs, or
	// returns ErrInstanceNotFound.
	PurgeInstance(ctx context.Context, instanceID string) error
	// PurgeInstances purges every terminal instance the filter selects and
	// returns how many it deleted.
	PurgeInstances(ctx context.Context, f PurgeFilter) (int, error)
	// SetInstanceState overwrites fields of a status row (used by rewind and
	// repair); it returns ErrInstanceNotFound for unknown ids.
	SetInstanceState(ctx context.Context, s *InstanceState) error
}

// Backend is a task hub: a Client plus the work-item protocol used by workers.
type Backend interface {
	Client
	// Start creates missing storage resources and starts background work
	// (leases, pollers). It returns when the hub is ready.
	Start(ctx context.Context) error
	// Stop stops fetching, releases leases and waits for background work.
	Stop(ctx context.Context) error
	// NextOrchestrationWorkItem blocks until a work item is available or ctx
	// is done (returns ctx.Err()) or the backend stops (ErrStopped).
	NextOrchestrationWorkItem(ctx context.Context) (*OrchestrationWorkItem, error)
	// CompleteOrchestrationWorkItem commits c durably and then acknowledges
	// the work item's messages. ErrWorkItemLost means nothing was committed.
	CompleteOrchestrationWorkItem(ctx context.Context, wi *OrchestrationWorkItem, c *OrchestrationCompletion) error
	// AbandonOrchestrationWorkItem returns the work item's messages for
	// redelivery after delay.
	AbandonOrchestrationWorkItem(ctx context.Context, wi *OrchestrationWorkItem, delay time.Duration) error
	// NextActivityWorkItem blocks like NextOrchestrationWorkItem.
	NextActivityWorkItem(ctx context.Context) (*ActivityWorkItem, error)
	// CompleteActivityWorkItem sends result (TaskCompleted or TaskFailed) to
	// the orchestration and then deletes the work item.
	CompleteActivityWorkItem(ctx context.Context, wi *ActivityWorkItem, result *history.Event) error
	// AbandonActivityWorkItem returns the work item for redelivery after delay.
	AbandonActivityWorkItem(ctx context.Context, wi *ActivityWorkItem, delay time.Duration) error
}
