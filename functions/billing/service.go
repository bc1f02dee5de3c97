package billing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/host/config"
)

// App setting names.
const (
	SettingPaymentServiceURL    = "PaymentServiceUrl"
	SettingPaymentServiceAPIKey = "PaymentServiceApiKey"
	SettingSimFailureRate       = "PaymentSimFailureRate"
	SettingSimLatencyMs         = "PaymentSimLatencyMs"
	SettingSimOutage            = "PaymentSimOutage"
	SettingSMTPHost             = "SmtpHost"
	SettingSMTPPort             = "SmtpPort"
	SettingSMTPUser             = "SmtpUser"
	SettingSMTPPassword         = "SmtpPassword"
	SettingSMTPFrom             = "SmtpFrom"
	SettingOwnerEmail           = "BillingOwnerEmail"
	SettingSeedDemoData         = "BillingSeedDemoData"
	SettingRetryFirstInterval   = "BillingRetryFirstIntervalSeconds"
	SettingStoragePrefix        = "BillingStoragePrefix"
	SettingSchedule             = "BillingSchedule"
)

// Defaults.
const (
	// DefaultPaymentServiceURL is the simulator of a host on the default port.
	DefaultPaymentServiceURL = "http://127.0.0.1:7071/api/sim/payments"
	// DefaultFrom is the sender of notices.
	DefaultFrom = "Stratus Billing <billing@example.com>"
	// DefaultOwnerEmail receives the invoice report.
	DefaultOwnerEmail = "billing-owner@example.com"
	// DefaultRetryFirstInterval is the charge retry policy's first interval.
	DefaultRetryFirstInterval = 10 * time.Second
)

// Settings is the billing service's configuration, read from app settings.
type Settings struct {
	// PaymentServiceURL is the charges endpoint (PaymentServiceUrl).
	PaymentServiceURL string
	// PaymentServiceAPIKey is sent as a bearer token (PaymentServiceApiKey);
	// the simulator requires it when it is set.
	PaymentServiceAPIKey string
	// Sim is the simulator's configuration (PaymentSimFailureRate,
	// PaymentSimLatencyMs, PaymentSimOutage).
	Sim SimConfig
	// SMTP is used when SMTP.Host is set (SmtpHost, SmtpPort, SmtpUser,
	// SmtpPassword, SmtpFrom); otherwise mail goes to the outbox container.
	SMTP SMTPConfig
	// From is the sender (SmtpFrom, also for the outbox).
	From string
	// OwnerEmail receives the report (BillingOwnerEmail).
	OwnerEmail string
	// SeedDemoData seeds an empty Subscriptions table (BillingSeedDemoData).
	SeedDemoData bool
	// RetryFirstInterval is the charge retry policy's first interval
	// (BillingRetryFirstIntervalSeconds).
	RetryFirstInterval time.Duration
	// StoragePrefix is prepended to every table and container name
	// (BillingStoragePrefix; lowercase letters and digits), so that several
	// apps or tests can share a storage account.
	StoragePrefix string
}

// LoadSettings reads the settings; now anchors a PaymentSimOutage given as
// a bare duration. Every malformed value is reported.
func LoadSettings(s *config.Settings, now time.Time) (Settings, error) {
	var errs []error
	bad := func(name, v string, err error) {
		errs = append(errs, fmt.Errorf("app setting %s=%q: %w", name, v, err))
	}
	get := func(name string) string { return strings.TrimSpace(s.Get(name)) }
	out := Settings{
		PaymentServiceURL:    get(SettingPaymentServiceURL),
		PaymentServiceAPIKey: get(SettingPaymentServiceAPIKey),
		From:                 get(SettingSMTPFrom),
		OwnerEmail:           get(SettingOwnerEmail),
		SeedDemoData:         s.Bool(SettingSeedDemoData),
		RetryFirstInterval:   DefaultRetryFirstInterval,
		StoragePrefix:        strings.ToLower(get(SettingStoragePrefix)),
		SMTP: SMTPConfig{
			Host:     get(SettingSMTPHost),
			User:     get(SettingSMTPUser),
			Password: s.Get(SettingSMTPPassword),
		},
	}
	if out.PaymentServiceURL == "" {
		out.PaymentServiceURL = DefaultPaymentServiceURL
	}
	if u, err := url.Parse(out.PaymentServiceURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad(SettingPaymentServiceURL, out.PaymentServiceURL, errors.New("not an http(s) URL"))
	}
	if out.From == "" {
		out.From = DefaultFrom
	}
	if out.OwnerEmail == "" {
		out.OwnerEmail = DefaultOwnerEmail
	}
	out.SMTP.From = out.From
	if v := get(SettingSMTPPort); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p <= 0 || p > 65535 {
			bad(SettingSMTPPort, v, errors.New("not a TCP port"))
		}
		out.SMTP.Port = p
	}
	if v := get(SettingRetryFirstInterval); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 || f > 86400 {
			bad(SettingRetryFirstInterval, v, errors.New("not a number of seconds between 0 and 86400"))
		} else {
			out.RetryFirstInterval = time.Duration(f * float64(time.Second))
		}
	}
	if v := get(SettingSimFailureRate); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || f > 1 {
			bad(SettingSimFailureRate, v, errors.New("not a number from 0 to 1"))
		}
		out.Sim.FailureRate = f
	}
	if v := get(SettingSimLatencyMs); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 60_000 {
			bad(SettingSimLatencyMs, v, errors.New("not a number of milliseconds from 0 to 60000"))
		}
		out.Sim.LatencyMs = n
	}
	if v := get(SettingSimOutage); v != "" {
		w, err := ParseOutage(v, now.UTC())
		if err != nil {
			bad(SettingSimOutage, v, err)
		} else if !w.Start.IsZero() {
			out.Sim.Outage = &w
		}
	}
	if p := out.StoragePrefix; p != "" && !validPrefix(p) {
		bad(SettingStoragePrefix, p, errors.New("use 1-20 lowercase letters and digits, starting with a letter"))
	}
	return out, errors.Join(errs...)
}

