package durable

import (
	"errors"
	"fmt"
	"strings"

	"github.com/stratus-dev/stratus/durable/history"
)

// Sentinel errors.
var (
	// ErrTimeout is matched (errors.Is) by the error of a
	// WaitForExternalEvent task whose timeout timer fired first.
	ErrTimeout = errors.New("timed out")
	// ErrCanceled is returned by tasks created after the orchestration ended
	// (for example from a deferred call while an instance is being unloaded).
	ErrCanceled = errors.New("canceled")
	// ErrInvalidInstanceID is matched by the errors of [ValidateInstanceID].
	ErrInvalidInstanceID = errors.New("invalid instance id")
	// ErrInstanceFinished is returned by client calls that need a running
	// instance (raise event, terminate, suspend, resume) when the instance
	// has already completed, failed or been terminated.
	ErrInstanceFinished = errors.New("instance is no longer running")
	// ErrNotFailed is returned by Rewind for an instance that is not Failed.
	ErrNotFailed = errors.New("only failed instances can be rewound")
)

// NonDeterminismCode is the stable, searchable code carried by every
// [NonDeterminismError] message.
const NonDeterminismCode = "STRATUS-ND1"

// TaskFailedError is what Await returns for a failed activity or
// sub-orchestration. Details are the failure details the activity (or child
// orchestration) reported, as Durable Functions' FailureDetails.
type TaskFailedError struct {
	// TaskName is the activity or sub-orchestrator name.
	TaskName string
	// TaskID is the EventID of the TaskScheduled (or
	// SubOrchestrationInstanceCreated) event of the failed attempt.
	TaskID int
	// Details describes the failure.
	Details history.FailureDetails

	sub bool
}

// Error formats the failure as Durable Functions does:
// The activity function 'X' failed: "<msg>". See the function execution logs for additional details.
func (e *TaskFailedError) Error() string {
	kind := "activity"
	if e.sub {
		kind = "orchestrator"
	}
	return fmt.Sprintf("The %s function '%s' failed: %q. See the function execution logs for additional details.", kind, e.TaskName, e.Details.ErrorMessage)
}

// NonDeterminismError reports an orchestrator whose replay does not match
// its history: the orchestrator scheduled something other than what history
// records at the same sequence number, or history holds a result for a task
// the orchestrator never scheduled. The instance fails with this error.
type NonDeterminismError struct {
	// Orchestrator is the orchestrator function name.
	Orchestrator string
	// InstanceID is the instance being replayed.
	InstanceID string
	// Position is the sequence number (EventID) where replay diverged.
	Position int
	// Want is what history holds there; Got is what the orchestrator did.
	Want, Got string
}

// Error names the function, the position and both calls.
func (e *NonDeterminismError) Error() string {
	return fmt.Sprintf("[%s] non-deterministic orchestrator '%s' (instance %s): at position %d history has %s but the orchestrator %s; orchestrator code must make the same calls in the same order on every replay",
		NonDeterminismCode, e.Orchestrator, e.InstanceID, e.Position, e.Want, e.Got)
}

// DeadlockError reports an orchestrator coroutine that blocked outside the
// durable API (time.Sleep, I/O, channels, mutexes, long computations).
type DeadlockError struct {
	// Orchestrator is the orchestrator function name.
	Orchestrator string
	// InstanceID is the instance.
	InstanceID string
	// Timeout is how long the coroutine ran without yielding.
	Timeout string
}

// Error explains what blocked and what is allowed.
func (e *DeadlockError) Error() string {
	return fmt.Sprintf("orchestrator '%s' (instance %s) ran for %s without yielding: it is blocked outside the durable API (time.Sleep, I/O, a channel, a mutex or a long computation); orchestrators may only block in Await, WhenAll and WhenAny", e.Orchestrator, e.InstanceID, e.Timeout)
}

// PanicError is the error of a panicking activity or orchestrator.
type PanicError struct {
	// Value is the recovered value.
	Value any
	// Stack is the goroutine stack at the panic.
	Stack string
}

// Error describes the panic.
func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// ErrorType names the failure type in FailureDetails.
func (e *PanicError) ErrorType() string { return "panic" }

// continueAsNewError is returned by ContinueAsNew.
type continueAsNewError struct {
	input string
	keep  bool
}

func (e *continueAsNewError) Error() string {
	return "orchestration continued as new (return this error from the orchestrator)"
}

// failureDetails converts err into FailureDetails. An error may name its type
// with an ErrorType() string method; otherwise its Go type is used.
func failureDetails(err error) *history.FailureDetails {
	fd := &history.FailureDetails{ErrorMessage: err.Error()}
	var typed interface{ ErrorType() string }
	var pe *PanicError
	var tf *TaskFailedError
	var nd *NonDeterminismError
	switch {
	case errors.As(err, &pe):
		fd.ErrorType = pe.ErrorType()
		fd.StackTrace = pe.Stack
	case errors.As(err, &nd):
		fd.ErrorType = "NonDeterminismError"
		fd.IsNonRetriable = true
	case errors.As(err, &typed):
		fd.ErrorType = typed.ErrorType()
	default:
		fd.ErrorType = strings.TrimPrefix(fmt.Sprintf("%T", err), "*")
	}
	if errors.As(err, &tf) {
		inner := tf.Details
		fd.InnerFailure = &inner
	}
	return fd
}
