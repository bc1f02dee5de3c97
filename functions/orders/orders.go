// Package orders is the order-processing saga: reserve stock, charge,
// ship — and when a step fails, undo the steps already done, in reverse
// order.
//
//   - POST /api/orders with {"orderId", "customer", "email", "items":
//     [{"sku","quantity","unitPriceMinor"}], "currency", "address":
//     {"country", ...}} starts ProcessOrderOrchestrator (instance
//     order-<orderId>) and answers 202 with the check-status payload.
//   - ProcessOrderOrchestrator reserves every item on its Inventory entity
//     (Inventory@<sku>, operation reserve), charges the order through the
//     payment service (A_ChargeOrder, idempotency key order:<orderId>) and
//     books the shipment (A_ArrangeShipping), then takes the shipped stock
//     off its entities (ship). If a step fails it compensates
//     in reverse: refund the charge (A_RefundOrder), release the reserved
//     stock. A failing compensation is recorded in the custom status and
//     the remaining ones still run. The output says what happened.
//
// The payment service is the billing sample's (PaymentServiceUrl, by
// default the host's simulator, which declines e-mail addresses ending in
// +decline). Shipping refuses the country "Atlantis"; refunds of orders
// whose customer is "refund-fails" fail, to show compensation failures.
// Shipments and refunds are rows of the tables OrderShipments and
// OrderRefunds, one per order, written with conditional inserts.
package orders

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/stratus-dev/stratus/bindings"
	bstorage "github.com/stratus-dev/stratus/bindings/storage"
	"github.com/stratus-dev/stratus/durable"
	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/functions/billing"
	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/triggers/httptrigger"
)

// Names of the orchestrator, the entity it uses and the tables.
const (
	Orchestrator    = "ProcessOrderOrchestrator"
	InventoryEntity = "Inventory"
	ShipmentsTable  = "OrderShipments"
	RefundsTable    = "OrderRefunds"
)

// Item is one order line.
type Item struct {
	SKU            string `json:"sku"`
	Quantity       int    `json:"quantity"`
	UnitPriceMinor int64  `json:"unitPriceMinor"`
}

// Address is where an order ships.
type Address struct {
	Name    string `json:"name,omitempty"`
	Street  string `json:"street,omitempty"`
	City    string `json:"city,omitempty"`
	Country string `json:"country"`
}

// Order is ProcessOrderOrchestrator's input.
type Order struct {
	OrderID  string  `json:"orderId"`
	Customer string  `json:"customer"`
	Email    string  `json:"email"`
	Items    []Item  `json:"items"`
	Currency string  `json:"currency"`
	Address  Address `json:"address"`
}

var idRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`)

// Validate checks an order.
func (o *Order) Validate() error {
	var errs []error
	if !idRE.MatchString(o.OrderID) {
		errs = append(errs, errors.New("orderId must be 1-64 letters, digits, '_' or '-'"))
	}
	if strings.TrimSpace(o.Customer) == "" {
		errs = append(errs, errors.New("customer is required"))
	}
	if !strings.Contains(o.Email, "@") {
		errs = append(errs, errors.New("email must be an e-mail address"))
	}
	if len(o.Items) == 0 {
		errs = append(errs, errors.New("an order needs at least one item"))
	}
	seen := map[string]bool{}
	for i, it := range o.Items {
		switch {
		case !idRE.MatchString(it.SKU):
			errs = append(errs, fmt.Errorf("item %d: sku must be 1-64 letters, digits, '_' or '-'", i+1))
		case seen[it.SKU]:
			errs = append(errs, fmt.Errorf("item %d: sku %s appears twice", i+1, it.SKU))
		case it.Quantity <= 0:
			errs = append(errs, fmt.Errorf("item %d: quantity must be positive", i+1))
		case it.UnitPriceMinor < 0:
			errs = append(errs, fmt.Errorf("item %d: unitPriceMinor must not be negative", i+1))
		}
		seen[it.SKU] = true
	}
	if len(o.Currency) != 3 {
		errs = append(errs, errors.New("currency must be a three-letter code such as EUR"))
	}
	if strings.TrimSpace(o.Address.Country) == "" {
		errs = append(errs, errors.New("address.country is required"))
	}
	return errors.Join(errs...)
}

// TotalMinor is the order's amount in minor units.
func (o *Order) TotalMinor() int64 {
	var t int64
	for _, it := range o.Items {
		t += int64(it.Quantity) * it.UnitPriceMinor
	}
	return t
}

// Result is ProcessOrderOrchestrator's output.
type Result struct {
	OrderID string `json:"orderId"`
	// Status is Completed or Failed.
	Status string `json:"status"`
	// FailedStep is reserve, payment or shipping when Status is Failed.
	FailedStep string `json:"failedStep,omitempty"`
	Reason     string `json:"reason,omitempty"`
	PaymentID  string `json:"paymentId,omitempty"`
	ShipmentID string `json:"shipmentId,omitempty"`
	// Compensations are the undo steps that ran, in order.
	Compensations []Compensation `json:"compensations,omitempty"`
}

// Compensation is one undo step.
type Compensation struct {
	Step  string `json:"step"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// Progress is the custom status.
