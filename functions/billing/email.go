package billing

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"

	bstorage "github.com/stratus-dev/stratus/bindings/storage"
)

// OutboxContainer is the blob container messages are written to when no
// SMTP server is configured.
const OutboxContainer = "outbox"

// SentEmailsTable records the idempotency keys of messages sent over SMTP.
const SentEmailsTable = "SentEmails"

// Attachment is a file attached to an [Email].
type Attachment struct {
	// Name is the file name.
	Name string `json:"name"`
	// ContentType is the MIME type (text/csv, ...).
	ContentType string `json:"contentType"`
	// Data is the content.
	Data []byte `json:"data"`
}

// Email is one message to send.
type Email struct {
	// Key is the idempotency key: one key is sent at most once, and names
	// the outbox blob.
	Key string `json:"key"`
	// From is the sender; the mailer's default when empty.
	From string `json:"from,omitempty"`
	// To is the recipient.
	To string `json:"to"`
	// Subject is the subject line.
	Subject string `json:"subject"`
	// Text is the plain-text body.
	Text string `json:"text"`
	// HTML is an optional HTML alternative of Text.
	HTML string `json:"html,omitempty"`
	// Attachments are attached files.
	Attachments []Attachment `json:"attachments,omitempty"`
	// Date is the Date header; the time of rendering when zero.
	Date time.Time `json:"date,omitzero"`
}

// Delivery says what happened to an [Email].
type Delivery struct {
	// Key is the message's idempotency key.
	Key string `json:"key"`
	// Transport is "outbox" or "smtp".
	Transport string `json:"transport"`
	// Location is the outbox blob (container/name) or the SMTP server.
	Location string `json:"location"`
	// AlreadySent is true when the key had been sent before and nothing was
	// sent this time.
	AlreadySent bool `json:"alreadySent,omitempty"`
}

// Mailer sends an [Email] once per key.
type Mailer interface {
	// Send sends m unless m.Key was sent before.
	Send(ctx context.Context, m Email) (Delivery, error)
}

