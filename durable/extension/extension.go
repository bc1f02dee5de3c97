// Package extension is the durable task extension of the Stratus host: it
// connects the functions registered with durable.RegisterOrchestrator,
// durable.RegisterActivity and durable.RegisterEntity to a task hub on Azure Storage, runs the durable
// worker alongside the host's other listeners, serves the Durable Functions
// HTTP management API under /runtime/webhooks/durabletask, and offers the
// durable client to durableClient bindings.
//
// Activities run through the host's invocation pipeline, so they get
// invocation ids, log fields, functionTimeout and panic recovery like every
// other function. Orchestrators and entities run inside the durable worker
// only; the management API's entity routes signal, read and list entities.
package extension

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/bindings/azstorage"
	"github.com/stratus-dev/stratus/durable"
	"github.com/stratus-dev/stratus/durable/azurestorage"
	"github.com/stratus-dev/stratus/durable/httpapi"
	"github.com/stratus-dev/stratus/host/app"
	"github.com/stratus-dev/stratus/host/config"
	"github.com/stratus-dev/stratus/host/pipeline"
	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/triggers"
	"github.com/stratus-dev/stratus/triggers/httptrigger"
)

// SystemKeyName is the extension's system key name: the key in the app
// setting FUNCTIONS_SYSTEM_KEY_durabletask_extension (or the master key)
// opens the management API.
const SystemKeyName = "durabletask_extension"

// Extension is the durable task extension. Create it with New and pass it
// in app.Options.Extensions.
type Extension struct {
	host    *app.Host
	log     *slog.Logger
	backend *azurestorage.Backend
	client  *durable.Client
	api     *httpapi.API
	ready   chan struct{} // closed once the task hub has started
	initErr error         // why the task hub could not be opened
	// StopTimeout bounds how long in-flight orchestrations and activities may
	// finish at shutdown (default 20 s).
	StopTimeout time.Duration
}

var (
	_ app.Extension          = (*Extension)(nil)
	_ durable.ClientProvider = (*Extension)(nil)
)

// New returns the extension.
func New() *Extension { return &Extension{StopTimeout: 20 * time.Second} }

// ConnectionName is the storage connection the task hub uses: host.json's
// storageProvider.connectionName (or connectionStringName); "" means
// AzureWebJobsStorage.
func ConnectionName(h *config.HostJSON) string {
	sp := h.Extensions.DurableTask.StorageProvider
	if sp.ConnectionName != "" {
		return sp.ConnectionName
	}
	if sp.ConnectionStringName != "" {
		return sp.ConnectionStringName
	}
	return ""
}

// OpenBackend builds (without starting) the task hub backend configured by
// host.json over clients.
func OpenBackend(clients *azstorage.Clients, h *config.HostJSON, log *slog.Logger) (*azurestorage.Backend, error) {
	opts := azurestorage.OptionsFromHost(h)
	opts.Logger = log
	b, err := azurestorage.New(clients, opts)
	if err != nil {
		return nil, fmt.Errorf("durable task hub: %w", err)
	}
	return b, nil
}

// Init opens the task hub, registers the durable trigger types, mounts the
// management API and offers the client to durableClient bindings.
func (e *Extension) Init(h *app.Host) error {
	e.host = h
	e.log = h.Logger.With("component", "durable")
	hj := &h.Config.Host
	conn := ConnectionName(hj)
	// The durable trigger types are registered even when the task hub cannot
	// be opened: then every durable function reports the problem, so that the
	// host's start-up message lists it with the other functions' problems.
	for _, t := range []string{durable.OrchestrationTriggerType, durable.ActivityTriggerType, durable.EntityTriggerType} {
		h.Triggers.Register(t, func(_ *bindings.Env, _ *registry.Function) (triggers.Listener, error) {
			if e.initErr != nil {
				return nil, e.initErr
			}
			// The worker, not a listener, delivers durable invocations; the
			// listener only keeps the function's place in the host's lifecycle.
			return idleListener{}, nil
		})
	}
	h.Env.Services[durable.ClientService] = e
	clients, err := h.Env.Storage(conn)
	if err != nil {
		e.initErr = fmt.Errorf("durable task extension: %w", err)
		return nil
	}
	if e.backend, err = OpenBackend(clients, hj, h.Logger); err != nil {
		return err
	}
	e.ready = make(chan struct{})
	e.client = durable.NewClient(&gatedClient{b: e.backend, ready: e.ready})
	connName := conn
	if connName == "" {
		connName = "Storage"
	}
	e.api = &httpapi.API{
		Client:     NewAPIClient(e.client, h.Registry),
		HubName:    e.backend.HubName(),
		Connection: connName,
		Logger:     e.log,
	}
	e.api.Entities = NewEntityClient(e.client)
	if !h.Keys.Disabled {
		e.api.Key = ManagementKey(h.Config.Settings.Get(httptrigger.SystemKeySettingPrefix+SystemKeyName), h.Keys.Master())
		keys, key := h.Keys, e.api.Key
		e.api.Authorize = func(r *http.Request) bool {
			k := httptrigger.RequestKey(r)
			return keys.IsSystem(k, SystemKeyName) || subtle.ConstantTimeCompare([]byte(k), []byte(key)) == 1
		}
	}
	e.api.Register(h.Mux)
	return nil
}

