package azurestorage

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/stratus-dev/stratus/bindings/azstorage"
)

// The table SDK discards the per-operation responses of an entity-group
// transaction: it returns neither the new ETags nor which operation failed
// (a 409 or 412 inside the batch surfaces as an error without a code). The
// sentinel protocol needs both, so the History table gets its own client
// whose pipeline hands the raw batch response to the caller.

// batchResult is the parsed inner responses of one transaction.
type batchResult struct {
	statuses []int
	etags    []azcore.ETag
	codes    []string
}

type batchCaptureKey struct{}

type batchCapture struct{ res batchResult }

type capturePolicy struct{}

func (capturePolicy) Do(req *policy.Request) (*http.Response, error) {
	resp, err := req.Next()
	if err != nil || resp == nil || !strings.HasSuffix(req.Raw().URL.Path, "$batch") {
		return resp, err
	}
	c, _ := req.Raw().Context().Value(batchCaptureKey{}).(*batchCapture)
	if c == nil {
		return resp, nil
	}
	body, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if rerr != nil {
		return resp, rerr
	}
	c.res = parseBatchResponse(body)
	return resp, nil
}

// parseBatchResponse reads the status line, ETag header and error code of
// every inner response, in operation order.
func parseBatchResponse(body []byte) batchResult {
	var r batchResult
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(nil, 4<<20) // grows from 4 KB as long lines need
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		switch {
		case strings.HasPrefix(line, "HTTP/1.1 "):
			code, _ := strconv.Atoi(strings.Fields(line)[1])
			r.statuses = append(r.statuses, code)
			r.etags = append(r.etags, "")
			r.codes = append(r.codes, "")
		case len(r.etags) > 0 && strings.HasPrefix(strings.ToLower(line), "etag:"):
			r.etags[len(r.etags)-1] = azcore.ETag(strings.TrimSpace(line[5:]))
		case len(r.codes) > 0 && strings.Contains(line, `"code":"`):
			rest := line[strings.Index(line, `"code":"`)+8:]
			if i := strings.IndexByte(rest, '"'); i >= 0 {
				r.codes[len(r.codes)-1] = rest[:i]
			}
		}
	}
	return r
}

// conflictError is a failed optimistic-concurrency check on the sentinel.
type conflictError struct {
	status int
	code   string
}

func (e *conflictError) Error() string {
	return fmt.Sprintf("history sentinel changed underneath (%d %s)", e.status, e.code)
}

// submit runs one transaction and returns the ETag of its last operation.
// A 409 or 412 of any operation is a *conflictError.
func submit(ctx context.Context, t *aztables.Client, actions []aztables.TransactionAction) (azcore.ETag, error) {
	c := &batchCapture{}
	_, err := t.SubmitTransaction(context.WithValue(ctx, batchCaptureKey{}, c), actions, nil)
	for i, s := range c.res.statuses {
		if s == http.StatusConflict || s == http.StatusPreconditionFailed {
			return "", &conflictError{status: s, code: c.res.codes[i]}
		}
		if s >= 400 && err == nil {
			err = fmt.Errorf("transaction operation %d failed: %d %s", i, s, c.res.codes[i])
		}
	}
	if err != nil {
		return "", err
	}
	if n := len(c.res.etags); n > 0 {
		return c.res.etags[n-1], nil
	}
	return "", nil
}

// historyTableClient builds the History table client with batch capture.
// Its requests are counted in clients.Requests like every other.
func historyTableClient(clients *azstorage.Clients, table string) (*aztables.Client, error) {
	cred, err := aztables.NewSharedKeyCredential(clients.Account.Name, clients.Account.Key)
	if err != nil {
		return nil, fmt.Errorf("table credential: %w", err)
	}
	opts := azcore.ClientOptions{
		Transport:        &http.Client{Transport: clients.Transport(historyTransport)},
		PerRetryPolicies: []policy.Policy{capturePolicy{}},
		Retry:            policy.RetryOptions{MaxRetries: 4, TryTimeout: 30 * time.Second, RetryDelay: 200 * time.Millisecond, MaxRetryDelay: 5 * time.Second},
		Telemetry:        policy.TelemetryOptions{Disabled: true},
	}
	c, err := aztables.NewClientWithSharedKey(strings.TrimRight(clients.Account.TableURL, "/")+"/"+table, cred, &aztables.ClientOptions{ClientOptions: opts})
	if err != nil {
		return nil, fmt.Errorf("history table client: %w", err)
	}
	return c, nil
}

var historyTransport = &http.Transport{MaxIdleConns: 128, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}
