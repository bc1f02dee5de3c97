// Package azstorage owns the Azure Storage clients the host shares between
// triggers, bindings and the durable task hub: one set of queue, table and blob
// service clients per connection, built from a parsed connection string, with
// an optional request counter used by benchmarks.
package azstorage

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/stratus-dev/stratus/host/config"
)

// Clients are the service clients of one storage account.
type Clients struct {
	// Account is the parsed connection.
	Account config.StorageAccount
	// Queue, Table and Blob are the service clients.
	Queue *azqueue.ServiceClient
	Table *aztables.ServiceClient
	Blob  *azblob.Client
	// Requests counts every HTTP request sent through these clients.
	Requests *atomic.Int64

	ops atomic.Pointer[Operations]
}

// CountOperations starts counting the requests sent through these clients
// (and through transports from Transport) by operation, and returns the
// counts. It is a diagnostic for benchmarks; calling it again restarts the
// counts.
func (c *Clients) CountOperations() *Operations {
	o := &Operations{acct: c.Account, n: map[string]int64{}, d: map[string]time.Duration{}}
	c.ops.Store(o)
	return o
}

// Transport wraps next so that its requests are counted with these
// clients' (Requests and CountOperations), for service clients built
// outside this package.
func (c *Clients) Transport(next http.RoundTripper) http.RoundTripper {
	return &countingTransport{next: next, c: c}
}

// Open builds clients for a connection string.
func Open(connectionString string) (*Clients, error) {
	acct, err := config.ParseStorageConnectionString(connectionString)
	if err != nil {
		return nil, err
	}
	return OpenAccount(acct)
}

// OpenAccount builds clients for a parsed account.
func OpenAccount(acct config.StorageAccount) (*Clients, error) {
	c := &Clients{Account: acct, Requests: new(atomic.Int64)}
	transport := c.Transport(sharedTransport)
	opts := azcore.ClientOptions{
		Transport: &http.Client{Transport: transport},
		Retry: policy.RetryOptions{
			MaxRetries:    4,
			TryTimeout:    30 * time.Second,
			RetryDelay:    200 * time.Millisecond,
			MaxRetryDelay: 5 * time.Second,
		},
		Telemetry: policy.TelemetryOptions{Disabled: true},
	}
	qcred, err := azqueue.NewSharedKeyCredential(acct.Name, acct.Key)
	if err != nil {
		return nil, fmt.Errorf("queue credential: %w", err)
	}
	if c.Queue, err = azqueue.NewServiceClientWithSharedKeyCredential(acct.QueueURL+"/", qcred, &azqueue.ClientOptions{ClientOptions: opts}); err != nil {
		return nil, fmt.Errorf("queue client: %w", err)
	}
	tcred, err := aztables.NewSharedKeyCredential(acct.Name, acct.Key)
	if err != nil {
		return nil, fmt.Errorf("table credential: %w", err)
	}
	if c.Table, err = aztables.NewServiceClientWithSharedKey(acct.TableURL+"/", tcred, &aztables.ClientOptions{ClientOptions: opts}); err != nil {
		return nil, fmt.Errorf("table client: %w", err)
	}
	bcred, err := azblob.NewSharedKeyCredential(acct.Name, acct.Key)
	if err != nil {
		return nil, fmt.Errorf("blob credential: %w", err)
	}
	if c.Blob, err = azblob.NewClientWithSharedKeyCredential(acct.BlobURL+"/", bcred, &azblob.ClientOptions{ClientOptions: opts}); err != nil {
		return nil, fmt.Errorf("blob client: %w", err)
	}
	return c, nil
}

// sharedTransport keeps enough idle connections for the host's concurrency:
// the default of 2 per host would make every burst pay for new connections.
var sharedTransport = &http.Transport{
	Proxy:               nil,
	MaxIdleConns:        256,
	MaxIdleConnsPerHost: 128,
	IdleConnTimeout:     90 * time.Second,
}

type countingTransport struct {
	next http.RoundTripper
	c    *Clients
}

func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.c.Requests.Add(1)
	o := t.c.ops.Load()
	if o == nil {
		return t.next.RoundTrip(r)
	}
	t0 := time.Now()
	res, err := t.next.RoundTrip(r)
	o.add(r, time.Since(t0))
	return res, err
}

// Operations counts requests by operation: the method, the service and the
// kind of resource, e.g. "DELETE queue hub-control-*/messages/{id}" or
// "POST table $batch". It is safe for concurrent use.
type Operations struct {
	acct config.StorageAccount
	mu   sync.Mutex
	n    map[string]int64
	d    map[string]time.Duration // time to response headers
}

// Counts returns a copy of the counts by operation.
func (o *Operations) Counts() map[string]int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make(map[string]int64, len(o.n))
	for k, v := range o.n {
		out[k] = v
	}
	return out
}

// String lists the counts, largest first, one operation a line, with the
// mean time to response headers.
func (o *Operations) String() string {
	counts := o.Counts()
	o.mu.Lock()
	mean := make(map[string]time.Duration, len(o.d))
	for k, d := range o.d {
		mean[k] = d / time.Duration(max(o.n[k], 1))
	}
	o.mu.Unlock()
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		if counts[a] != counts[b] {
			return int(counts[b] - counts[a])
		}
		return strings.Compare(a, b)
	})
	var sb strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&sb, "%8d  %7.2f ms  %s\n", counts[k], float64(mean[k])/float64(time.Millisecond), k)
	}
	return sb.String()
}

func (o *Operations) add(r *http.Request, d time.Duration) {
	k := operationOf(o.acct, r)
	o.mu.Lock()
	o.n[k]++
	o.d[k] += d
	o.mu.Unlock()
}

// operationOf names a request's operation with instance-specific parts of
// the path (message ids, entity keys, partition numbers) left out.
func operationOf(acct config.StorageAccount, r *http.Request) string {
	service := "?"
	for _, s := range []struct{ name, base string }{{"queue", acct.QueueURL}, {"table", acct.TableURL}, {"blob", acct.BlobURL}} {
		if s.base != "" && strings.Contains(s.base, "//"+r.URL.Host) {
			service = s.name
		}
	}
	path := strings.TrimPrefix(r.URL.Path, "/")
	if acct.Name != "" {
		path = strings.TrimPrefix(path, acct.Name+"/")
	}
	parts := strings.Split(path, "/")
	switch service {
	case "queue":
		if len(parts) > 2 && parts[1] == "messages" {
			parts[2] = "{id}"
		}
	case "table":
		if i := strings.IndexByte(parts[0], '('); i >= 0 {
			if strings.HasSuffix(parts[0], "()") || r.URL.Query().Has("$filter") {
				parts[0] = parts[0][:i] + " query"
			} else {
				parts[0] = parts[0][:i] + "(entity)"
			}
		} else if r.URL.Query().Has("$filter") {
			parts[0] += " query"
		}
	case "blob":
		if len(parts) > 1 {
			parts = parts[:1]
		}
	}
	for i, p := range parts {
		if j := strings.LastIndexByte(p, '-'); j >= 0 && j < len(p)-1 && strings.Trim(p[j+1:], "0123456789") == "" {
			parts[i] = p[:j+1] + "*"
		}
	}
	op := r.Method + " " + service + " " + strings.Join(parts, "/")
	if comp := r.URL.Query().Get("comp"); comp != "" {
		op += "?comp=" + comp
	}
	return op
}
