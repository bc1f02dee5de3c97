package billing

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"
)

// IdempotencyKeyHeader carries a charge's idempotency key.
const IdempotencyKeyHeader = "Idempotency-Key"

// ReplayedHeader is set to "true" on the answer to a charge whose
// idempotency key was charged before (the original result is returned).
const ReplayedHeader = "Idempotent-Replayed"

// ChargeRequest is the payment service's charge request body.
type ChargeRequest struct {
	// Customer is the subscription id.
	Customer string `json:"customer"`
	// Email is the subscriber's address (the simulator declines addresses
	// whose local part ends in "+decline").
	Email string `json:"email"`
	// AmountMinor and Currency are what to charge.
	AmountMinor int64  `json:"amountMinor"`
	Currency    string `json:"currency"`
	// Period is the billing date the charge is for.
	Period string `json:"period"`
	// Description is shown on the statement.
	Description string `json:"description"`
}

// Receipt is a successful charge.
type Receipt struct {
	// PaymentID is the payment service's id of the charge.
	PaymentID string `json:"paymentId"`
	// IdempotencyKey is the key the charge was made under.
	IdempotencyKey string `json:"idempotencyKey"`
	Customer       string `json:"customer"`
	AmountMinor    int64  `json:"amountMinor"`
	Currency       string `json:"currency"`
	Period         string `json:"period"`
	// Status is "succeeded".
	Status string `json:"status"`
	// Created is when the charge was made.
	Created time.Time `json:"created"`
	// Replayed is true when the key had been charged before and this is the
	// original result (set from [ReplayedHeader]; not part of the body).
	Replayed bool `json:"-"`
}

// PaymentError is a failed charge, classified: Retryable errors (5xx, 408,
// 429, timeouts, refused or reset connections) may succeed later under the
// same idempotency key; the others (declines and every other 4xx) will not.
type PaymentError struct {
	// StatusCode is the HTTP status; 0 when no response arrived.
	StatusCode int
	// Code is the service's error code (card_declined, ...), when it sent one.
	Code string
	// Message is the service's message, or what went wrong on the way.
	Message string
	// Retryable reports whether trying again may succeed.
	Retryable bool
	// Err is the transport error, when there was no response.
	Err error
}

func (e *PaymentError) Error() string {
	kind := "permanent"
	if e.Retryable {
		kind = "retryable"
	}
	switch {
	case e.StatusCode == 0:
		return fmt.Sprintf("payment service unreachable (%s): %s", kind, e.Message)
	case e.Code != "":
		return fmt.Sprintf("payment service answered %d %s (%s): %s", e.StatusCode, e.Code, kind, e.Message)
	default:
		return fmt.Sprintf("payment service answered %d (%s): %s", e.StatusCode, kind, e.Message)
	}
}

func (e *PaymentError) Unwrap() error { return e.Err }

// IsRetryable reports whether err is worth retrying: a retryable
// [PaymentError], or any error that is not a PaymentError at all (storage
// and encoding problems are treated as transient). Context cancellation of
// the caller is not retryable.
func IsRetryable(err error) bool {
	if err == nil {
		return false
	}
	var pe *PaymentError
	if errors.As(err, &pe) {
		return pe.Retryable
	}
	return !errors.Is(err, context.Canceled)
}

// PaymentClient calls the payment service's charge endpoint over HTTP JSON.
type PaymentClient struct {
	// BaseURL is the charges endpoint, e.g.
	// http://127.0.0.1:7071/api/sim/payments; Charge POSTs to it.
	BaseURL string
	// APIKey is sent as "Authorization: Bearer <key>" when set.
	APIKey string
	// HTTP is the client used; a client with a 30 s timeout when nil.
	HTTP *http.Client
}

var defaultHTTP = &http.Client{Timeout: 30 * time.Second}

// Charge charges sub for the period starting on period under idempotencyKey.
// A retry with the same key never charges twice: the service answers with
// the original receipt. Errors are *[PaymentError].
func (c *PaymentClient) Charge(ctx context.Context, idempotencyKey string, sub Subscription, period string) (Receipt, error) {
	body, err := json.Marshal(ChargeRequest{
		Customer:    sub.ID,
		Email:       sub.Email,
		AmountMinor: sub.AmountMinor,
		Currency:    sub.Currency,
		Period:      period,
		Description: fmt.Sprintf("%s subscription from %s", sub.Plan, period),
	})
	if err != nil {
		return Receipt{}, fmt.Errorf("charge %s: encode request: %w", idempotencyKey, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.BaseURL, bytes.NewReader(body))
	if err != nil {
		return Receipt{}, &PaymentError{Message: "bad payment service URL " + c.BaseURL + ": " + err.Error(), Err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set(IdempotencyKeyHeader, idempotencyKey)
	if c.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+c.APIKey)
	}
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTP
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return Receipt{}, fmt.Errorf("charge %s: %w", idempotencyKey, ctx.Err())
		}
		return Receipt{}, transportError(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return Receipt{}, &PaymentError{StatusCode: resp.StatusCode, Message: "read response: " + err.Error(), Retryable: true, Err: err}
	}
	if resp.StatusCode/100 != 2 {
		return Receipt{}, statusError(resp.StatusCode, data)
	}
	var r Receipt
	if err := json.Unmarshal(data, &r); err != nil || r.PaymentID == "" {
		// The service may have charged: trying again under the same key is
		// safe and gets the receipt.
		return Receipt{}, &PaymentError{StatusCode: resp.StatusCode, Message: fmt.Sprintf("malformed receipt %q", truncate(string(data), 200)), Retryable: true, Err: err}
	}
	r.Replayed = resp.Header.Get(ReplayedHeader) == "true"
	return r, nil
}

// errorBody is the payment service's error answer.
type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// statusError classifies a non-2xx answer: 5xx, 408 and 429 are retryable,
// every other 4xx is permanent.
func statusError(status int, body []byte) *PaymentError {
	var eb errorBody
	if json.Unmarshal(body, &eb) != nil || eb.Message == "" {
		eb.Message = strings.TrimSpace(truncate(string(body), 200))
		if eb.Message == "" {
			eb.Message = http.StatusText(status)
		}
	}
	retry := status >= 500 || status == http.StatusRequestTimeout || status == http.StatusTooManyRequests
	return &PaymentError{StatusCode: status, Code: eb.Code, Message: eb.Message, Retryable: retry}
}

// transportError classifies a request that got no answer. Timeouts, refused
// and reset connections and cut-off answers are retryable; anything else
// (a malformed URL, an unknown scheme, TLS verification) is permanent.
func transportError(err error) *PaymentError {
	var ne net.Error
	retry := errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		retry = dnsErr.IsTemporary || dnsErr.IsTimeout
	}
	var opErr *net.OpError
	if !retry && errors.As(err, &opErr) && opErr.Op == "dial" {
		retry = true // no route, host down: the service may come back
	}
	return &PaymentError{Message: err.Error(), Retryable: retry, Err: err}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