// Client returns the durable client (nil before Init).
func (e *Extension) Client() *durable.Client { return e.client }

// Backend returns the task hub backend (nil before Init).
func (e *Extension) Backend() *azurestorage.Backend { return e.backend }

// BindError reports why durableClient bindings cannot be bound.
func (e *Extension) BindError() error { return e.initErr }

// DurableClient implements durable.ClientProvider.
func (e *Extension) DurableClient() *durable.Client { return e.client }

// CheckStatus implements durable.ClientProvider.
func (e *Extension) CheckStatus(baseURL, instanceID string) (any, string) {
	p := e.api.Payload(baseURL+httpapi.BasePath, instanceID)
	return p, p.StatusQueryGetURI
}

// BindingData implements durable.ClientProvider.
func (e *Extension) BindingData(baseURL string) any {
	return e.api.ClientBindingData(baseURL + httpapi.BasePath)
}

// Run starts the task hub and the durable worker and blocks until ctx is
// done; then it lets in-flight work finish (bounded by StopTimeout) and
// releases the hub's partitions.
func (e *Extension) Run(ctx context.Context) error {
	if e.backend == nil {
		// No task hub (and no durable function needs one).
		<-ctx.Done()
		return nil
	}
	if err := e.backend.Start(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("start task hub: %w", err)
	}
	close(e.ready)
	hj := &e.host.Config.Host
	w := durable.NewWorker(e.backend, durable.WorkerOptions{
		Orchestrators:               e.orchestrator,
		Activities:                  e.activity,
		Entities:                    e.entity,
		InvokeActivity:              e.invokeActivity,
		MaxConcurrentActivities:     hj.Extensions.DurableTask.MaxConcurrentActivityFunctions,
		MaxConcurrentOrchestrations: hj.Extensions.DurableTask.MaxConcurrentOrchestratorFuncs,
		MaxEntityOperationBatchSize: hj.Extensions.DurableTask.MaxEntityOperationBatchSize,
		Logger:                      e.log,
	})
	werr := w.Run(ctx)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.StopTimeout)
	defer cancel()
	serr := e.backend.Stop(sctx)
	if werr != nil && !errors.Is(werr, context.Canceled) {
		return fmt.Errorf("durable worker: %w", werr)
	}
	return serr
}

func (e *Extension) lookup(name, triggerType string) (*registry.Function, bool) {
	fn, ok := e.host.Registry.Lookup(name)
	if !ok || fn.Trigger.Type != triggerType || !e.host.Listening(fn.Name) {
		return nil, false
	}
	return fn, true
}

func (e *Extension) orchestrator(name string) (durable.Orchestrator, bool) {
	fn, ok := e.lookup(name, durable.OrchestrationTriggerType)
	if !ok {
		return nil, false
	}
	return durable.OrchestratorOf(fn)
}

func (e *Extension) entity(name string) (durable.EntityFunc, bool) {
	fn, ok := e.lookup(name, durable.EntityTriggerType)
	if !ok {
		return nil, false
	}
	return durable.EntityOf(fn)
}

func (e *Extension) activity(name string) (durable.ActivityFunc, bool) {
	fn, ok := e.lookup(name, durable.ActivityTriggerType)
	if !ok {
		return nil, false
	}
	return durable.ActivityOf(fn)
}

// invokeActivity runs one activity call through the host pipeline.
func (e *Extension) invokeActivity(ctx context.Context, info durable.ActivityInfo, run func(context.Context) (any, error)) (any, error) {
	fn, ok := e.lookup(info.Name, durable.ActivityTriggerType)
	if !ok {
		return nil, fmt.Errorf("no activity function named %q is registered", info.Name)
	}
	inv := &registry.Invocation{
		Function: fn,
		Trigger:  &durable.ActivityCall{Info: info, Run: run},
		Data: map[string]any{
			"instanceId": info.InstanceID,
			"sys":        map[string]any{"MethodName": fn.Name},
		},
	}
	out, err := e.host.Pipeline.Deliver(ctx, inv)
	if errors.Is(err, pipeline.ErrShuttingDown) {
		// Not the activity's failure: the call is abandoned and redelivered.
		return nil, fmt.Errorf("%w: %w", context.Canceled, err)
	}
	return out, err
}

// idleListener waits for shutdown: durable functions are fed by the worker.
type idleListener struct{}

func (idleListener) Listen(ctx context.Context, _ triggers.Deliver) error {
	<-ctx.Done()
	return nil
}
