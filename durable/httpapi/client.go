package httpapi

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"

	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
)

// Client is what the management API needs from the durable engine. The
// durable client satisfies it through a thin adapter; tests may pass a double.
type Client interface {
	// ScheduleNew starts orchestrator name with a JSON input ("" = null) and
	// returns the instance id. instanceID "" means generate one.
	// ErrUnknownOrchestrator, backend.ErrInstanceExists.
	ScheduleNew(ctx context.Context, name, input, instanceID string, startAt time.Time) (string, error)
	// GetInstance returns the status row or backend.ErrInstanceNotFound.
	GetInstance(ctx context.Context, id string, fetchInput bool) (*backend.InstanceState, error)
	// GetHistory returns the current execution's history.
	GetHistory(ctx context.Context, id string) ([]*history.Event, error)
	// Query lists instances.
	Query(ctx context.Context, q backend.InstanceQuery) (*backend.InstancePage, error)
	// RaiseEvent sends an external event with JSON data.
	RaiseEvent(ctx context.Context, id, name, data string) error
	// Terminate, Suspend, Resume and Rewind send the matching control event.
	Terminate(ctx context.Context, id, reason string) error
	Suspend(ctx context.Context, id, reason string) error
	Resume(ctx context.Context, id, reason string) error
	Rewind(ctx context.Context, id, reason string) error
	// Purge deletes one instance (backend.ErrInstanceNotFound when absent).
	Purge(ctx context.Context, id string) error
	// PurgeBy deletes terminal instances matching the filter.
	PurgeBy(ctx context.Context, f backend.PurgeFilter) (int, error)
}

// EntityClient is the part of the durable client that serves entities.
// Without one, entity routes answer 501.
type EntityClient interface {
	// SignalEntity sends a one-way operation with a JSON input ("" = none).
	SignalEntity(ctx context.Context, name, key, op, input string) error
	// ReadEntity returns the entity's JSON state and whether it exists.
	ReadEntity(ctx context.Context, name, key string) (state string, exists bool, err error)
	// ListEntities lists entities (name "" = all).
	ListEntities(ctx context.Context, q EntityQuery) (*EntityPage, error)
}

// EntityQuery filters entity listings.
type EntityQuery struct {
	Name                  string
	LastOperationTimeFrom time.Time
	LastOperationTimeTo   time.Time
	PageSize              int
	ContinuationToken     string
	FetchState            bool
}

// EntityPage is one page of entities.
type EntityPage struct {
	Entities          []EntityStatus
	ContinuationToken string
}

// EntityStatus is one listed entity.
type EntityStatus struct {
	Name              string
	Key               string
	LastOperationTime time.Time
	State             string // JSON, when fetched
}

// ErrUnknownOrchestrator is returned by ScheduleNew for a name no
// orchestrator function has.
var ErrUnknownOrchestrator = errors.New("no orchestrator function with this name")

// ValidateInstanceID applies the Durable Functions rules to an instance id.
func ValidateInstanceID(id string) error {
	switch {
	case id == "":
		return errors.New("instance id must not be empty")
	case len(id) > 256:
		return fmt.Errorf("instance id is %d characters long; the limit is 256", len(id))
	case strings.HasPrefix(id, "@"):
		return errors.New("instance id must not start with '@' (reserved for entities)")
	}
	for _, r := range id {
		if r == '/' || r == '\\' || r == '#' || r == '?' || unicode.IsControl(r) {
			return fmt.Errorf("instance id %q contains %q; '/', '\\', '#', '?' and control characters are not allowed", id, r)
		}
	}
	return nil
}

// ValidateEventName checks an external event name.
func ValidateEventName(name string) error {
	if name == "" {
		return errors.New("event name must not be empty")
	}
	if len(name) > 256 {
		return errors.New("event name is longer than 256 characters")
	}
	for _, r := range name {
		if unicode.IsControl(r) || r == '/' || r == '\\' || r == '#' || r == '?' {
			return fmt.Errorf("event name %q contains %q, which is not allowed", name, r)
		}
	}
	return nil
}
