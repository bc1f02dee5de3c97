// Package azstorage owns the Azure Storage clients the host shares between
// triggers, bindings and the durable task hub: one set of queue, table and blob
// service clients per connection, built from a parsed connection string, with
// an optional request counter used by benchmarks.
package azstorage

import (
	"fmt"
	"net/http"
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
	transport := &countingTransport{next: sharedTransport, n: c.Requests}
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
	n    *atomic.Int64
}

func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.n.Add(1)
	return t.next.RoundTrip(r)
}
