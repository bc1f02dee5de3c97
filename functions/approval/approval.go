// Package approval is the expense approval sample: a human-in-the-loop
// workflow with a deadline.
//
//   - POST /api/expenses with {"employee","employeeEmail","approver",
//     "amount","currency","description","deadlineSeconds","escalateTo"}
//     starts ExpenseApproval and answers 202 with the check-status payload.
//   - ExpenseApproval e-mails the approver (A_NotifyApprover), then waits for
//     the event ApprovalDecision up to the deadline (a durable timer,
//     default 72 h). Approved → A_PayExpense records the payment once and the
//     employee is told; rejected → the employee is told; no decision in time
//     → A_Escalate e-mails escalateTo, and the workflow waits once more for a
//     decision up to a second deadline, after which the expense expires.
//   - POST /api/expenses/{instanceId}/decision with {"approved": true|false,
//     "by": "...", "comment": "..."} raises ApprovalDecision.
//   - GET /api/expenses/{instanceId} answers the expense's state.
//
// E-mails go through the billing mailer: SMTP when SmtpHost is set, else
// .eml blobs in the outbox container. Payments are rows of the table
// ExpensePayments, one per expense, written with a conditional insert.
package approval

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/stratus-dev/stratus/bindings"
	bstorage "github.com/stratus-dev/stratus/bindings/storage"
	"github.com/stratus-dev/stratus/durable"
	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
	"github.com/stratus-dev/stratus/functions/billing"
	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/triggers/httptrigger"
)

// Names of the functions, the event and the payments table.
const (
	Orchestrator  = "ExpenseApproval"
	DecisionEvent = "ApprovalDecision"
	PaymentsTable = "ExpensePayments"
)

// DefaultDeadline is how long the approver has when the request names no
// deadline.
const DefaultDeadline = 72 * time.Hour

// Expense is an expense claim: ExpenseApproval's input.
type Expense struct {
	Employee      string  `json:"employee"`
	EmployeeEmail string  `json:"employeeEmail"`
	Approver      string  `json:"approver"`
	EscalateTo    string  `json:"escalateTo,omitempty"`
	Amount        float64 `json:"amount"`
	Currency      string  `json:"currency"`
	Description   string  `json:"description"`
	// DeadlineSeconds is the time the approver (and then the escalation
	// contact) has to decide; DefaultDeadline when 0.
	DeadlineSeconds float64 `json:"deadlineSeconds,omitempty"`
}

// Validate checks a claim.
func (e *Expense) Validate() error {
	var errs []error
	if strings.TrimSpace(e.Employee) == "" {
		errs = append(errs, errors.New("employee is required"))
	}
	if !strings.Contains(e.Approver, "@") {
		errs = append(errs, errors.New("approver must be an e-mail address"))
	}
	if e.EmployeeEmail != "" && !strings.Contains(e.EmployeeEmail, "@") {
		errs = append(errs, errors.New("employeeEmail must be an e-mail address"))
	}
	if e.EscalateTo != "" && !strings.Contains(e.EscalateTo, "@") {
		errs = append(errs, errors.New("escalateTo must be an e-mail address"))
	}
	if e.Amount <= 0 {
		errs = append(errs, errors.New("amount must be positive"))
	}
	if len(e.Currency) != 3 {
		errs = append(errs, errors.New("currency must be a three-letter code such as EUR"))
	}
	if e.DeadlineSeconds < 0 {
		errs = append(errs, errors.New("deadlineSeconds must not be negative"))
	}
	return errors.Join(errs...)
}

func (e *Expense) deadline() time.Duration {
	if e.DeadlineSeconds > 0 {
		return time.Duration(e.DeadlineSeconds * float64(time.Second))
	}
	return DefaultDeadline
}

// Decision is the ApprovalDecision event's data.
type Decision struct {
	Approved bool   `json:"approved"`
	By       string `json:"by"`
	Comment  string `json:"comment,omitempty"`
}

