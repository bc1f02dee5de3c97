// Package history owns the durable engine's history events: the append-only
// record of everything that happened to one orchestration (or entity)
// instance. Event types, numbers and field names follow DurableTask.Core, so
// that the Azure Storage task hub stores them in the layout existing task hub
// tools read (see durable/azurestorage for the wire and table formats).
//
// An Event is one flat struct; each event type uses the fields listed on its
// [Type] constant and leaves the others zero. Payloads (Input, Result, Data)
// are JSON texts; "" means null.
package history

import (
	"fmt"
	"time"
)

// Type is an event type. The numbers are DurableTask.Core's EventType enum.
type Type int

// Event types and the fields each one uses (besides EventType, EventID,
// IsPlayed and Timestamp).
const (
	// ExecutionStarted: OrchestrationInstance, ParentInstance, Name, Version,
	// Input, Tags, ScheduledStartTime, Generation.
	ExecutionStarted Type = 0
	// ExecutionCompleted: OrchestrationStatus, Result, FailureDetails.
	ExecutionCompleted Type = 1
	// ExecutionFailed is unused by DurableTask.Core; kept for numbering.
	ExecutionFailed Type = 2
	// ExecutionTerminated: Input (the reason).
	ExecutionTerminated Type = 3
	// TaskScheduled: Name, Version, Input, Tags.
	TaskScheduled Type = 4
	// TaskCompleted: TaskScheduledID, Result.
	TaskCompleted Type = 5
	// TaskFailed: TaskScheduledID, Reason, Details, FailureDetails.
	TaskFailed Type = 6
	// SubOrchestrationInstanceCreated: Name, Version, InstanceID, Input, Tags.
	SubOrchestrationInstanceCreated Type = 7
	// SubOrchestrationInstanceCompleted: TaskScheduledID, Result.
	SubOrchestrationInstanceCompleted Type = 8
	// SubOrchestrationInstanceFailed: TaskScheduledID, Reason, Details, FailureDetails.
	SubOrchestrationInstanceFailed Type = 9
	// TimerCreated: FireAt.
	TimerCreated Type = 10
	// TimerFired: TimerID, FireAt.
	TimerFired Type = 11
	// OrchestratorStarted marks the start of one episode (replay turn); its
	// Timestamp is the orchestration's current time for that episode.
	OrchestratorStarted Type = 12
	// OrchestratorCompleted marks the end of one episode.
	OrchestratorCompleted Type = 13
	// EventSent: InstanceID, Name, Input.
	EventSent Type = 14
	// EventRaised: Name, Input.
	EventRaised Type = 15
	// ContinueAsNew: Result (the new input), OrchestrationStatus.
	ContinueAsNew Type = 16
	// GenericEvent: Data.
	GenericEvent Type = 17
	// HistoryState is unused here; kept for numbering.
	HistoryState Type = 18
	// ExecutionSuspended: Reason.
	ExecutionSuspended Type = 19
	// ExecutionResumed: Reason.
	ExecutionResumed Type = 20
)

var typeNames = map[Type]string{
	ExecutionStarted: "ExecutionStarted", ExecutionCompleted: "ExecutionCompleted",
	ExecutionFailed: "ExecutionFailed", ExecutionTerminated: "ExecutionTerminated",
	TaskScheduled: "TaskScheduled", TaskCompleted: "TaskCompleted", TaskFailed: "TaskFailed",
	SubOrchestrationInstanceCreated:   "SubOrchestrationInstanceCreated",
	SubOrchestrationInstanceCompleted: "SubOrchestrationInstanceCompleted",
	SubOrchestrationInstanceFailed:    "SubOrchestrationInstanceFailed",
	TimerCreated:                      "TimerCreated", TimerFired: "TimerFired",
	OrchestratorStarted: "OrchestratorStarted", OrchestratorCompleted: "OrchestratorCompleted",
	EventSent: "EventSent", EventRaised: "EventRaised", ContinueAsNew: "ContinueAsNew",
	GenericEvent: "GenericEvent", HistoryState: "HistoryState",
	ExecutionSuspended: "ExecutionSuspended", ExecutionResumed: "ExecutionResumed",
}

// String returns the DurableTask.Core name of the type ("TaskScheduled").
func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("EventType(%d)", int(t))
}

// ParseType maps a DurableTask.Core event type name to its Type.
func ParseType(name string) (Type, error) {
	for t, n := range typeNames {
		if n == name {
			return t, nil
		}
	}
	return 0, fmt.Errorf("unknown history event type %q", name)
}

// Status is an orchestration runtime status as Durable Functions spells it.
type Status string