func validPrefix(p string) bool {
	if len(p) > 20 || p[0] < 'a' || p[0] > 'z' {
		return false
	}
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// Service is the billing service bound to a host: settings, tables, the
// payment client, the mailer and the simulator. Every billing function
// declares one of its bindings, and the first one bound wires it.
type Service struct {
	mu    sync.Mutex
	bound bool

	// Settings are the app settings read at start-up.
	Settings Settings
	// Store holds subscriptions and results.
	Store *Store
	// Payments charges subscriptions.
	Payments *PaymentClient
	// Mailer sends notices and the report.
	Mailer Mailer
	// Simulator is the local payment service.
	Simulator *Simulator
	// Blob is the storage account's blob client.
	Blob *azblob.Client
	// InvoicesContainer and OutboxContainer are the (prefixed) container names.
	InvoicesContainer, OutboxContainer string
	// Logger is the service's logger.
	Logger *slog.Logger
	// Now is the clock.
	Now func() time.Time
}

// NewService returns an unbound service.
func NewService() *Service { return &Service{} }

// Bind wires the service to the host's environment once; later calls do
// nothing.
func (s *Service) Bind(env *bindings.Env) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bound {
		return nil
	}
	settings, err := LoadSettings(env.Settings, env.Clock())
	if err != nil {
		return err
	}
	clients, err := env.Storage("")
	if err != nil {
		return fmt.Errorf("billing storage: %w", err)
	}
	log := env.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	log = log.With("component", "billing")
	p := settings.StoragePrefix
	s.Settings = settings
	s.Store = NewStore(clients.Table, p)
	s.Payments = &PaymentClient{BaseURL: settings.PaymentServiceURL, APIKey: settings.PaymentServiceAPIKey}
	s.Blob = clients.Blob
	s.InvoicesContainer, s.OutboxContainer = p+InvoicesContainer, p+OutboxContainer
	if settings.SMTP.Host != "" {
		s.Mailer = NewSMTPMailer(settings.SMTP, clients.Table, p+SentEmailsTable, log)
	} else {
		s.Mailer = NewOutbox(clients.Blob, s.OutboxContainer, settings.From)
	}
	s.Simulator = NewSimulator(clients.Table, p+SimPaymentsTable, settings.Sim, settings.PaymentServiceAPIKey, log)
	s.Logger = log
	s.Now = env.Clock
	s.bound = true
	return nil
}

// ErrServiceNotBound is returned when a billing function runs before the
// host bound the service.
var ErrServiceNotBound = errors.New("billing service is not bound (declare its binding with registry.WithBindings)")

func (s *Service) ready() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.bound {
		return ErrServiceNotBound
	}
	return nil
}

// binding is one function's declaration of the service: a table binding on
// the table the function mainly uses, bound through the shared service.
type binding struct {
	svc *Service
	md  bindings.Binding
}

var (
	_ bindings.Declared = (*binding)(nil)
	_ bindings.Binder   = (*binding)(nil)
)

