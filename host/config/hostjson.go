package config

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// HostJSON is host.json. Field names and defaults follow the Azure Functions host.
type HostJSON struct {
	// Version must be "2.0".
	Version string `json:"version"`
	// FunctionTimeout bounds every invocation; -1 means unbounded.
	FunctionTimeout *TimeSpan `json:"functionTimeout"`
	// Logging configures log levels per category.
	Logging Logging `json:"logging"`
	// Extensions holds per-extension options.
	Extensions Extensions `json:"extensions"`
	// Singleton configures the blob-lease locks that keep timers and the blob
	// scanner to one host instance.
	Singleton Singleton `json:"singleton"`
	// Retry is the host-wide invocation retry policy for timer and queue triggers.
	Retry *RetryPolicy `json:"retry"`
	// Functions, when not empty, is the allow-list of functions to load.
	Functions []string `json:"functions"`
}

// Logging is the "logging" section.
type Logging struct {
	// LogLevel maps categories ("default", "Function", "Function.<Name>",
	// "Host.Results", ...) to levels (Trace, Debug, Information, Warning,
	// Error, Critical, None). The longest matching prefix wins.
	LogLevel map[string]string `json:"logLevel"`
}

// Extensions is the "extensions" section.
type Extensions struct {
	HTTP        HTTPOptions        `json:"http"`
	Queues      QueueOptions       `json:"queues"`
	Blobs       BlobOptions        `json:"blobs"`
	DurableTask DurableTaskOptions `json:"durableTask"`
}

// HTTPOptions is "extensions.http".
type HTTPOptions struct {
	// RoutePrefix prefixes every HTTP-triggered route; nil means "api" and ""
	// means no prefix.
	RoutePrefix *string `json:"routePrefix"`
	// MaxConcurrentRequests bounds in-flight HTTP invocations (-1 unbounded).
	MaxConcurrentRequests int `json:"maxConcurrentRequests"`
	// CustomHeaders are added to every HTTP response.
	CustomHeaders map[string]string `json:"customHeaders"`
}

// QueueOptions is "extensions.queues".
type QueueOptions struct {
	MaxPollingInterval *TimeSpan `json:"maxPollingInterval"`
	VisibilityTimeout  *TimeSpan `json:"visibilityTimeout"`
	BatchSize          int       `json:"batchSize"`
	NewBatchThreshold  int       `json:"newBatchThreshold"`
	MaxDequeueCount    int       `json:"maxDequeueCount"`
	MessageEncoding    string    `json:"messageEncoding"`
}

// BlobOptions is "extensions.blobs".
type BlobOptions struct {
	MaxDegreeOfParallelism int `json:"maxDegreeOfParallelism"`
	PoisonBlobThreshold    int `json:"poisonBlobThreshold"`
}

// DurableTaskOptions is "extensions.durableTask".
type DurableTaskOptions struct {
	HubName                        string `json:"hubName"`
	MaxConcurrentActivityFunctions int    `json:"maxConcurrentActivityFunctions"`
	MaxConcurrentOrchestratorFuncs int    `json:"maxConcurrentOrchestratorFunctions"`
	MaxConcurrentEntityFunctions   int    `json:"maxConcurrentEntityFunctions"`
	// MaxEntityOperationBatchSize bounds the operations one entity runs per
	// work item (default 5000, as Durable Functions).
	MaxEntityOperationBatchSize int            `json:"maxEntityOperationBatchSize"`
	StorageProvider             StorageOptions `json:"storageProvider"`
}

// StorageOptions is "extensions.durableTask.storageProvider".
type StorageOptions struct {
	ConnectionName                 string    `json:"connectionName"`
	ConnectionStringName           string    `json:"connectionStringName"`
	PartitionCount                 int       `json:"partitionCount"`
	ControlQueueBatchSize          int       `json:"controlQueueBatchSize"`
	ControlQueueVisibilityTimeout  *TimeSpan `json:"controlQueueVisibilityTimeout"`
	WorkItemQueueVisibilityTimeout *TimeSpan `json:"workItemQueueVisibilityTimeout"`
	MaxQueuePollingInterval        *TimeSpan `json:"maxQueuePollingInterval"`
}

// Singleton is the "singleton" section.
type Singleton struct {
	LockPeriod                          *TimeSpan `json:"lockPeriod"`
	ListenerLockPeriod                  *TimeSpan `json:"listenerLockPeriod"`
	ListenerLockRecoveryPollingInterval *TimeSpan `json:"listenerLockRecoveryPollingInterval"`
	LockAcquisitionPollingInterval      *TimeSpan `json:"lockAcquisitionPollingInterval"`
}

// RetryPolicy is an invocation retry policy ("retry" in host.json or a function).
type RetryPolicy struct {
	// Strategy is "fixedDelay" or "exponentialBackoff".
	Strategy string `json:"strategy"`
	// MaxRetryCount is the number of retries after the first attempt; -1 retries forever.
	MaxRetryCount int `json:"maxRetryCount"`
	// DelayInterval is the delay for fixedDelay.
	DelayInterval *TimeSpan `json:"delayInterval,omitempty"`
	// MinimumInterval and MaximumInterval bound exponentialBackoff delays.
	MinimumInterval *TimeSpan `json:"minimumInterval,omitempty"`
	MaximumInterval *TimeSpan `json:"maximumInterval,omitempty"`
}