type Progress struct {
	Stage         string         `json:"stage"`
	Compensations []Compensation `json:"compensations,omitempty"`
}

func inventory(sku string) durable.EntityID { return durable.NewEntityID(InventoryEntity, sku) }

// processOrder is the saga. Each forward step registers its undo; on a
// failure the undos run newest first, each whatever the others did.
func processOrder(ctx *durable.OrchestrationContext, o Order) (Result, error) {
	res := Result{OrderID: o.OrderID, Status: "Completed"}
	if err := o.Validate(); err != nil {
		return res, fmt.Errorf("invalid order: %w", err)
	}
	retry := durable.WithRetry(durable.RetryPolicy{
		FirstRetryInterval: time.Second, BackoffCoefficient: 2, MaxAttempts: 5,
		Handle: func(f *durable.TaskFailedError) bool { return !strings.Contains(f.Details.ErrorType, "Permanent") },
	})
	type undo struct {
		step string
		run  func() error
	}
	var undos []undo
	fail := func(step string, err error) (Result, error) {
		res.Status, res.FailedStep, res.Reason = "Failed", step, err.Error()
		_ = ctx.SetCustomStatus(Progress{Stage: "compensating"})
		for i := len(undos) - 1; i >= 0; i-- {
			c := Compensation{Step: undos[i].step, OK: true}
			if err := undos[i].run(); err != nil {
				c.OK, c.Error = false, err.Error()
				ctx.Logger().Warn("compensation failed", "order", o.OrderID, "step", c.Step, "err", err)
			}
			res.Compensations = append(res.Compensations, c)
			_ = ctx.SetCustomStatus(Progress{Stage: "compensating", Compensations: res.Compensations})
		}
		_ = ctx.SetCustomStatus(Progress{Stage: "failed", Compensations: res.Compensations})
		return res, nil
	}

	_ = ctx.SetCustomStatus(Progress{Stage: "reserving"})
	for _, it := range o.Items {
		ok, err := durable.Await[bool](ctx.CallEntity(inventory(it.SKU), "reserve", it.Quantity))
		if err != nil {
			return fail("reserve", fmt.Errorf("reserve %d × %s: %w", it.Quantity, it.SKU, err))
		}
		if !ok {
			return fail("reserve", fmt.Errorf("not enough %s in stock for %d", it.SKU, it.Quantity))
		}
		undos = append(undos, undo{"release " + it.SKU, func() error {
			return ctx.CallEntity(inventory(it.SKU), "release", it.Quantity).Await(nil)
		}})
	}

	_ = ctx.SetCustomStatus(Progress{Stage: "charging"})
	receipt, err := durable.Await[billing.Receipt](ctx.CallActivity("A_ChargeOrder", o, retry))
	if err != nil {
		return fail("payment", err)
	}
	res.PaymentID = receipt.PaymentID
	undos = append(undos, undo{"refund " + receipt.PaymentID, func() error {
		return ctx.CallActivity("A_RefundOrder", refund{Order: o, PaymentID: receipt.PaymentID}, retry).Await(nil)
	}})

	_ = ctx.SetCustomStatus(Progress{Stage: "shipping"})
	shipment, err := durable.Await[string](ctx.CallActivity("A_ArrangeShipping", o, retry))
	if err != nil {
		return fail("shipping", err)
	}
	res.ShipmentID = shipment
	// The reserved stock has left the warehouse.
	for _, it := range o.Items {
		if err := ctx.SignalEntity(inventory(it.SKU), "ship", it.Quantity); err != nil {
			return res, fmt.Errorf("ship %d × %s: %w", it.Quantity, it.SKU, err)
		}
	}
	_ = ctx.SetCustomStatus(Progress{Stage: "completed"})
	return res, nil
}

type refund struct {
	Order     Order  `json:"order"`
	PaymentID string `json:"paymentId"`
}

// PermanentError is an activity failure that retrying cannot fix (a
// declined card, an unshippable address); the saga's retry policy does not
// retry it.
type PermanentError struct{ Msg string }

func (e *PermanentError) Error() string { return e.Msg }

// ErrorType names the failure in history ("PermanentError").
func (e *PermanentError) ErrorType() string { return "PermanentError" }

// service is what the activities need from the host, bound at start-up.
type service struct {
	mu        sync.Mutex
	payments  *billing.PaymentClient
	shipments *aztables.Client
	refunds   *aztables.Client
}

func (s *service) Metadata() bindings.Binding {
	return bindings.Binding{Type: "table", Direction: bindings.Out, Name: "shipments", Properties: map[string]any{"tableName": ShipmentsTable}}
}