// Binding declares the service for one function (as a table binding named
// name on table).
func (s *Service) Binding(name, table string) bindings.Declared {
	return &binding{svc: s, md: bindings.Binding{Type: "table", Direction: bindings.In, Name: name,
		Properties: map[string]any{"tableName": table}}}
}

func (b *binding) Metadata() bindings.Binding   { return b.md }
func (b *binding) Bind(env *bindings.Env) error { return b.svc.Bind(env) }

// ChargeInput is A_ChargeUserSubscription's input.
type ChargeInput struct {
	// BillingDay is the run's day.
	BillingDay string `json:"billingDay"`
	// Subscription is the subscription as listed by the run; its
	// NextBillingDate is the period charged.
	Subscription Subscription `json:"subscription"`
}

// ListToBill seeds the demo data when asked to and the table is empty, then
// returns the subscriptions due on day.
func (s *Service) ListToBill(ctx context.Context, day string) ([]Subscription, error) {
	if err := s.ready(); err != nil {
		return nil, err
	}
	if _, err := ParseDay(day); err != nil {
		return nil, err
	}
	if err := s.Store.Init(ctx); err != nil {
		return nil, err
	}
	if s.Settings.SeedDemoData {
		demo, err := DemoSubscriptions(day)
		if err != nil {
			return nil, err
		}
		n, err := s.Store.SeedIfEmpty(ctx, demo)
		if err != nil {
			return nil, fmt.Errorf("seed demo data: %w", err)
		}
		if n > 0 {
			s.Logger.Info("seeded demo subscriptions", "count", n, "billing_day", day)
		}
	}
	due, err := s.Store.Due(ctx, day)
	if err != nil {
		return nil, err
	}
	if due == nil {
		due = []Subscription{}
	}
	return due, nil
}

// Charge charges one subscription for its period with the key
// [ChargeKey](id, period). A charge recorded already is returned as it is.
// A permanent refusal (a decline, any 4xx) is a Failed result, not an
// error; a retryable failure is an error, for the caller's retry policy.
// A successful charge is recorded (and the billing date advanced) at once.
func (s *Service) Charge(ctx context.Context, in ChargeInput) (Result, error) {
	if err := s.ready(); err != nil {
		return Result{}, err
	}
	sub := in.Subscription
	period := sub.NextBillingDate
	if err := sub.Validate(); err != nil {
		return Result{}, err
	}
	res := Result{SubscriptionID: sub.ID, Period: period, BillingDay: in.BillingDay, Name: sub.Name, Email: sub.Email,
		Plan: sub.Plan, AmountMinor: sub.AmountMinor, Currency: sub.Currency}
	if old, ok, err := s.Store.Result(ctx, sub.ID, period); err != nil {
		return Result{}, err
	} else if ok && old.Status == Charged {
		return old, nil
	}
	key := ChargeKey(sub.ID, period)
	receipt, err := s.Payments.Charge(ctx, key, sub, period)
	if err != nil {
		if IsRetryable(err) {
			return Result{}, fmt.Errorf("charge %s: %w", key, err)
		}
		res.Status, res.Error = Failed, err.Error()
		s.Logger.Warn("charge refused", "subscription", sub.ID, "period", period, "err", err)
		return res, nil
	}
	next, err := Advance(sub.Plan, period, sub.AnchorDay)
	if err != nil {
		return Result{}, err
	}
	res.Status, res.PaymentID, res.NextBillingDate = Charged, receipt.PaymentID, next
	stored, _, err := s.Store.Record(ctx, res)
	if err != nil {
		return Result{}, fmt.Errorf("charge %s: charged as %s, recording failed: %w", key, receipt.PaymentID, err)
	}
	return stored, nil
}

// EmailInput is A_SendEmail's input: the message, plus blobs to attach.
type EmailInput struct {
	Email Email `json:"email"`
	// AttachBlobs are blobs (container/name) of this storage account to
	// attach.
	AttachBlobs []string `json:"attachBlobs,omitempty"`
}

// SendEmail sends one message (once per key). An empty recipient is the
// owner (BillingOwnerEmail).
func (s *Service) SendEmail(ctx context.Context, in EmailInput) (Delivery, error) {
	if err := s.ready(); err != nil {
		return Delivery{}, err
	}
	m := in.Email
	if m.To == "" {
		m.To = s.Settings.OwnerEmail
	}
	for _, ref := range in.AttachBlobs {
		container, name, ok := strings.Cut(ref, "/")
		if !ok {
			return Delivery{}, fmt.Errorf("attachment %q is not container/name", ref)
		}
		data, err := readBlob(ctx, s.Blob, container, name)
		if err != nil {
			return Delivery{}, err
		}
		ct := "application/octet-stream"
		switch {
		case strings.HasSuffix(name, ".csv"):
			ct = "text/csv; charset=utf-8"
		case strings.HasSuffix(name, ".html"):
			ct = "text/html; charset=utf-8"
		}
		m.Attachments = append(m.Attachments, Attachment{Name: name, ContentType: ct, Data: data})
	}
	d, err := s.Mailer.Send(ctx, m)
	if err != nil {
		return Delivery{}, err
	}
	return d, nil
}