// Validate checks the policy's fields.
func (p *RetryPolicy) Validate() error {
	switch p.Strategy {
	case "fixedDelay":
		if p.DelayInterval == nil || *p.DelayInterval < 0 {
			return &FieldError{Field: "retry.delayInterval", Msg: "required for fixedDelay, as hh:mm:ss"}
		}
	case "exponentialBackoff":
		if p.MinimumInterval == nil || p.MaximumInterval == nil {
			return &FieldError{Field: "retry.minimumInterval", Msg: "minimumInterval and maximumInterval are required for exponentialBackoff"}
		}
		if *p.MaximumInterval < *p.MinimumInterval {
			return &FieldError{Field: "retry.maximumInterval", Msg: "must not be less than minimumInterval"}
		}
	default:
		return &FieldError{Field: "retry.strategy", Msg: fmt.Sprintf("%q is not fixedDelay or exponentialBackoff", p.Strategy)}
	}
	if p.MaxRetryCount < -1 {
		return &FieldError{Field: "retry.maxRetryCount", Msg: "must be -1 (forever) or more"}
	}
	return nil
}

// Delay returns the wait before retry number n (1-based).
func (p *RetryPolicy) Delay(n int) time.Duration {
	if p.Strategy == "fixedDelay" {
		return p.DelayInterval.Duration()
	}
	lo, hi := p.MinimumInterval.Duration(), p.MaximumInterval.Duration()
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	return min(d, hi)
}

// DefaultHostJSON is host.json with every default applied and nothing else.
func DefaultHostJSON() HostJSON { return HostJSON{Version: "2.0"} }

// DefaultFunctionTimeout is the timeout when host.json sets none (the
// dedicated-plan default of the Azure Functions host).
const DefaultFunctionTimeout = 30 * time.Minute

// Timeout returns functionTimeout; 0 means unbounded.
func (h *HostJSON) Timeout() time.Duration {
	if h.FunctionTimeout == nil {
		return DefaultFunctionTimeout
	}
	if *h.FunctionTimeout < 0 {
		return 0
	}
	return h.FunctionTimeout.Duration()
}

// RoutePrefix returns extensions.http.routePrefix, "api" by default, without slashes.
func (h *HostJSON) RoutePrefix() string {
	if h.Extensions.HTTP.RoutePrefix == nil {
		return "api"
	}
	return strings.Trim(*h.Extensions.HTTP.RoutePrefix, "/")
}

var hubNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]{2,44}$`)

// HubName returns the durable task hub name, "TestHubName" by default (the
// name Durable Functions uses when no site name is set).
func (h *HostJSON) HubName() string {
	if h.Extensions.DurableTask.HubName == "" {
		return "TestHubName"
	}
	return h.Extensions.DurableTask.HubName
}

// Validate checks the values the host relies on.
func (h *HostJSON) Validate() error {
	var errs []error
	if h.Version != "2.0" {
		errs = append(errs, &FieldError{Field: "version", Msg: fmt.Sprintf("must be \"2.0\", got %q", h.Version)})
	}
	if t := h.FunctionTimeout; t != nil && *t >= 0 && *t < TimeSpan(time.Second) {
		errs = append(errs, &FieldError{Field: "functionTimeout", Msg: "must be at least 00:00:01, or -1 for unbounded"})
	}
	for cat, lvl := range h.Logging.LogLevel {
		if _, err := ParseLevel(lvl); err != nil {
			errs = append(errs, &FieldError{Field: "logging.logLevel." + cat, Msg: err.Error()})
		}
	}
	q := h.Extensions.Queues
	if q.BatchSize != 0 && (q.BatchSize < 1 || q.BatchSize > 32) {
		errs = append(errs, &FieldError{Field: "extensions.queues.batchSize", Msg: "must be 1-32"})
	}
	if q.MaxDequeueCount < 0 {
		errs = append(errs, &FieldError{Field: "extensions.queues.maxDequeueCount", Msg: "must be at least 1"})
	}
	if p := q.MaxPollingInterval; p != nil && *p < TimeSpan(100*time.Millisecond) {
		errs = append(errs, &FieldError{Field: "extensions.queues.maxPollingInterval", Msg: "must be at least 00:00:00.1"})
	}
	switch strings.ToLower(q.MessageEncoding) {
	case "", "base64", "none":
	default:
		errs = append(errs, &FieldError{Field: "extensions.queues.messageEncoding", Msg: fmt.Sprintf("%q is not base64 or none", q.MessageEncoding)})
	}
	if n := h.Extensions.DurableTask.HubName; n != "" && !hubNameRE.MatchString(n) {
		errs = append(errs, &FieldError{Field: "extensions.durableTask.hubName", Msg: fmt.Sprintf("%q must be 3-45 letters and digits, starting with a letter", n)})
	}
	if pc := h.Extensions.DurableTask.StorageProvider.PartitionCount; pc != 0 && (pc < 1 || pc > 16) {
		errs = append(errs, &FieldError{Field: "extensions.durableTask.storageProvider.partitionCount", Msg: "must be 1-16"})
	}
	if h.Extensions.DurableTask.MaxEntityOperationBatchSize < 0 {
		errs = append(errs, &FieldError{Field: "extensions.durableTask.maxEntityOperationBatchSize", Msg: "must not be negative"})
	}
	if h.Retry != nil {
		if err := h.Retry.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
