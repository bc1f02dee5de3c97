package billing

import (
	"bytes"
	"encoding/base64"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"strings"
	"testing"
	"time"
)

func TestRenderPlain(t *testing.T) {
	t.Parallel()
	m := Email{Key: "notice-2025-03-01-s-1", From: DefaultFrom, To: "Ada <ada@example.com>", Subject: "Paiement reçu\r\nBcc: evil@example.com",
		Text: "Hello Ada,\nwe charged 9.99 EUR.\n", Date: time.Date(2025, 3, 1, 1, 0, 0, 0, time.UTC)}
	data, err := Render(m)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("not RFC 5322: %v\n%s", err, data)
	}
	if msg.Header.Get("Bcc") != "" {
		t.Fatal("header injection through the subject")
	}
	subject, _ := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	if subject != "Paiement reçu  Bcc: evil@example.com" {
		t.Errorf("subject %q", subject)
	}
	if msg.Header.Get("X-Idempotency-Key") != m.Key || !strings.HasSuffix(msg.Header.Get("Message-Id"), "@billing.stratus.local>") {
		t.Errorf("headers %v", msg.Header)
	}
	if d, err := msg.Header.Date(); err != nil || !d.Equal(m.Date) {
		t.Errorf("date %v %v", d, err)
	}
	body, _ := io.ReadAll(quotedprintable.NewReader(msg.Body))
	if string(body) != "Hello Ada,\r\nwe charged 9.99 EUR.\r\n" {
		t.Errorf("body %q", body)
	}
	again, _ := Render(m)
	if !bytes.Equal(data, again) {
		t.Error("rendering is not deterministic")
	}
}

func TestRenderAttachmentsAndHTML(t *testing.T) {
	t.Parallel()
	csvData := []byte(strings.Repeat("a,b,c\n", 40))
	m := Email{Key: "report-2025-03-01", From: DefaultFrom, To: "owner@example.com", Subject: "Report", Text: "see attached",
		HTML: "<p>see attached</p>", Attachments: []Attachment{{Name: "billing-2025-03-01.csv", ContentType: "text/csv", Data: csvData}}}
	data, err := Render(m)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("content type %q %v", mt, err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	body, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	bt, bp, _ := mime.ParseMediaType(body.Header.Get("Content-Type"))
	if bt != "multipart/alternative" {
		t.Fatalf("body part %q", bt)
	}
	alt := multipart.NewReader(body, bp["boundary"])
	var types []string
	for {
		p, err := alt.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, p.Header.Get("Content-Type"))
	}
	if len(types) != 2 || !strings.HasPrefix(types[0], "text/plain") || !strings.HasPrefix(types[1], "text/html") {
		t.Errorf("alternatives %v", types)
	}
	att, err := mr.NextPart()
	if err != nil {
		t.Fatal(err)
	}
	if att.FileName() != "billing-2025-03-01.csv" {
		t.Errorf("attachment name %q", att.FileName())
	}
	got, err := io.ReadAll(base64.NewDecoder(base64.StdEncoding, att))
	if err != nil || !bytes.Equal(got, csvData) {
		t.Errorf("attachment content differs (%v)", err)
	}
}

func TestRenderRejectsBadAddresses(t *testing.T) {
	t.Parallel()
	for _, m := range []Email{
		{Key: "", From: DefaultFrom, To: "a@example.com"},
		{Key: "k", From: "not an address", To: "a@example.com"},
		{Key: "k", From: DefaultFrom, To: "nobody"},
	} {
		if _, err := Render(m); err == nil {
			t.Errorf("Render(%+v): no error", m)
		}
	}
}

func TestOutboxName(t *testing.T) {
	t.Parallel()
	if got := OutboxName("notice-2025-03-01-demo-001"); got != "notice-2025-03-01-demo-001.eml" {
		t.Errorf("plain key: %s", got)
	}
	a, b := OutboxName("a/b"), OutboxName("a?b")
	if a == b || !strings.HasPrefix(a, "a_b-") || !strings.HasSuffix(a, ".eml") {
		t.Errorf("escaped keys %s and %s must differ and stay readable", a, b)
	}
}