// Outcome is ExpenseApproval's output.
type Outcome struct {
	// Status is Paid, Rejected or Expired.
	Status    string    `json:"status"`
	Decision  *Decision `json:"decision,omitempty"`
	Escalated bool      `json:"escalated"`
	PaymentID string    `json:"paymentId,omitempty"`
}

// deps are what the activities need from the host, bound at start-up.
type deps struct {
	mu       sync.Mutex
	mailer   billing.Mailer
	payments *aztables.Client
	baseURL  string
}

func (d *deps) Metadata() bindings.Binding {
	return bindings.Binding{Type: "table", Direction: bindings.Out, Name: "payments", Properties: map[string]any{"tableName": PaymentsTable}}
}

func (d *deps) Bind(env *bindings.Env) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.payments != nil {
		return nil
	}
	clients, err := env.Storage("")
	if err != nil {
		return fmt.Errorf("expense approval storage: %w", err)
	}
	settings, err := billing.LoadSettings(env.Settings, env.Clock())
	if err != nil {
		return err
	}
	if settings.SMTP.Host != "" {
		d.mailer = billing.NewSMTPMailer(settings.SMTP, clients.Table, settings.StoragePrefix+billing.SentEmailsTable, env.Logger)
	} else {
		d.mailer = billing.NewOutbox(clients.Blob, settings.StoragePrefix+billing.OutboxContainer, settings.From)
	}
	d.payments = clients.Table.NewClient(PaymentsTable)
	d.baseURL = env.Settings.Get("ExpenseApprovalBaseUrl")
	return nil
}

func (d *deps) ready() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.payments == nil {
		return errors.New("expense approval is not bound to the host")
	}
	return nil
}

// Register adds the expense approval functions.
func Register(r *registry.Registry) error {
	d := &deps{}
	with := registry.WithBindings(d)
	return errors.Join(
		durable.RegisterOrchestrator(r, Orchestrator, durable.Orchestration(expenseApproval)),
		durable.RegisterActivity(r, "A_NotifyApprover", durable.Activity(d.notifyApprover), with),
		durable.RegisterActivity(r, "A_Escalate", durable.Activity(d.escalate), with),
		durable.RegisterActivity(r, "A_NotifyEmployee", durable.Activity(d.notifyEmployee), with),
		durable.RegisterActivity(r, "A_PayExpense", durable.Activity(d.pay), with),
		registerHTTP(r),
	)
}

func expenseApproval(ctx *durable.OrchestrationContext, e Expense) (Outcome, error) {
	if err := e.Validate(); err != nil {
		return Outcome{}, fmt.Errorf("invalid expense: %w", err)
	}
	retry := durable.WithRetry(durable.RetryPolicy{FirstRetryInterval: 5 * time.Second, BackoffCoefficient: 2, MaxAttempts: 5})
	notice := notice{InstanceID: ctx.InstanceID(), Expense: e, Deadline: ctx.CurrentUTCTime().Add(e.deadline())}
	if err := ctx.CallActivity("A_NotifyApprover", notice, retry).Await(nil); err != nil {
		return Outcome{}, err
	}
	var out Outcome
	_ = ctx.SetCustomStatus(map[string]any{"stage": "awaiting decision", "approver": e.Approver, "deadline": notice.Deadline})
	var d Decision
	err := ctx.WaitForExternalEvent(DecisionEvent, durable.WithTimeout(e.deadline())).Await(&d)
	if errors.Is(err, durable.ErrTimeout) && e.EscalateTo != "" {
		out.Escalated = true
		notice.Deadline = ctx.CurrentUTCTime().Add(e.deadline())
		if err := ctx.CallActivity("A_Escalate", notice, retry).Await(nil); err != nil {
			return out, err
		}
		_ = ctx.SetCustomStatus(map[string]any{"stage": "escalated", "approver": e.EscalateTo, "deadline": notice.Deadline})
		err = ctx.WaitForExternalEvent(DecisionEvent, durable.WithTimeout(e.deadline())).Await(&d)
	}
	switch {
	case errors.Is(err, durable.ErrTimeout):
		out.Status = "Expired"
	case err != nil:
		return out, err
	case d.Approved:
		out.Decision = &d
		id, err := durable.Await[string](ctx.CallActivity("A_PayExpense", notice, retry))
		if err != nil {
			return out, err
		}
		out.Status, out.PaymentID = "Paid", id
	default:
		out.Decision = &d
		out.Status = "Rejected"
	}
	_ = ctx.SetCustomStatus(map[string]any{"stage": strings.ToLower(out.Status)})
	if err := ctx.CallActivity("A_NotifyEmployee", employeeNotice{notice: notice, Outcome: out}, retry).Await(nil); err != nil {
		return out, err
	}
	return out, nil
}

