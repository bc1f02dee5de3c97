package billing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/stratus-dev/stratus/durable"
	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
)

// Durable function names.
const (
	// ProcessBilling is the orchestrator of one billing run.
	ProcessBilling = "O_ProcessBillingSubscription"
	// ListActivity returns the subscriptions due.
	ListActivity = "A_GetSubscriptionListToBill"
	// ChargeActivity charges one subscription.
	ChargeActivity = "A_ChargeUserSubscription"
	// EmailActivity sends one message.
	EmailActivity = "A_SendEmail"
	// InvoiceActivity records the results and writes the report.
	InvoiceActivity = "A_GenerateInvoice"
)

// Retry policy of a charge, as in the classic Durable Functions billing
// sample: 10 s first interval (BillingRetryFirstIntervalSeconds), doubling,
// 10 attempts.
const (
	ChargeBackoffCoefficient = 2
	ChargeMaxAttempts        = 10
	// StepMaxAttempts bounds the retries of the other activities (storage
	// and mail blips).
	StepMaxAttempts = 5
)

// RunInput is the input of [ProcessBilling]. It may also be given as a bare
// JSON string, the billing day.
type RunInput struct {
	// BillingDay is YYYY-MM-DD; the orchestration's start day (UTC) when
	// empty. Subscriptions whose next billing date is on or before it are
	// billed.
	BillingDay string `json:"billingDay"`
	// RetryFirstIntervalSeconds is the charge retry policy's first interval;
	// 10 when zero. The timer fills it in from the app setting
	// BillingRetryFirstIntervalSeconds, since an orchestrator must not read
	// settings.
	RetryFirstIntervalSeconds float64 `json:"retryFirstIntervalSeconds,omitempty"`
}

// UnmarshalJSON accepts an object or a string (the billing day).
func (in *RunInput) UnmarshalJSON(b []byte) error {
	var day string
	if err := json.Unmarshal(b, &day); err == nil {
		*in = RunInput{BillingDay: day}
		return nil
	}
	type plain RunInput
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return fmt.Errorf("billing run input must be \"YYYY-MM-DD\" or {\"billingDay\": \"YYYY-MM-DD\"}: %w", err)
	}
	*in = RunInput(p)
	return nil
}

// Progress is the run's custom status.
type Progress struct {
	BillingDay string `json:"billingDay"`
	// Stage is listing, charging, reporting or done.
	Stage string `json:"stage"`
	// Total is the number of subscriptions due; Charged + Failed + Pending
	// is Total.
	Total   int `json:"total"`
	Charged int `json:"charged"`
	Failed  int `json:"failed"`
	Pending int `json:"pending"`
}

// Summary is the output of [ProcessBilling].
type Summary struct {
	BillingDay string `json:"billingDay"`
	// Subscriptions is the number billed; Charged + Failed.
	Subscriptions int `json:"subscriptions"`
	Charged       int `json:"charged"`
	Failed        int `json:"failed"`
	// Totals are per currency.
	Totals []CurrencyTotal `json:"totals"`
	// ReportBlob and CSVBlob are the report (container/name).
	ReportBlob string `json:"reportBlob"`
	CSVBlob    string `json:"csvBlob"`
	// NoticesSent counts the notices delivered (or found sent already);
	// NoticesFailed those that failed every attempt.
	NoticesSent   int `json:"noticesSent"`
	NoticesFailed int `json:"noticesFailed"`
	// Report is where the report email went.
	Report Delivery `json:"report"`
}

// Orchestrator returns [ProcessBilling]'s function.
func Orchestrator() durable.Orchestrator { return durable.Orchestration(processBilling) }