// Render writes m as an RFC 5322 message with MIME parts: a text/plain body
// (with a multipart/alternative HTML part when m.HTML is set) and
// attachments. Boundaries and the Message-ID derive from m.Key, so the same
// message renders the same way.
func Render(m Email) ([]byte, error) {
	if m.Key == "" {
		return nil, fmt.Errorf("email to %s: no idempotency key", m.To)
	}
	from, err := mail.ParseAddress(m.From)
	if err != nil {
		return nil, fmt.Errorf("email %s: from %q: %w", m.Key, m.From, err)
	}
	to, err := mail.ParseAddress(m.To)
	if err != nil {
		return nil, fmt.Errorf("email %s: to %q: %w", m.Key, m.To, err)
	}
	date := m.Date
	if date.IsZero() {
		date = time.Now()
	}
	sum := sha256.Sum256([]byte(m.Key))
	id := hex.EncodeToString(sum[:12])
	subject := strings.NewReplacer("\r", " ", "\n", " ").Replace(m.Subject)

	var buf bytes.Buffer
	h := func(k, v string) { fmt.Fprintf(&buf, "%s: %s\r\n", k, v) }
	h("From", from.String())
	h("To", to.String())
	h("Subject", mime.QEncoding.Encode("utf-8", subject))
	h("Date", date.Format(time.RFC1123Z))
	h("Message-ID", "<"+id+"@billing.stratus.local>")
	h("X-Idempotency-Key", strings.NewReplacer("\r", "", "\n", "").Replace(m.Key))
	h("MIME-Version", "1.0")

	if len(m.Attachments) == 0 {
		if err := writeBody(&buf, nil, m, id); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	mw := multipart.NewWriter(&buf)
	if err := mw.SetBoundary("mixed-" + id); err != nil {
		return nil, err
	}
	h("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	buf.WriteString("\r\n")
	if err := writeBody(&buf, mw, m, id); err != nil {
		return nil, err
	}
	for _, a := range m.Attachments {
		ct := a.ContentType
		if ct == "" {
			ct = "application/octet-stream"
		}
		ph := textproto.MIMEHeader{}
		ph.Set("Content-Type", ct)
		ph.Set("Content-Transfer-Encoding", "base64")
		ph.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": a.Name}))
		w, err := mw.CreatePart(ph)
		if err != nil {
			return nil, err
		}
		enc := base64.StdEncoding.EncodeToString(a.Data)
		for len(enc) > 76 {
			fmt.Fprintf(w, "%s\r\n", enc[:76])
			enc = enc[76:]
		}
		fmt.Fprintf(w, "%s\r\n", enc)
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeBody writes the text (and HTML) body: as the message's own content
// when parent is nil, else as a part of parent.
func writeBody(buf *bytes.Buffer, parent *multipart.Writer, m Email, id string) error {
	part := func(ph textproto.MIMEHeader) (io.Writer, error) {
		if parent != nil {
			return parent.CreatePart(ph)
		}
		for _, k := range slices.Sorted(maps.Keys(ph)) {
			fmt.Fprintf(buf, "%s: %s\r\n", k, ph.Get(k))
		}
		buf.WriteString("\r\n")
		return buf, nil
	}
	if m.HTML == "" {
		w, err := part(textproto.MIMEHeader{"Content-Type": {"text/plain; charset=utf-8"}, "Content-Transfer-Encoding": {"quoted-printable"}})
		if err != nil {
			return err
		}
		return writeQP(w, m.Text)
	}
	boundary := "alt-" + id
	w, err := part(textproto.MIMEHeader{"Content-Type": {"multipart/alternative; boundary=" + boundary}})
	if err != nil {
		return err
	}
	aw := multipart.NewWriter(w)
	if err := aw.SetBoundary(boundary); err != nil {
		return err
	}
	for _, p := range []struct{ ct, body string }{{"text/plain; charset=utf-8", m.Text}, {"text/html; charset=utf-8", m.HTML}} {
		pw, err := aw.CreatePart(textproto.MIMEHeader{"Content-Type": {p.ct}, "Content-Transfer-Encoding": {"quoted-printable"}})
		if err != nil {
			return err
		}
		if err := writeQP(pw, p.body); err != nil {
			return err
		}
	}
	return aw.Close()
}

func writeQP(w io.Writer, s string) error {
	q := quotedprintable.NewWriter(w)
	s = strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
	if _, err := q.Write([]byte(s)); err != nil {
		return err
	}
	return q.Close()
}

// OutboxName returns the blob name of key's message: the key with every
// character other than letters, digits, '.', '-' and '_' replaced by '_'
// (plus a short hash of the key when anything was replaced, so that two keys
// never share a blob), and ".eml".
func OutboxName(key string) string {
	var b strings.Builder
	changed := false
	for _, r := range key {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
			changed = true
		}
	}
	name := b.String()
	if len(name) > 200 {
		name, changed = name[:200], true
	}
	if changed {
		sum := sha256.Sum256([]byte(key))
		name += "-" + hex.EncodeToString(sum[:4])
	}
	return name + ".eml"
}

// Outbox "sends" messages by writing each as an .eml blob named after its
// key ([OutboxName]) in a container. A message sent again overwrites its
// blob, so the outbox holds each key once.
type Outbox struct {
	blob      *azblob.Client
	container string
	from      string
}

// NewOutbox returns an outbox writing to container, with from as the
// default sender.
func NewOutbox(c *azblob.Client, container, from string) *Outbox {
	return &Outbox{blob: c, container: container, from: from}
}

// Send writes m to the outbox.
func (o *Outbox) Send(ctx context.Context, m Email) (Delivery, error) {
	if m.From == "" {
		m.From = o.from
	}
	data, err := Render(m)
	if err != nil {
		return Delivery{}, err
	}
	name := OutboxName(m.Key)
	ct := "message/rfc822"
	opts := &azblob.UploadBufferOptions{HTTPHeaders: &blob.HTTPHeaders{BlobContentType: &ct}}
	_, err = o.blob.UploadBuffer(ctx, o.container, name, data, opts)
	if bstorage.IsNotFound(err) {
		if err = bstorage.CreateContainer(ctx, o.blob, o.container); err == nil {
			_, err = o.blob.UploadBuffer(ctx, o.container, name, data, opts)
		}
	}
	if err != nil {
		return Delivery{}, fmt.Errorf("write %s/%s: %w", o.container, name, err)
	}
	return Delivery{Key: m.Key, Transport: "outbox", Location: o.container + "/" + name}, nil
}

// SMTPConfig is how to reach the SMTP server.
type SMTPConfig struct {
	// Host and Port locate the server (port 587 when zero).
	Host string
	Port int
	// User and Password authenticate with PLAIN auth when User is set (over
	// TLS, or to a server on loopback).
	User     string
	Password string
	// From is the default sender.
	From string
	// Timeout bounds one send (30 s when zero).
	Timeout time.Duration
}

// SMTPMailer sends over SMTP and records each key in a table, so that a
// key is sent at most once:
//
//  1. a row for the key is inserted with a conditional add ("sending");
//     a key that already has a row is not sent again;
//  2. the message is sent;
//  3. the row is marked "sent"; when the server rejected the message, the
//     row is deleted instead so that a retry sends it.
//
// A process that dies between steps 1 and 3 leaves a "sending" row, and the
// key is then never sent again: the guarantee is at most once, never twice.
// Such keys are logged when a retry skips them.
type SMTPMailer struct {
	cfg   SMTPConfig
	svc   *aztables.ServiceClient
	table *aztables.Client
	name  string
	log   *slog.Logger
}

// NewSMTPMailer returns a mailer for cfg that records keys in table.
func NewSMTPMailer(cfg SMTPConfig, svc *aztables.ServiceClient, table string, log *slog.Logger) *SMTPMailer {
	if cfg.Port == 0 {
		cfg.Port = 587
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	if log == nil {
		log = slog.Default()
	}
	return &SMTPMailer{cfg: cfg, svc: svc, table: svc.NewClient(table), name: table, log: log}
}

func (s *SMTPMailer) addr() string { return net.JoinHostPort(s.cfg.Host, strconv.Itoa(s.cfg.Port)) }

// Send sends m unless its key has a row already.
func (s *SMTPMailer) Send(ctx context.Context, m Email) (Delivery, error) {
	if m.From == "" {
		m.From = s.cfg.From
	}
	data, err := Render(m)
	if err != nil {
		return Delivery{}, err
	}
	d := Delivery{Key: m.Key, Transport: "smtp", Location: s.addr()}
	sum := sha256.Sum256([]byte(m.Key))
	rk := hex.EncodeToString(sum[:16])
	claim, _ := json.Marshal(map[string]any{"PartitionKey": "email", "RowKey": rk, "Key": m.Key, "To": m.To, "State": "sending",
		"ClaimedAt": time.Now().UTC().Format(time.RFC3339Nano)})
	add, err := s.table.AddEntity(ctx, claim, nil)
	if bstorage.ErrorCode(err) == string(aztables.TableNotFound) {
		if err = bstorage.CreateTable(ctx, s.svc, s.name); err == nil {
			add, err = s.table.AddEntity(ctx, claim, nil)
		}
	}
	if bstorage.IsConflict(err) {
		state := "unknown"
		if res, gerr := s.table.GetEntity(ctx, "email", rk, nil); gerr == nil {
			var row struct{ State string }
			_ = json.Unmarshal(res.Value, &row)
			state = row.State
		}
		if state != "sent" {
			s.log.Warn("email not sent: an earlier attempt claimed it and did not finish; it is not sent twice", "key", m.Key, "to", m.To, "state", state)
		}
		d.AlreadySent = true
		return d, nil
	}
	if err != nil {
		return Delivery{}, fmt.Errorf("claim email %s: %w", m.Key, err)
	}
	sent, err := s.deliver(ctx, m, data)
	if err != nil && !sent {
		etag := add.ETag
		if _, derr := s.table.DeleteEntity(context.WithoutCancel(ctx), "email", rk, &aztables.DeleteEntityOptions{IfMatch: &etag}); derr != nil {
			s.log.Warn("email failed and its claim could not be released; it will not be retried", "key", m.Key, "err", derr)
		}
		return Delivery{}, fmt.Errorf("send email %s via %s: %w", m.Key, s.addr(), err)
	}
	if err != nil {
		s.log.Warn("email accepted by the server, closing the connection failed", "key", m.Key, "err", err)
	}
	done, _ := json.Marshal(map[string]any{"PartitionKey": "email", "RowKey": rk, "State": "sent", "SentAt": time.Now().UTC().Format(time.RFC3339Nano)})
	if _, err := s.table.UpdateEntity(context.WithoutCancel(ctx), done, &aztables.UpdateEntityOptions{UpdateMode: aztables.UpdateModeMerge, IfMatch: to(azcore.ETagAny)}); err != nil {
		s.log.Warn("email sent; recording it failed (the claim still prevents a second send)", "key", m.Key, "err", err)
	}
	return d, nil
}

func to[T any](v T) *T { return &v }

// deliver runs one SMTP conversation. sent reports that the server accepted
// the message (an error after that is about closing the connection).
func (s *SMTPMailer) deliver(ctx context.Context, m Email, data []byte) (sent bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", s.addr())
	if err != nil {
		return false, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	c, err := smtp.NewClient(conn, s.cfg.Host)
	if err != nil {
		conn.Close()
		return false, err
	}
	defer c.Close()
	if err := c.Hello("localhost"); err != nil {
		return false, err
	}
	if ok, _ := c.Extension("STARTTLS"); ok {
		if err := c.StartTLS(&tls.Config{ServerName: s.cfg.Host}); err != nil {
			return false, err
		}
	}
	if s.cfg.User != "" {
		if err := c.Auth(smtp.PlainAuth("", s.cfg.User, s.cfg.Password, s.cfg.Host)); err != nil {
			return false, err
		}
	}
	from, _ := mail.ParseAddress(m.From)
	rcpt, _ := mail.ParseAddress(m.To)
	if err := c.Mail(from.Address); err != nil {
		return false, err
	}
	if err := c.Rcpt(rcpt.Address); err != nil {
		return false, err
	}
	w, err := c.Data()
	if err != nil {
		return false, err
	}
	if _, err := w.Write(data); err != nil {
		return false, err
	}
	if err := w.Close(); err != nil {
		return false, err
	}
	return true, c.Quit()
}