// Runtime statuses.
const (
	StatusPending        Status = "Pending"
	StatusRunning        Status = "Running"
	StatusCompleted      Status = "Completed"
	StatusContinuedAsNew Status = "ContinuedAsNew"
	StatusFailed         Status = "Failed"
	StatusCanceled       Status = "Canceled"
	StatusTerminated     Status = "Terminated"
	StatusSuspended      Status = "Suspended"
)

// Terminal reports whether no further event changes an instance in status s.
func (s Status) Terminal() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusTerminated || s == StatusCanceled
}

// ParseStatus validates a runtime status name (exact case, as Durable Functions).
func ParseStatus(s string) (Status, error) {
	switch st := Status(s); st {
	case StatusPending, StatusRunning, StatusCompleted, StatusContinuedAsNew, StatusFailed,
		StatusCanceled, StatusTerminated, StatusSuspended:
		return st, nil
	}
	return "", fmt.Errorf("unknown runtime status %q", s)
}

// Instance identifies one execution of an instance.
type Instance struct {
	InstanceID  string `json:"InstanceId"`
	ExecutionID string `json:"ExecutionId"`
}

// ParentInstance identifies the orchestration that started a sub-orchestration.
type ParentInstance struct {
	Name                  string   `json:"Name"`
	Version               string   `json:"Version,omitempty"`
	OrchestrationInstance Instance `json:"OrchestrationInstance"`
	// TaskScheduleID is the parent's SubOrchestrationInstanceCreated event id.
	TaskScheduleID int `json:"TaskScheduleId"`
}

// FailureDetails describes an error, as DurableTask.Core's FailureDetails.
type FailureDetails struct {
	ErrorType      string          `json:"ErrorType"`
	ErrorMessage   string          `json:"ErrorMessage"`
	StackTrace     string          `json:"StackTrace,omitempty"`
	InnerFailure   *FailureDetails `json:"InnerFailure,omitempty"`
	IsNonRetriable bool            `json:"IsNonRetriable"`
}

// Event is one history event.
type Event struct {
	EventType Type
	// EventID is the sequence number of scheduling events (TaskScheduled,
	// TimerCreated, SubOrchestrationInstanceCreated, EventSent) and -1 for
	// the others.
	EventID   int
	IsPlayed  bool
	Timestamp time.Time

	OrchestrationInstance *Instance
	ParentInstance        *ParentInstance
	Name                  string
	Version               string
	Input                 string
	Result                string
	Reason                string
	Details               string
	Data                  string
	Tags                  map[string]string
	ScheduledStartTime    *time.Time
	Generation            int
	OrchestrationStatus   Status
	FailureDetails        *FailureDetails
	TaskScheduledID       int
	TimerID               int
	FireAt                time.Time
	// InstanceID is the target of EventSent and SubOrchestrationInstanceCreated.
	InstanceID string
}

// String describes the event for logs and error messages.
func (e *Event) String() string {
	switch e.EventType {
	case TaskScheduled, SubOrchestrationInstanceCreated, EventSent:
		return fmt.Sprintf("%s#%d(%s)", e.EventType, e.EventID, e.Name)
	case TimerCreated:
		return fmt.Sprintf("%s#%d(%s)", e.EventType, e.EventID, e.FireAt.UTC().Format(time.RFC3339Nano))
	case TaskCompleted, TaskFailed, SubOrchestrationInstanceCompleted, SubOrchestrationInstanceFailed:
		return fmt.Sprintf("%s(for #%d)", e.EventType, e.TaskScheduledID)
	case TimerFired:
		return fmt.Sprintf("%s(for #%d)", e.EventType, e.TimerID)
	case EventRaised, ExecutionStarted:
		return fmt.Sprintf("%s(%s)", e.EventType, e.Name)
	}
	return e.EventType.String()
}

// Clone returns a shallow copy of e with its own maps and pointers copied.
func (e *Event) Clone() *Event {
	c := *e
	if e.OrchestrationInstance != nil {
		oi := *e.OrchestrationInstance
		c.OrchestrationInstance = &oi
	}
	if e.ParentInstance != nil {
		pi := *e.ParentInstance
		c.ParentInstance = &pi
	}
	if e.Tags != nil {
		c.Tags = make(map[string]string, len(e.Tags))
		for k, v := range e.Tags {
			c.Tags[k] = v
		}
	}
	if e.ScheduledStartTime != nil {
		t := *e.ScheduledStartTime
		c.ScheduledStartTime = &t
	}
	if e.FailureDetails != nil {
		f := *e.FailureDetails
		c.FailureDetails = &f
	}
	return &c
}
