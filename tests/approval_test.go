package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/bindings/azstorage"
	"github.com/stratus-dev/stratus/tests/azurite"
	"github.com/stratus-dev/stratus/tests/hosttest"
)

// TestExpenseApproval drives the expense approval sample through its HTTP
// endpoints: approve, reject, and a deadline that passes twice (escalation,
// then expiry).
func TestExpenseApproval(t *testing.T) {
	t.Parallel()
	az := azurite.Shared(t)
	prefix := fmt.Sprintf("exp%d", time.Now().UnixNano()%1_000_000_000)
	hj, _ := durableHostJSON(t)
	h := hosttest.Start(t, hosttest.Options{Storage: az.ConnectionString, HostJSON: hj, Env: []string{"BillingStoragePrefix=" + prefix}})
	clients, err := azstorage.Open(az.ConnectionString)
	if err != nil {
		t.Fatal(err)
	}

	submit := func(t *testing.T, claim map[string]any) string {
		t.Helper()
		b, _ := json.Marshal(claim)
		code, body, hdr, err := h.Do(context.Background(), "POST", "/api/expenses", b)
		if err != nil || code != http.StatusAccepted || hdr.Get("Location") == "" {
			t.Fatalf("submit: %d %s %v", code, body, err)
		}
		var cs checkStatus
		mustJSON(t, body, &cs)
		return cs.ID
	}
	decide := func(t *testing.T, id string, approved bool) {
		t.Helper()
		code, body, _, err := h.Do(context.Background(), "POST", "/api/expenses/"+id+"/decision", []byte(fmt.Sprintf(`{"approved":%v,"by":"boss@example.com","comment":"ok"}`, approved)))
		if err != nil || code != http.StatusAccepted {
			t.Fatalf("decide: %d %s %v", code, body, err)
		}
	}
	outcome := func(t *testing.T, id string) map[string]any {
		t.Helper()
		st := waitFor(t, h, id, time.Minute, "Completed", "Failed")
		var out map[string]any
		mustJSON(t, st.Output, &out)
		return out
	}
	outboxHas := func(t *testing.T, name string) string {
		t.Helper()
		res, err := clients.Blob.DownloadStream(context.Background(), prefix+"outbox", name, nil)
		if err != nil {
			t.Fatalf("outbox %s: %v", name, err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		// Undo quoted-printable soft line breaks.
		return strings.NewReplacer("=\r\n", "", "=\n", "").Replace(string(b))
	}
	claim := func(deadline float64, escalate bool) map[string]any {
		c := map[string]any{"employee": "ada", "employeeEmail": "ada@example.com", "approver": "boss@example.com",
			"amount": 123.45, "currency": "EUR", "description": "train to Lyon", "deadlineSeconds": deadline}
		if escalate {
			c["escalateTo"] = "cfo@example.com"
		}
		return c
	}

	t.Run("approve pays once", func(t *testing.T) {
		t.Parallel()
		id := submit(t, claim(600, true))
		waitFor(t, h, id, time.Minute, "Running")
		decide(t, id, true)
		out := outcome(t, id)
		if out["status"] != "Paid" || out["paymentId"] != "pay-"+id || out["escalated"] != false {
			t.Fatalf("outcome %v", out)
		}
		if mail := outboxHas(t, id+"-approver.eml"); !strings.Contains(mail, "boss@example.com") || !strings.Contains(mail, "/api/expenses/"+id+"/decision") {
			t.Fatalf("approver notice:\n%s", mail)
		}
		if mail := outboxHas(t, id+"-employee.eml"); !strings.Contains(mail, "paid") {
			t.Fatalf("employee notice:\n%s", mail)
		}
		row, err := clients.Table.NewClient("ExpensePayments").GetEntity(context.Background(), "ada", id, nil)
		if err != nil || !strings.Contains(string(row.Value), "pay-"+id) {
			t.Fatalf("payment row: %s %v", row.Value, err)
		}
		// A decision for a finished approval is refused.
		code, _, _, _ := h.Do(context.Background(), "POST", "/api/expenses/"+id+"/decision", []byte(`{"approved":false,"by":"x"}`))
		if code != http.StatusConflict {
			t.Fatalf("late decision: %d, want 409", code)
		}
	})
	t.Run("reject", func(t *testing.T) {
		t.Parallel()
		id := submit(t, claim(600, false))
		waitFor(t, h, id, time.Minute, "Running")
		decide(t, id, false)
		if out := outcome(t, id); out["status"] != "Rejected" || out["paymentId"] != nil {
			t.Fatalf("outcome %v", out)
		}
	})
	t.Run("deadline escalates, then expires", func(t *testing.T) {
		t.Parallel()
		id := submit(t, claim(2, true))
		out := outcome(t, id)
		if out["status"] != "Expired" || out["escalated"] != true {
			t.Fatalf("outcome %v", out)
		}
		if mail := outboxHas(t, id+"-escalation.eml"); !strings.Contains(mail, "cfo@example.com") {
			t.Fatalf("escalation notice:\n%s", mail)
		}
	})
	t.Run("escalated approval can still be approved", func(t *testing.T) {
		t.Parallel()
		id := submit(t, claim(3, true))
		deadline := time.Now().Add(time.Minute)
		for {
			_, st := getStatus(t, h, id, "")
			if strings.Contains(string(st.CustomStatus), "escalated") {
				break
			}
			if time.Now().After(deadline) || st.RuntimeStatus == "Completed" {
				t.Fatalf("not escalated: %s %s", st.RuntimeStatus, st.CustomStatus)
			}
			time.Sleep(100 * time.Millisecond)
		}
		decide(t, id, true)
		if out := outcome(t, id); out["status"] != "Paid" || out["escalated"] != true {
			t.Fatalf("outcome %v", out)
		}
	})
	t.Run("bad requests", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			path, body string
			want       int
		}{
			{"/api/expenses", `{"employee":"ada"}`, http.StatusBadRequest},
			{"/api/expenses", `not json`, http.StatusBadRequest},
			{"/api/expenses/expense-nope/decision", `{"approved":true,"by":"x"}`, http.StatusNotFound},
			{"/api/expenses/expense-nope/decision", `{"approved":true}`, http.StatusBadRequest},
		} {
			code, body, _, err := h.Do(context.Background(), "POST", tc.path, []byte(tc.body))
			if err != nil || code != tc.want {
				t.Errorf("POST %s %s: %d %s, want %d", tc.path, tc.body, code, body, tc.want)
			}
		}
	})
}