func readBlob(ctx context.Context, c *azblob.Client, container, name string) ([]byte, error) {
	resp, err := c.DownloadStream(ctx, container, name, nil)
	if err != nil {
		return nil, fmt.Errorf("read blob %s/%s: %w", container, name, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read blob %s/%s: %w", container, name, err)
	}
	return data, nil
}

// InvoiceInput is A_GenerateInvoice's input.
type InvoiceInput struct {
	BillingDay string   `json:"billingDay"`
	Results    []Result `json:"results"`
}

// InvoiceResult is A_GenerateInvoice's output.
type InvoiceResult struct {
	// CSVBlob and HTMLBlob are container/name of the report.
	CSVBlob  string          `json:"csvBlob"`
	HTMLBlob string          `json:"htmlBlob"`
	Totals   []CurrencyTotal `json:"totals"`
	Charged  int             `json:"charged"`
	Failed   int             `json:"failed"`
	// Text is the plain-text summary for the report email.
	Text string `json:"text"`
}

// GenerateInvoice records every result (idempotently, advancing the billing
// dates of charged subscriptions) and writes the day's report.
func (s *Service) GenerateInvoice(ctx context.Context, in InvoiceInput) (InvoiceResult, error) {
	if err := s.ready(); err != nil {
		return InvoiceResult{}, err
	}
	if _, err := ParseDay(in.BillingDay); err != nil {
		return InvoiceResult{}, err
	}
	stored := make([]Result, 0, len(in.Results))
	for _, r := range in.Results {
		got, _, err := s.Store.Record(ctx, r)
		if err != nil {
			return InvoiceResult{}, err
		}
		stored = append(stored, got)
	}
	rep := NewReport(in.BillingDay, stored, s.Now())
	csvName, htmlName, _, err := WriteReport(ctx, s.Blob, s.InvoicesContainer, rep)
	if err != nil {
		return InvoiceResult{}, err
	}
	return InvoiceResult{CSVBlob: s.InvoicesContainer + "/" + csvName, HTMLBlob: s.InvoicesContainer + "/" + htmlName,
		Totals: rep.Totals, Charged: rep.Charged, Failed: rep.Failed, Text: rep.Text()}, nil
}

// NoticeEmail is the message that tells a subscriber how billing went. Its
// key is notice-<day>-<subscription>: one notice per subscriber per run.
func NoticeEmail(day string, r Result) Email {
	m := Email{Key: "notice-" + day + "-" + r.SubscriptionID, To: r.Email}
	amount := FormatAmount(r.AmountMinor, r.Currency)
	if r.Status == Charged {
		m.Subject = fmt.Sprintf("Payment received: %s for your %s subscription", amount, r.Plan)
		m.Text = fmt.Sprintf("Hello %s,\n\nwe charged %s for your %s subscription, period starting %s (payment %s).\nYour next billing date is %s.\n\nThank you,\nStratus Billing\n",
			r.Name, amount, r.Plan, r.Period, r.PaymentID, r.NextBillingDate)
		return m
	}
	m.Subject = fmt.Sprintf("Payment failed: %s for your %s subscription", amount, r.Plan)
	m.Text = fmt.Sprintf("Hello %s,\n\nwe could not charge %s for your %s subscription, period starting %s.\nReason: %s\n\nWe will try again on the next billing run. Please check your payment details.\n\nStratus Billing\n",
		r.Name, amount, r.Plan, r.Period, r.Error)
	return m
}

// ReportEmail is the message that sends the day's report to owner ("" for
// the app setting BillingOwnerEmail), with the CSV attached. Its key is
// report-<day>.
func ReportEmail(day, owner string, inv InvoiceResult) EmailInput {
	return EmailInput{
		Email: Email{Key: "report-" + day, To: owner,
			Subject: fmt.Sprintf("Billing report %s: %d charged, %d failed", day, inv.Charged, inv.Failed),
			Text:    inv.Text},
		AttachBlobs: []string{inv.CSVBlob},
	}
}