// notice is what the notification activities get.
type notice struct {
	InstanceID string    `json:"instanceId"`
	Expense    Expense   `json:"expense"`
	Deadline   time.Time `json:"deadline"`
}

type employeeNotice struct {
	notice
	Outcome Outcome `json:"outcome"`
}

func (d *deps) decisionURL(id string) string {
	base := d.baseURL
	if base == "" {
		base = "http://localhost:7071"
	}
	return strings.TrimRight(base, "/") + "/api/expenses/" + id + "/decision"
}

func (d *deps) notifyApprover(ctx context.Context, n notice) (billing.Delivery, error) {
	return d.mail(ctx, n.InstanceID+"-approver", n.Expense.Approver, n, "Expense to approve")
}

func (d *deps) escalate(ctx context.Context, n notice) (billing.Delivery, error) {
	return d.mail(ctx, n.InstanceID+"-escalation", n.Expense.EscalateTo, n, "Escalated: expense waiting for approval")
}

func (d *deps) mail(ctx context.Context, key, to string, n notice, subject string) (billing.Delivery, error) {
	if err := d.ready(); err != nil {
		return billing.Delivery{}, err
	}
	e := n.Expense
	text := fmt.Sprintf("%s asks for %.2f %s: %s\n\nDecide before %s:\n  curl -X POST -H 'Content-Type: application/json' -d '{\"approved\": true, \"by\": \"%s\"}' %s\n",
		e.Employee, e.Amount, e.Currency, e.Description, n.Deadline.UTC().Format(time.RFC1123), to, d.decisionURL(n.InstanceID))
	return d.mailer.Send(ctx, billing.Email{Key: key, To: to, Subject: fmt.Sprintf("%s: %s, %.2f %s", subject, e.Employee, e.Amount, e.Currency), Text: text})
}

func (d *deps) notifyEmployee(ctx context.Context, n employeeNotice) (billing.Delivery, error) {
	if err := d.ready(); err != nil {
		return billing.Delivery{}, err
	}
	if n.Expense.EmployeeEmail == "" {
		return billing.Delivery{Key: n.InstanceID + "-employee", Transport: "none"}, nil
	}
	text := fmt.Sprintf("Your expense %q of %.2f %s is %s.\n", n.Expense.Description, n.Expense.Amount, n.Expense.Currency, strings.ToLower(n.Outcome.Status))
	if n.Outcome.Decision != nil && n.Outcome.Decision.Comment != "" {
		text += "\nComment from " + n.Outcome.Decision.By + ": " + n.Outcome.Decision.Comment + "\n"
	}
	return d.mailer.Send(ctx, billing.Email{Key: n.InstanceID + "-employee", To: n.Expense.EmployeeEmail,
		Subject: "Expense " + strings.ToLower(n.Outcome.Status) + ": " + n.Expense.Description, Text: text})
}

// pay records the payment of one expense once: a second call (a retry or a
// redelivery) finds the row and returns the same payment id.
func (d *deps) pay(ctx context.Context, n notice) (string, error) {
	if err := d.ready(); err != nil {
		return "", err
	}
	paymentID := "pay-" + n.InstanceID
	row, _ := json.Marshal(map[string]any{
		"PartitionKey": n.Expense.Employee, "RowKey": n.InstanceID,
		"PaymentId": paymentID, "Amount": n.Expense.Amount, "Currency": n.Expense.Currency, "Description": n.Expense.Description,
	})
	if err := bstorage.AddEntityOnce(ctx, d.payments, row); err != nil {
		return "", fmt.Errorf("record payment %s: %w", paymentID, err)
	}
	return paymentID, nil
}