// processBilling is one billing run: list the subscriptions due; for each,
// one concurrent branch charges it (with retries) and then sends the
// subscriber a notice; once every branch is done, record the results, write
// the report and mail it to the owner.
func processBilling(ctx *durable.OrchestrationContext, in RunInput) (Summary, error) {
	day := in.BillingDay
	if day == "" {
		day = ctx.CurrentUTCTime().Format(DayLayout)
	}
	if _, err := ParseDay(day); err != nil {
		return Summary{}, fmt.Errorf("billing run: %w", err)
	}
	first := DefaultRetryFirstInterval
	if in.RetryFirstIntervalSeconds > 0 {
		first = time.Duration(in.RetryFirstIntervalSeconds * float64(time.Second))
	}
	charging := durable.WithRetry(durable.RetryPolicy{FirstRetryInterval: first, BackoffCoefficient: ChargeBackoffCoefficient, MaxAttempts: ChargeMaxAttempts})
	step := durable.WithRetry(durable.RetryPolicy{FirstRetryInterval: first, BackoffCoefficient: 2, MaxAttempts: StepMaxAttempts})
	log := ctx.Logger().With("billing_day", day)

	progress := Progress{BillingDay: day, Stage: "listing"}
	if err := ctx.SetCustomStatus(progress); err != nil {
		return Summary{}, err
	}
	subs, err := durable.Await[[]Subscription](ctx.CallActivity(ListActivity, day, step))
	if err != nil {
		return Summary{}, fmt.Errorf("list subscriptions due on %s: %w", day, err)
	}
	progress.Stage, progress.Total, progress.Pending = "charging", len(subs), len(subs)
	if err := ctx.SetCustomStatus(progress); err != nil {
		return Summary{}, err
	}
	log.Info("billing run started", "due", len(subs))

	// Only one branch runs at a time, in a fixed order, so they share
	// results, progress and sum without locks.
	sum := Summary{BillingDay: day, Subscriptions: len(subs)}
	results := make([]Result, len(subs))
	branches := make([]durable.Task, len(subs))
	for i, sub := range subs {
		branches[i] = ctx.Go(func(c *durable.OrchestrationContext) (any, error) {
			r, err := durable.Await[Result](c.CallActivity(ChargeActivity, ChargeInput{BillingDay: day, Subscription: sub}, charging))
			if err != nil {
				r = Result{SubscriptionID: sub.ID, Period: sub.NextBillingDate, BillingDay: day, Name: sub.Name, Email: sub.Email,
					Plan: sub.Plan, Status: Failed, AmountMinor: sub.AmountMinor, Currency: sub.Currency, Error: failureMessage(err)}
			}
			results[i] = r
			progress.Pending--
			if r.Status == Charged {
				progress.Charged++
			} else {
				progress.Failed++
			}
			if err := c.SetCustomStatus(progress); err != nil {
				return nil, err
			}
			if _, err := durable.Await[Delivery](c.CallActivity(EmailActivity, EmailInput{Email: NoticeEmail(day, r)}, step)); err != nil {
				sum.NoticesFailed++
				c.Logger().Warn("notice not sent", "subscription", sub.ID, "err", failureMessage(err))
				return nil, nil
			}
			sum.NoticesSent++
			return nil, nil
		})
	}
	if err := ctx.WhenAll(branches...); err != nil {
		return Summary{}, fmt.Errorf("billing branches: %w", err)
	}

	progress.Stage = "reporting"
	if err := ctx.SetCustomStatus(progress); err != nil {
		return Summary{}, err
	}
	inv, err := durable.Await[InvoiceResult](ctx.CallActivity(InvoiceActivity, InvoiceInput{BillingDay: day, Results: results}, step))
	if err != nil {
		return Summary{}, fmt.Errorf("generate the report of %s: %w", day, err)
	}
	sum.Charged, sum.Failed, sum.Totals, sum.ReportBlob, sum.CSVBlob = inv.Charged, inv.Failed, inv.Totals, inv.HTMLBlob, inv.CSVBlob
	// An empty recipient is the app setting BillingOwnerEmail.
	sum.Report, err = durable.Await[Delivery](ctx.CallActivity(EmailActivity, ReportEmail(day, "", inv), step))
	if err != nil {
		return Summary{}, fmt.Errorf("mail the report of %s: %w", day, err)
	}
	progress.Stage = "done"
	if err := ctx.SetCustomStatus(progress); err != nil {
		return Summary{}, err
	}
	log.Info("billing run finished", "charged", sum.Charged, "failed", sum.Failed)
	return sum, nil
}

// failureMessage is the activity's own message of a failed call.
func failureMessage(err error) string {
	var tf *durable.TaskFailedError
	if errors.As(err, &tf) && tf.Details.ErrorMessage != "" {
		return strings.TrimSpace(tf.Details.ErrorMessage)
	}
	return err.Error()
}

// Activities returns the billing activities by name, bound to s.
func (s *Service) Activities() map[string]durable.ActivityFunc {
	return map[string]durable.ActivityFunc{
		ListActivity:    durable.Activity(s.ListToBill),
		ChargeActivity:  durable.Activity(s.Charge),
		EmailActivity:   durable.Activity(s.SendEmail),
		InvoiceActivity: durable.Activity(s.GenerateInvoice),
	}
}

// RunInstanceID is the instance id of day's billing run: billing-YYYY-MM-DD.
func RunInstanceID(day string) string { return "billing-" + day }

// Starter is the part of the durable client [StartRun] uses.
type Starter interface {
	GetInstance(ctx context.Context, id string, fetchInput bool) (*backend.InstanceState, error)
	ScheduleNew(ctx context.Context, orchestrator string, input any, opts ...durable.StartOption) (string, error)
}

// StartRun starts the billing run of in.BillingDay as instance
// [RunInstanceID], once per day: when that instance exists and is pending,
// running, suspended or completed, it starts nothing and returns started
// false. A run that failed or was terminated is started again (every charge
// and notice of the earlier attempt is idempotent, so the new run only does
// what is left).
func StartRun(ctx context.Context, c Starter, in RunInput) (id string, started bool, err error) {
	if _, err := ParseDay(in.BillingDay); err != nil {
		return "", false, fmt.Errorf("start billing run: %w", err)
	}
	id = RunInstanceID(in.BillingDay)
	st, err := c.GetInstance(ctx, id, false)
	switch {
	case errors.Is(err, backend.ErrInstanceNotFound):
	case err != nil:
		return id, false, fmt.Errorf("start billing run %s: %w", id, err)
	default:
		switch st.RuntimeStatus {
		case history.StatusFailed, history.StatusTerminated, history.StatusCanceled:
		default:
			return id, false, nil
		}
	}
	_, err = c.ScheduleNew(ctx, ProcessBilling, in, durable.WithStartInstanceID(id))
	if errors.Is(err, backend.ErrInstanceExists) {
		return id, false, nil
	}
	if err != nil {
		return id, false, fmt.Errorf("start billing run %s: %w", id, err)
	}
	return id, true, nil
}
