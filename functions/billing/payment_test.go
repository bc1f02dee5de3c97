package billing

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

var testSub = Subscription{ID: "s-1", Name: "Ada Lovelace", Email: "ada@example.com", Plan: Monthly, AmountMinor: 999,
	Currency: "EUR", NextBillingDate: "2025-03-01", Status: Active}

func TestStatusErrorClassification(t *testing.T) {
	t.Parallel()
	tests := []struct {
		status    int
		body      string
		retryable bool
		code      string
	}{
		{http.StatusServiceUnavailable, `{"code":"service_unavailable","message":"down"}`, true, "service_unavailable"},
		{http.StatusInternalServerError, `oops`, true, ""},
		{http.StatusBadGateway, ``, true, ""},
		{http.StatusRequestTimeout, ``, true, ""},
		{http.StatusTooManyRequests, ``, true, ""},
		{http.StatusPaymentRequired, `{"code":"card_declined","message":"declined"}`, false, "card_declined"},
		{http.StatusBadRequest, `{"code":"invalid_request","message":"no"}`, false, "invalid_request"},
		{http.StatusUnauthorized, ``, false, ""},
		{http.StatusUnprocessableEntity, `{"code":"idempotency_key_reused","message":"x"}`, false, "idempotency_key_reused"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.status), func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				fmt.Fprint(w, tt.body)
			}))
			defer srv.Close()
			c := &PaymentClient{BaseURL: srv.URL}
			_, err := c.Charge(context.Background(), "k", testSub, "2025-03-01")
			var pe *PaymentError
			if !errors.As(err, &pe) {
				t.Fatalf("err = %v, want a *PaymentError", err)
			}
			if pe.StatusCode != tt.status || pe.Retryable != tt.retryable || pe.Code != tt.code || IsRetryable(err) != tt.retryable {
				t.Fatalf("got %+v, want status %d retryable %v code %q", pe, tt.status, tt.retryable, tt.code)
			}
			if pe.Message == "" {
				t.Error("no message")
			}
		})
	}
}

func TestTransportErrorClassification(t *testing.T) {
	t.Parallel()
	// A port nothing listens on: connection refused.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + l.Addr().String()
	l.Close()

	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer slow.Close()

	cut := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	defer cut.Close()

	tests := []struct {
		name      string
		url       string
		client    *http.Client
		retryable bool
	}{
		{"connection refused", refused, nil, true},
		{"timeout", slow.URL, &http.Client{Timeout: 50 * time.Millisecond}, true},
		{"connection cut", cut.URL, nil, true},
		{"unknown scheme", "ftp://127.0.0.1/x", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := &PaymentClient{BaseURL: tt.url, HTTP: tt.client}
			_, err := c.Charge(context.Background(), "k", testSub, "2025-03-01")
			var pe *PaymentError
			if !errors.As(err, &pe) || pe.StatusCode != 0 || pe.Retryable != tt.retryable {
				t.Fatalf("err = %#v, want a transport PaymentError with retryable %v", err, tt.retryable)
			}
		})
	}
}

func TestChargeSendsKeyAndDecodesReceipt(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(IdempotencyKeyHeader) != "s-1:2025-03-01" || r.Header.Get("Authorization") != "Bearer secret" {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"code":"bad","message":"headers %v"}`, r.Header)
			return
		}
		w.Header().Set(ReplayedHeader, "true")
		fmt.Fprint(w, `{"paymentId":"pay_1","amountMinor":999,"currency":"EUR","status":"succeeded"}`)
	}))
	defer srv.Close()
	c := &PaymentClient{BaseURL: srv.URL, APIKey: "secret"}
	r, err := c.Charge(context.Background(), ChargeKey("s-1", "2025-03-01"), testSub, "2025-03-01")
	if err != nil || r.PaymentID != "pay_1" || !r.Replayed || r.AmountMinor != 999 {
		t.Fatalf("Charge = %+v, %v", r, err)
	}
}

func TestMalformedReceiptIsRetryable(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "<html>") }))
	defer srv.Close()
	_, err := (&PaymentClient{BaseURL: srv.URL}).Charge(context.Background(), "k", testSub, "2025-03-01")
	if !IsRetryable(err) || !strings.Contains(err.Error(), "malformed receipt") {
		t.Fatalf("err = %v, want a retryable malformed-receipt error", err)
	}
}

func TestCanceledContextIsNotRetryable(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := (&PaymentClient{BaseURL: "http://127.0.0.1:1"}).Charge(ctx, "k", testSub, "2025-03-01")
	if !errors.Is(err, context.Canceled) || IsRetryable(err) {
		t.Fatalf("err = %v, want context.Canceled, not retryable", err)
	}
}
