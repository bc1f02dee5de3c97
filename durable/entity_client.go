package durable

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/stratus-dev/stratus/durable/backend"
)

// SignalEntity sends a one-way operation with input (JSON-encoded; raw JSON
// is passed through) to entity id, creating the entity if it does not
// exist. Option: [WithSignalTime] delivers it later. Signals from clients
// are delivered exactly once but not ordered among themselves.
func (c *Client) SignalEntity(ctx context.Context, id EntityID, operation string, input any, opts ...SignalOption) error {
	if err := id.validate(); err != nil {
		return fmt.Errorf("signal %s: %w", id, err)
	}
	if operation == "" {
		return fmt.Errorf("signal %s: the operation name must not be empty", id)
	}
	in, err := encodeJSON(input)
	if err != nil {
		return fmt.Errorf("signal %s %s: encode input: %w", id, operation, err)
	}
	o := applySignalOptions(opts)
	now := c.now().UTC()
	if !o.at.After(now) {
		o.at = time.Time{}
	}
	m := requestMessage(id, &entityRequest{Op: operation, Signal: true, Input: in, ID: newGUID()}, o.at)
	m.Event.Timestamp = now
	if err := c.b.SendEvent(ctx, m); err != nil {
		return fmt.Errorf("signal %s %s: %w", id, operation, err)
	}
	return nil
}

// EntityState is what a client reads of an entity.
type EntityState struct {
	// ID is the entity.
	ID EntityID
	// Exists is false for an entity that never had state or whose state
	// was deleted.
	Exists bool
	// State is the entity's JSON state ("" when it does not exist).
	State json.RawMessage
	// LastOperationTime is when the entity last processed messages.
	LastOperationTime time.Time
	// QueueSize counts requests waiting (for a lock to be released).
	QueueSize int
	// LockedBy is the orchestration holding the entity's lock, if any.
	LockedBy string
}

// ReadEntityState returns the committed state of entity id; exists is
// false when it has none (never created, or deleted).
func (c *Client) ReadEntityState(ctx context.Context, id EntityID) (state json.RawMessage, exists bool, err error) {
	st, err := c.GetEntity(ctx, id)
	if err != nil {
		return nil, false, err
	}
	return st.State, st.Exists, nil
}

// GetEntity returns what is known of entity id; an entity that does not
// exist has Exists false.
func (c *Client) GetEntity(ctx context.Context, id EntityID) (*EntityState, error) {
	if err := id.validate(); err != nil {
		return nil, fmt.Errorf("read entity %s: %w", id, err)
	}
	row, err := c.b.GetInstance(ctx, id.String(), true)
	if errors.Is(err, backend.ErrInstanceNotFound) {
		return &EntityState{ID: id}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read entity %s: %w", id, err)
	}
	return entityStateOf(id, row, true)
}

func entityStateOf(id EntityID, row *backend.InstanceState, withState bool) (*EntityState, error) {
	es := &EntityState{ID: id, LastOperationTime: row.LastUpdatedTime}
	if withState {
		st, err := parseSchedulerState(row.Input)
		if err != nil {
			return nil, fmt.Errorf("read entity %s: decode state: %w", id, err)
		}
		es.Exists, es.QueueSize, es.LockedBy = st.Exists, len(st.Queue), st.LockedBy
		if st.Exists {
			es.State = json.RawMessage(st.State)
		}
		return es, nil
	}
	var cs entityCustomStatus
	if row.CustomStatus != "" {
		if err := json.Unmarshal([]byte(row.CustomStatus), &cs); err != nil {
			return nil, fmt.Errorf("read entity %s: decode status: %w", id, err)
		}
	}
	es.Exists, es.QueueSize, es.LockedBy = cs.EntityExists, cs.QueueSize, cs.LockedBy
	return es, nil
}

// EntityQuery filters ListEntities.
type EntityQuery struct {
	// Name lists only entities of that name ("" = all).
	Name string
	// LastOperationFrom and LastOperationTo bound LastOperationTime
	// (inclusive; zero = unbounded).
	LastOperationFrom, LastOperationTo time.Time
	// PageSize bounds the instances read per page (0 = 100); deleted
	// entities are left out, so a page may hold fewer.
	PageSize int
	// ContinuationToken is "" for the first page.
	ContinuationToken string
	// FetchState includes each entity's state.
	FetchState bool
}

// EntityPage is one page of ListEntities.
type EntityPage struct {
	Entities []*EntityState
	// ContinuationToken is "" on the last page.
	ContinuationToken string
}

// ListEntities lists existing entities through the task hub's instance
// query; entities without state (deleted) are left out.
func (c *Client) ListEntities(ctx context.Context, q EntityQuery) (*EntityPage, error) {
	bq := backend.InstanceQuery{EntitiesOnly: true, PageSize: q.PageSize, ContinuationToken: q.ContinuationToken, FetchInput: q.FetchState}
	if q.Name != "" {
		bq.InstanceIDPrefix = "@" + strings.ToLower(q.Name) + "@"
	}
	p, err := c.b.QueryInstances(ctx, bq)
	if err != nil {
		return nil, fmt.Errorf("list entities: %w", err)
	}
	page := &EntityPage{ContinuationToken: p.ContinuationToken}
	for _, row := range p.Instances {
		id, err := ParseEntityID(row.InstanceID)
		if err != nil {
			continue
		}
		if !q.LastOperationFrom.IsZero() && row.LastUpdatedTime.Before(q.LastOperationFrom) ||
			!q.LastOperationTo.IsZero() && row.LastUpdatedTime.After(q.LastOperationTo) {
			continue
		}
		es, err := entityStateOf(id, row, q.FetchState)
		if err != nil {
			return nil, fmt.Errorf("list entities: %w", err)
		}
		if es.Exists {
			page.Entities = append(page.Entities, es)
		}
	}
	return page, nil
}
