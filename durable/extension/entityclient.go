package extension

import (
	"context"

	"github.com/stratus-dev/stratus/durable"
	"github.com/stratus-dev/stratus/durable/httpapi"
)

// EntityClient adapts the durable client to the management API's entity
// routes.
type EntityClient struct {
	c *durable.Client
}

var _ httpapi.EntityClient = (*EntityClient)(nil)

// NewEntityClient returns the adapter.
func NewEntityClient(c *durable.Client) *EntityClient { return &EntityClient{c: c} }

// SignalEntity signals operation op with a JSON input ("" = none).
func (a *EntityClient) SignalEntity(ctx context.Context, name, key, op, input string) error {
	return a.c.SignalEntity(ctx, durable.NewEntityID(name, key), op, raw(input))
}

// ReadEntity returns the entity's JSON state and whether it exists.
func (a *EntityClient) ReadEntity(ctx context.Context, name, key string) (string, bool, error) {
	s, ok, err := a.c.ReadEntityState(ctx, durable.NewEntityID(name, key))
	return string(s), ok, err
}

// ListEntities lists existing entities.
func (a *EntityClient) ListEntities(ctx context.Context, q httpapi.EntityQuery) (*httpapi.EntityPage, error) {
	p, err := a.c.ListEntities(ctx, durable.EntityQuery{
		Name: q.Name, LastOperationFrom: q.LastOperationTimeFrom, LastOperationTo: q.LastOperationTimeTo,
		PageSize: q.PageSize, ContinuationToken: q.ContinuationToken, FetchState: q.FetchState,
	})
	if err != nil {
		return nil, err
	}
	out := &httpapi.EntityPage{ContinuationToken: p.ContinuationToken}
	for _, e := range p.Entities {
		out.Entities = append(out.Entities, httpapi.EntityStatus{
			Name: e.ID.Name, Key: e.ID.Key, LastOperationTime: e.LastOperationTime, State: string(e.State),
		})
	}
	return out, nil
}
