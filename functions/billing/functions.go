package billing

import (
	"context"
	"errors"
	"maps"
	"os"
	"slices"

	"github.com/stratus-dev/stratus/durable"
	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/triggers/timer"
)

// BillingTimer is the timer that starts the daily run.
const BillingTimer = "BillingTimer"

// DefaultSchedule fires BillingTimer every day at 01:00 (in
// WEBSITE_TIME_ZONE, UTC by default).
const DefaultSchedule = "0 0 1 * * *"

// Schedule returns BillingTimer's schedule: the environment variable
// BillingSchedule when set (functions are registered before settings are
// read, so local.settings.json cannot change it), else [DefaultSchedule].
func Schedule() string {
	if s, ok := os.LookupEnv(SettingSchedule); ok && s != "" {
		return s
	}
	return DefaultSchedule
}

// registerRun adds BillingTimer, the orchestrator and its activities.
func registerRun(r *registry.Registry, svc *Service) error {
	client := durable.ClientInput("client")
	errs := []error{
		durable.RegisterOrchestrator(r, ProcessBilling, Orchestrator()),
		r.Add(timer.Function(BillingTimer, timer.Trigger{Schedule: Schedule()},
			func(ctx context.Context, t *timer.Info) error {
				if err := svc.ready(); err != nil {
					return err
				}
				in := RunInput{BillingDay: t.Occurrence.Format(DayLayout), RetryFirstIntervalSeconds: svc.Settings.RetryFirstInterval.Seconds()}
				log := registry.Logger(ctx)
				id, started, err := StartRun(ctx, client.Client(), in)
				if err != nil {
					return err
				}
				if !started {
					log.Info("billing run of this day exists already; nothing started", "instance_id", id, "billing_day", in.BillingDay)
					return nil
				}
				log.Info("billing run started", "instance_id", id, "billing_day", in.BillingDay, "past_due", t.IsPastDue)
				return nil
			}, registry.WithBindings(client, svc.Binding("subscriptions", SubscriptionsTable)))),
	}
	acts := svc.Activities()
	for _, name := range slices.Sorted(maps.Keys(acts)) {
		errs = append(errs, durable.RegisterActivity(r, name, acts[name], registry.WithBindings(svc.Binding("billing", SubscriptionsTable))))
	}
	return errors.Join(errs...)
}