func registerHTTP(r *registry.Registry) error {
	client := durable.ClientInput("client")
	with := registry.WithBindings(client)
	return errors.Join(
		r.Add(httptrigger.Function("SubmitExpense",
			httptrigger.Trigger{Route: "expenses", Methods: []string{"POST"}, AuthLevel: httptrigger.Anonymous},
			func(ctx context.Context, req *httptrigger.Request) (*httptrigger.Response, error) {
				var e Expense
				if err := req.Bind(&e); err != nil {
					return httptrigger.Text(http.StatusBadRequest, err.Error()), nil
				}
				if err := e.Validate(); err != nil {
					return httptrigger.Text(http.StatusBadRequest, "invalid expense: "+err.Error()), nil
				}
				id, err := client.Client().ScheduleNew(ctx, Orchestrator, e, durable.WithStartInstanceID("expense-"+bindings.NewGUID()))
				if err != nil {
					return nil, err
				}
				return client.CheckStatusResponse(req, id), nil
			}, with)),
		r.Add(httptrigger.Function("DecideExpense",
			httptrigger.Trigger{Route: "expenses/{instanceId}/decision", Methods: []string{"POST"}, AuthLevel: httptrigger.Anonymous},
			func(ctx context.Context, req *httptrigger.Request) (*httptrigger.Response, error) {
				var d Decision
				if err := req.Bind(&d); err != nil {
					return httptrigger.Text(http.StatusBadRequest, err.Error()), nil
				}
				if strings.TrimSpace(d.By) == "" {
					return httptrigger.Text(http.StatusBadRequest, "by (who decides) is required"), nil
				}
				id := req.Params["instanceId"]
				err := client.Client().RaiseEvent(ctx, id, DecisionEvent, d)
				switch {
				case errors.Is(err, backend.ErrInstanceNotFound), errors.Is(err, durable.ErrInvalidInstanceID):
					return httptrigger.Text(http.StatusNotFound, "no expense approval "+id), nil
				case errors.Is(err, durable.ErrInstanceFinished):
					return httptrigger.Text(http.StatusConflict, "expense approval "+id+" has already ended"), nil
				case err != nil:
					return nil, err
				}
				return httptrigger.JSON(http.StatusAccepted, map[string]string{"id": id, "decision": decisionWord(d)}), nil
			}, with)),
		r.Add(httptrigger.Function("GetExpense",
			httptrigger.Trigger{Route: "expenses/{instanceId}", Methods: []string{"GET"}, AuthLevel: httptrigger.Anonymous},
			func(ctx context.Context, req *httptrigger.Request) (*httptrigger.Response, error) {
				id := req.Params["instanceId"]
				st, err := client.Client().GetInstance(ctx, id, true)
				if errors.Is(err, backend.ErrInstanceNotFound) || errors.Is(err, durable.ErrInvalidInstanceID) || (err == nil && st.Name != Orchestrator) {
					return httptrigger.Text(http.StatusNotFound, "no expense approval "+id), nil
				}
				if err != nil {
					return nil, err
				}
				return httptrigger.JSON(http.StatusOK, map[string]any{
					"id": id, "runtimeStatus": st.RuntimeStatus, "expense": raw(st.Input), "progress": raw(st.CustomStatus),
					"outcome": outcome(st),
				}), nil
			}, with)),
	)
}

func decisionWord(d Decision) string {
	if d.Approved {
		return "approved"
	}
	return "rejected"
}

func raw(s string) json.RawMessage {
	if s == "" || !json.Valid([]byte(s)) {
		return json.RawMessage("null")
	}
	return json.RawMessage(s)
}

func outcome(st *backend.InstanceState) json.RawMessage {
	if st.RuntimeStatus != history.StatusCompleted {
		return json.RawMessage("null")
	}
	return raw(st.Output)
}
