package extension

import (
	"context"
	"fmt"
	"time"

	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
)

// gatedClient holds client calls until the task hub has started (its queues
// and tables exist), so that requests arriving while the host is still
// creating them wait instead of failing.
type gatedClient struct {
	b     backend.Client
	ready chan struct{}
}

var _ backend.Client = (*gatedClient)(nil)

// readyTimeout bounds the wait of one call for the hub to start.
const readyTimeout = 30 * time.Second

func (g *gatedClient) wait(ctx context.Context) error {
	select {
	case <-g.ready:
		return nil
	default:
	}
	t := time.NewTimer(readyTimeout)
	defer t.Stop()
	select {
	case <-g.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("the durable task hub has not started within %v (is the storage account reachable?)", readyTimeout)
	}
}

func (g *gatedClient) CreateInstance(ctx context.Context, started *history.Event) error {
	if err := g.wait(ctx); err != nil {
		return err
	}
	return g.b.CreateInstance(ctx, started)
}

func (g *gatedClient) SendEvent(ctx context.Context, m backend.Message) error {
	if err := g.wait(ctx); err != nil {
		return err
	}
	return g.b.SendEvent(ctx, m)
}

func (g *gatedClient) GetInstance(ctx context.Context, id string, fetchInput bool) (*backend.InstanceState, error) {
	if err := g.wait(ctx); err != nil {
		return nil, err
	}
	return g.b.GetInstance(ctx, id, fetchInput)
}

func (g *gatedClient) GetHistory(ctx context.Context, id string) ([]*history.Event, error) {
	if err := g.wait(ctx); err != nil {
		return nil, err
	}
	return g.b.GetHistory(ctx, id)
}

func (g *gatedClient) QueryInstances(ctx context.Context, q backend.InstanceQuery) (*backend.InstancePage, error) {
	if err := g.wait(ctx); err != nil {
		return nil, err
	}
	return g.b.QueryInstances(ctx, q)
}

func (g *gatedClient) PurgeInstance(ctx context.Context, id string) error {
	if err := g.wait(ctx); err != nil {
		return err
	}
	return g.b.PurgeInstance(ctx, id)
}

func (g *gatedClient) PurgeInstances(ctx context.Context, f backend.PurgeFilter) (int, error) {
	if err := g.wait(ctx); err != nil {
		return 0, err
	}
	return g.b.PurgeInstances(ctx, f)
}

func (g *gatedClient) SetInstanceState(ctx context.Context, s *backend.InstanceState) error {
	if err := g.wait(ctx); err != nil {
		return err
	}
	return g.b.SetInstanceState(ctx, s)
}