func (s *service) Bind(env *bindings.Env) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.payments != nil {
		return nil
	}
	settings, err := billing.LoadSettings(env.Settings, env.Clock())
	if err != nil {
		return err
	}
	clients, err := env.Storage("")
	if err != nil {
		return fmt.Errorf("orders storage: %w", err)
	}
	s.payments = &billing.PaymentClient{BaseURL: settings.PaymentServiceURL, APIKey: settings.PaymentServiceAPIKey}
	s.shipments = clients.Table.NewClient(settings.StoragePrefix + ShipmentsTable)
	s.refunds = clients.Table.NewClient(settings.StoragePrefix + RefundsTable)
	return nil
}

func (s *service) ready() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.payments == nil {
		return errors.New("orders service is not bound to the host")
	}
	return nil
}

func (s *service) charge(ctx context.Context, o Order) (billing.Receipt, error) {
	if err := s.ready(); err != nil {
		return billing.Receipt{}, err
	}
	day := time.Now().UTC().Format(billing.DayLayout)
	r, err := s.payments.Charge(ctx, "order:"+o.OrderID, billing.Subscription{
		ID: o.OrderID, Name: o.Customer, Email: o.Email, Plan: "order", AmountMinor: o.TotalMinor(), Currency: o.Currency,
	}, day)
	if err != nil && !billing.IsRetryable(err) {
		return r, &PermanentError{Msg: "payment refused: " + err.Error()}
	}
	return r, err
}

// insertOnce writes row unless a row with its keys exists (a retry or a
// redelivery of the same step).
func insertOnce(ctx context.Context, t *aztables.Client, row map[string]any) error {
	b, err := json.Marshal(row)
	if err != nil {
		return err
	}
	return bstorage.AddEntityOnce(ctx, t, b)
}

func (s *service) ship(ctx context.Context, o Order) (string, error) {
	if err := s.ready(); err != nil {
		return "", err
	}
	if strings.EqualFold(o.Address.Country, "Atlantis") {
		return "", &PermanentError{Msg: "no carrier ships to " + o.Address.Country}
	}
	id := "ship-" + o.OrderID
	if err := insertOnce(ctx, s.shipments, map[string]any{"PartitionKey": o.Customer, "RowKey": o.OrderID, "ShipmentId": id, "Country": o.Address.Country}); err != nil {
		return "", fmt.Errorf("book shipment %s: %w", id, err)
	}
	return id, nil
}

func (s *service) refund(ctx context.Context, r refund) (string, error) {
	if err := s.ready(); err != nil {
		return "", err
	}
	if r.Order.Customer == "refund-fails" {
		return "", &PermanentError{Msg: "the payment service refused to refund " + r.PaymentID}
	}
	if err := insertOnce(ctx, s.refunds, map[string]any{"PartitionKey": r.Order.Customer, "RowKey": r.Order.OrderID,
		"PaymentId": r.PaymentID, "AmountMinor": r.Order.TotalMinor(), "Currency": r.Order.Currency}); err != nil {
		return "", fmt.Errorf("refund %s: %w", r.PaymentID, err)
	}
	return r.PaymentID, nil
}

// Register adds the saga, its activities and POST /api/orders.
func Register(r *registry.Registry) error {
	s := &service{}
	with := registry.WithBindings(s)
	client := durable.ClientInput("client")
	return errors.Join(
		durable.RegisterOrchestrator(r, Orchestrator, durable.Orchestration(processOrder)),
		durable.RegisterActivity(r, "A_ChargeOrder", durable.Activity(s.charge), with),
		durable.RegisterActivity(r, "A_ArrangeShipping", durable.Activity(s.ship), with),
		durable.RegisterActivity(r, "A_RefundOrder", durable.Activity(s.refund), with),
		r.Add(httptrigger.Function("SubmitOrder",
			httptrigger.Trigger{Route: "orders", Methods: []string{"POST"}, AuthLevel: httptrigger.Anonymous},
			func(ctx context.Context, req *httptrigger.Request) (*httptrigger.Response, error) {
				var o Order
				if err := req.Bind(&o); err != nil {
					return httptrigger.Text(http.StatusBadRequest, err.Error()), nil
				}
				if err := o.Validate(); err != nil {
					return httptrigger.Text(http.StatusBadRequest, "invalid order: "+err.Error()), nil
				}
				id, err := client.Client().ScheduleNew(ctx, Orchestrator, o, durable.WithStartInstanceID("order-"+o.OrderID))
				if errors.Is(err, backend.ErrInstanceExists) {
					return httptrigger.Text(http.StatusConflict, "order "+o.OrderID+" is already being processed"), nil
				}
				if err != nil {
					return nil, err
				}
				return client.CheckStatusResponse(req, id), nil
			}, registry.WithBindings(client))),
	)
}
