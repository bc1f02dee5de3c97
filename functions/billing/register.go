package billing

import (
	"context"
	"errors"

	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/triggers/httptrigger"
)

// Function names.
const (
	// PaymentSimulator serves GET and POST /api/sim/payments.
	PaymentSimulator = "PaymentSimulator"
	// PaymentSimulatorConfig serves GET, POST and DELETE
	// /api/sim/payments/config.
	PaymentSimulatorConfig = "PaymentSimulatorConfig"
)

// Simulator routes (under the host's route prefix).
const (
	SimulatorRoute       = "sim/payments"
	SimulatorConfigRoute = "sim/payments/config"
)

// Register adds the billing service's functions. One [Service] is shared by
// all of them and bound at start-up.
func Register(r *registry.Registry) error {
	svc := NewService()
	return errors.Join(
		registerSimulator(r, svc),
		registerRun(r, svc),
	)
}

// registerSimulator adds the payment simulator's HTTP functions.
func registerSimulator(r *registry.Registry, svc *Service) error {
	sim := func(h func(*Simulator) httptrigger.HandlerFunc) httptrigger.HandlerFunc {
		return func(ctx context.Context, req *httptrigger.Request) (*httptrigger.Response, error) {
			if err := svc.ready(); err != nil {
				return nil, err
			}
			return h(svc.Simulator)(ctx, req)
		}
	}
	return errors.Join(
		r.Add(httptrigger.Function(PaymentSimulator,
			httptrigger.Trigger{Route: SimulatorRoute, Methods: []string{"GET", "POST"}, AuthLevel: httptrigger.Anonymous},
			sim(func(s *Simulator) httptrigger.HandlerFunc { return s.HandleCharges }),
			registry.WithBindings(svc.Binding("ledger", SimPaymentsTable)))),
		r.Add(httptrigger.Function(PaymentSimulatorConfig,
			httptrigger.Trigger{Route: SimulatorConfigRoute, Methods: []string{"GET", "POST", "DELETE"}, AuthLevel: httptrigger.Anonymous},
			sim(func(s *Simulator) httptrigger.HandlerFunc { return s.HandleConfig }),
			registry.WithBindings(svc.Binding("ledger", SimPaymentsTable)))),
	)
}
