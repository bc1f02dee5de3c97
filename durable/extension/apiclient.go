package extension

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/stratus-dev/stratus/durable"
	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
	"github.com/stratus-dev/stratus/durable/httpapi"
	"github.com/stratus-dev/stratus/host/registry"
)

// APIClient adapts the durable client to what the management API and the
// operator CLI need: JSON texts in and out, and orchestrator names checked
// against the function registry.
type APIClient struct {
	c   *durable.Client
	reg *registry.Registry
}

var _ httpapi.Client = (*APIClient)(nil)

// NewAPIClient returns the adapter. reg may be nil, which skips the check
// that an orchestrator exists (the CLI may run without the app's functions).
func NewAPIClient(c *durable.Client, reg *registry.Registry) *APIClient {
	return &APIClient{c: c, reg: reg}
}

func raw(s string) any {
	if s == "" {
		return nil
	}
	return json.RawMessage(s)
}

// ScheduleNew starts orchestrator name; it answers
// httpapi.ErrUnknownOrchestrator for names no orchestrator function has.
func (a *APIClient) ScheduleNew(ctx context.Context, name, input, instanceID string, startAt time.Time) (string, error) {
	if a.reg != nil {
		fn, ok := a.reg.Lookup(name)
		if !ok || fn.Trigger.Type != durable.OrchestrationTriggerType {
			return "", fmt.Errorf("%w: %q", httpapi.ErrUnknownOrchestrator, name)
		}
		name = fn.Name
	}
	var opts []durable.StartOption
	if instanceID != "" {
		opts = append(opts, durable.WithStartInstanceID(instanceID))
	}
	if !startAt.IsZero() {
		opts = append(opts, durable.WithStartTime(startAt))
	}
	id, err := a.c.ScheduleNew(ctx, name, raw(input), opts...)
	return id, apiError(err)
}

// GetInstance returns the status row.
func (a *APIClient) GetInstance(ctx context.Context, id string, fetchInput bool) (*backend.InstanceState, error) {
	return a.c.GetInstance(ctx, id, fetchInput)
}

// GetHistory returns the current execution's history.
func (a *APIClient) GetHistory(ctx context.Context, id string) ([]*history.Event, error) {
	return a.c.GetHistory(ctx, id)
}

// Query lists instances.
func (a *APIClient) Query(ctx context.Context, q backend.InstanceQuery) (*backend.InstancePage, error) {
	return a.c.Query(ctx, q)
}

// RaiseEvent sends an external event with JSON data.
func (a *APIClient) RaiseEvent(ctx context.Context, id, name, data string) error {
	return apiError(a.c.RaiseEvent(ctx, id, name, raw(data)))
}

// Terminate terminates an instance.
func (a *APIClient) Terminate(ctx context.Context, id, reason string) error {
	return apiError(a.c.Terminate(ctx, id, reason))
}

// Suspend suspends an instance.
func (a *APIClient) Suspend(ctx context.Context, id, reason string) error {
	return apiError(a.c.Suspend(ctx, id, reason))
}

// Resume resumes a suspended instance.
func (a *APIClient) Resume(ctx context.Context, id, reason string) error {
	return apiError(a.c.Resume(ctx, id, reason))
}

// Rewind asks a failed instance to run again from its last good state.
func (a *APIClient) Rewind(ctx context.Context, id, reason string) error {
	return apiError(a.c.Rewind(ctx, id, reason))
}

// apiError adds the management API's sentinel to the durable client's
// errors, so that the API answers them as Durable Functions does: an
// instance that is no longer running 410, an instance that is not Failed
// (rewind) or an invalid id 400. The durable error stays matchable.
func apiError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, durable.ErrInstanceFinished):
		return fmt.Errorf("%w: %w", httpapi.ErrInstanceFinished, err)
	case errors.Is(err, durable.ErrNotFailed):
		return fmt.Errorf("%w: %w", httpapi.ErrNotFailed, err)
	case errors.Is(err, durable.ErrInvalidInstanceID):
		return fmt.Errorf("%w: %w", httpapi.ErrBadRequest, err)
	}
	return err
}

// Purge deletes one instance.
func (a *APIClient) Purge(ctx context.Context, id string) error { return a.c.Purge(ctx, id) }

// PurgeBy deletes the terminal instances a filter selects.
func (a *APIClient) PurgeBy(ctx context.Context, f backend.PurgeFilter) (int, error) {
	return a.c.PurgeBy(ctx, f)
}

// ManagementKey is the key written into the management URLs the host hands
// out (check-status payloads, durableClient binding data): the system key
// in FUNCTIONS_SYSTEM_KEY_durabletask_extension when set, else one derived
// from the master key. Never the master key itself: those URLs reach the
// callers of anonymous HTTP starters. Hosts sharing a master key derive the
// same key, so a URL one host made works on every host of the app.
func ManagementKey(configured, master string) string {
	if configured != "" {
		return configured
	}
	m := hmac.New(sha256.New, []byte(master))
	m.Write([]byte(SystemKeyName))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}
