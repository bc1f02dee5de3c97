// Package app assembles a Stratus host from its parts: configuration, the
// function registry, trigger plugins, extensions (such as the durable task
// extension), the invocation pipeline and the HTTP server with the admin
// endpoints. host/main.go is a thin wrapper around it, and tests build hosts
// in-process with it.
package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/bindings/azstorage"
	"github.com/stratus-dev/stratus/host/config"
	"github.com/stratus-dev/stratus/host/pipeline"
	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/triggers"
	"github.com/stratus-dev/stratus/triggers/httptrigger"
)

// Version is the host version reported by /admin/host/status.
const Version = "0.1.0"

// Extension plugs a subsystem into the host (the durable task extension is
// one): it registers trigger types, may serve HTTP routes, and runs alongside
// the listeners.
type Extension interface {
	// Init is called once, before listeners are built.
	Init(h *Host) error
	// Run blocks until ctx is done, then shuts the extension down.
	Run(ctx context.Context) error
}

// Options configure a host.
type Options struct {
	// Config is the loaded configuration.
	Config *config.Config
	// Addr is the listen address ("127.0.0.1:7071").
	Addr string
	// NoAuth turns off key checks (local development).
	NoAuth bool
	// Logger is the host logger.
	Logger *slog.Logger
	// Register registers the app's functions.
	Register func(*registry.Registry) error
	// Triggers registers extra trigger plugins (HTTP is always present).
	Triggers []func(*triggers.Registry)
	// Extensions are started with the host.
	Extensions []Extension
	// ShutdownTimeout bounds how long in-flight invocations may finish (default 30 s).
	ShutdownTimeout time.Duration
}

// Host is an assembled, not yet running host.
type Host struct {
	// Config is the host's configuration.
	Config *config.Config
	// Logger is the host logger.
	Logger *slog.Logger
	// Registry holds the functions.
	Registry *registry.Registry
	// Triggers maps binding types to plugins.
	Triggers *triggers.Registry
	// Env is handed to triggers and bindings.
	Env *bindings.Env
	// Pipeline runs invocations.
	Pipeline *pipeline.Pipeline
	// Keys checks HTTP keys.
	Keys *httptrigger.Keys
	// Router serves HTTP-triggered functions.
	Router *httptrigger.Router
	// Mux is the HTTP server's mux; extensions add routes in Init.
	Mux *http.ServeMux

	opts      Options
	runCtx    context.Context
	listeners map[string]triggers.Listener
	started   time.Time
	state     string
	stateMu   sync.Mutex

	storageMu sync.Mutex
	storage   map[string]*azstorage.Clients
}

// New assembles a host: it registers functions, builds every listener and
// binds every binding, so that configuration errors surface here, before
// anything listens.
func New(opts Options) (*Host, error) {
	cfg := opts.Config
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = 30 * time.Second
	}
	h := &Host{
		Config:    cfg,
		Logger:    opts.Logger,
		Registry:  registry.New(),
		Triggers:  triggers.NewRegistry(),
		Mux:       http.NewServeMux(),
		opts:      opts,
		listeners: map[string]triggers.Listener{},
		storage:   map[string]*azstorage.Clients{},
		state:     "Initialized",
	}
	h.Env = &bindings.Env{Settings: cfg.Settings, Logger: opts.Logger, HostID: HostID(cfg), Storage: h.openStorage, Host: &cfg.Host, Services: map[string]any{}}
	h.Pipeline = &pipeline.Pipeline{Logger: opts.Logger, Timeout: cfg.Host.Timeout(), Retry: cfg.Host.Retry, RetryTriggers: pipeline.DefaultRetryTriggers}
	h.Keys = httptrigger.LoadKeys(cfg.Settings, opts.NoAuth)
	h.Router = httptrigger.NewRouter(cfg.Host.RoutePrefix(), h.Keys, opts.Logger)
	h.Router.SetDeliver(h.Pipeline.Deliver)
	httptrigger.Register(h.Triggers, h.Router)
	for _, reg := range opts.Triggers {
		reg(h.Triggers)
	}
	for _, ext := range opts.Extensions {
		if err := ext.Init(h); err != nil {
			return nil, err
		}
	}
	if opts.Register != nil {
		if err := opts.Register(h.Registry); err != nil {
			return nil, fmt.Errorf("register functions: %w", err)
		}
	}
	var problems startupProblems
	for _, fn := range h.Registry.Functions() {
		if !h.enabled(fn) {
			h.Logger.Info("function disabled", "function", fn.Name)
			continue
		}
		for _, b := range fn.Bindings {
			if binder, ok := b.(bindings.Binder); ok {
				if err := binder.Bind(h.Env); err != nil {
					problems.add(fn.Name, fmt.Errorf("function %s: binding %s: %w", fn.Name, b.Metadata().Name, err))
				}
			}
		}
		factory, err := h.Triggers.Lookup(fn.Trigger.Type)
		if err != nil {
			problems.add(fn.Name, fmt.Errorf("function %s: %w", fn.Name, err))
			continue
		}
		l, err := factory(h.Env, fn)
		if err != nil {
			problems.add(fn.Name, fmt.Errorf("function %s: %w", fn.Name, err))
			continue
		}
		h.listeners[fn.Name] = l
	}
	if err := problems.err(); err != nil {
		return nil, err
	}
	h.routes()
	return h, nil
}

// startupProblems collects the configuration errors of every function, so
// that one start-up reports them all. A setting that several functions
// reference but that is not set is reported once, with the functions.
type startupProblems struct {
	errs    []error
	missing map[string]*missingSetting
}

type missingSetting struct {
	first     error
	functions []string
}

func (p *startupProblems) add(function string, err error) {
	var miss *config.MissingSettingError
	if !errors.As(err, &miss) {
		p.errs = append(p.errs, err)
		return
	}
	if p.missing == nil {
		p.missing = map[string]*missingSetting{}
	}
	m, ok := p.missing[miss.Name]
	if !ok {
		m = &missingSetting{first: err}
		p.missing[miss.Name] = m
		p.errs = append(p.errs, err) // placeholder, rewritten in err
	}
	if !slices.Contains(m.functions, function) {
		m.functions = append(m.functions, function)
	}
}

func (p *startupProblems) err() error {
	out := make([]error, 0, len(p.errs))
	for _, err := range p.errs {
		var miss *config.MissingSettingError
		if errors.As(err, &miss) {
			if m := p.missing[miss.Name]; len(m.functions) > 1 && m.first == err {
				out = append(out, fmt.Errorf("%w (referenced by functions %s)", miss, strings.Join(m.functions, ", ")))
				continue
			}
		}
		out = append(out, err)
	}
	return errors.Join(out...)
}

func (h *Host) enabled(fn *registry.Function) bool {
	if fn.Disabled || h.Config.Settings.Bool("AzureWebJobs."+fn.Name+".Disabled") {
		return false
	}
	if allow := h.Config.Host.Functions; len(allow) > 0 {
		for _, a := range allow {
			if strings.EqualFold(a, fn.Name) {
				return true
			}
		}
		return false
	}
	return true
}

// openStorage returns the cached clients for a connection name.
func (h *Host) openStorage(connection string) (*azstorage.Clients, error) {
	cs, err := h.Config.Settings.Connection(connection)
	if err != nil {
		return nil, err
	}
	h.storageMu.Lock()
	defer h.storageMu.Unlock()
	if c, ok := h.storage[cs]; ok {
		return c, nil
	}
	c, err := azstorage.Open(cs)
	if err != nil {
		name := connection
		if name == "" {
			name = "AzureWebJobsStorage"
		}
		return nil, fmt.Errorf("connection %s: %w", name, err)
	}
	h.storage[cs] = c
	return c, nil
}

// Listening reports whether fn has a listener (it is enabled).
func (h *Host) Listening(name string) bool {
	fn, ok := h.Registry.Lookup(name)
	if !ok {
		return false
	}
	_, ok = h.listeners[fn.Name]
	return ok
}

// Run serves until ctx is done, then shuts down gracefully: the HTTP server
// stops accepting and the listeners stop taking new work at once, while
// in-flight invocations (HTTP requests included) keep a live context and get
// up to ShutdownTimeout to finish. Then their contexts are cancelled, and Run
// waits at most a short grace period more (ShutdownTimeout, at most 5 s) for
// handlers that ignore cancellation before it returns an error, so that a
// stuck handler cannot keep the process from exiting.
func (h *Host) Run(ctx context.Context, ln net.Listener) error {
	h.started = time.Now()
	srv := &http.Server{Handler: h.Handler(), ReadHeaderTimeout: 30 * time.Second}
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	h.stateMu.Lock()
	h.runCtx = runCtx
	h.stateMu.Unlock()

	// drainCtx ends when in-flight invocations must give up.
	drainCtx, hardStop := context.WithCancel(context.WithoutCancel(ctx))
	defer hardStop()
	deliver := func(lctx context.Context, inv *registry.Invocation) (any, error) {
		ictx, icancel := context.WithCancel(context.WithoutCancel(lctx))
		defer icancel()
		defer context.AfterFunc(drainCtx, icancel)()
		return h.Pipeline.Deliver(ictx, inv)
	}

	var wg sync.WaitGroup
	var errMu sync.Mutex
	var errs []error
	fail := func(err error) {
		errMu.Lock()
		errs = append(errs, err)
		errMu.Unlock()
		cancel(err)
	}
	for _, ext := range h.opts.Extensions {
		wg.Go(func() {
			if err := ext.Run(runCtx); err != nil {
				fail(fmt.Errorf("extension: %w", err))
			}
		})
	}
	for name, l := range h.listeners {
		wg.Go(func() {
			if err := l.Listen(runCtx, deliver); err != nil && runCtx.Err() == nil {
				fail(fmt.Errorf("function %s: listener stopped: %w", name, err))
			}
		})
	}
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fail(fmt.Errorf("http server: %w", err))
		}
	})
	h.setState("Running")
	h.Logger.Info("host started", "addr", ln.Addr().String(), "functions", len(h.listeners), "host_id", h.Env.HostID, "version", Version)
	for _, fn := range h.Registry.ByTrigger(httptrigger.TypeName) {
		if r, ok := h.Router.Routes()[fn.Name]; ok {
			h.Logger.Info("http function", "function", fn.Name, "url", "http://"+ln.Addr().String()+r)
		}
	}
	<-runCtx.Done()
	h.setState("Stopping")
	h.Logger.Info("host stopping", "shutdown_timeout", h.opts.ShutdownTimeout)
	sctx, scancel := context.WithTimeout(context.Background(), h.opts.ShutdownTimeout)
	defer scancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close() // cancels the requests still running
	}
	if err := h.Pipeline.Close(sctx); err != nil {
		h.Logger.Warn("in-flight invocations did not finish within the shutdown timeout; cancelling them", "error", err)
	}
	hardStop()
	stopped := make(chan struct{})
	go func() { wg.Wait(); close(stopped) }()
	grace := min(h.opts.ShutdownTimeout, 5*time.Second)
	select {
	case <-stopped:
	case <-time.After(grace):
		fail(fmt.Errorf("shutdown: invocations still running %s after they were cancelled; exiting without them", grace))
	}
	h.setState("Stopped")
	h.Logger.Info("host stopped")
	errMu.Lock()
	defer errMu.Unlock()
	return errors.Join(errs...)
}

func (h *Host) setState(s string) {
	h.stateMu.Lock()
	h.state = s
	h.stateMu.Unlock()
}

// State returns Initialized, Running, Stopping or Stopped.
func (h *Host) State() string {
	h.stateMu.Lock()
	defer h.stateMu.Unlock()
	return h.state
}

// HostID returns the host id that scopes locks, receipts and timer status:
// the setting AzureFunctionsWebHost__hostid, else WEBSITE_SITE_NAME, else
// "<machine>-<hash of the script root>", lower-cased, at most 32 characters.
func HostID(cfg *config.Config) string {
	id := cfg.Settings.Get("AzureFunctionsWebHost__hostid")
	if id == "" {
		id = cfg.Settings.Get("WEBSITE_SITE_NAME")
	}
	if id == "" {
		machine, _ := os.Hostname()
		sum := sha256.Sum256([]byte(strings.ToLower(cfg.Root)))
		id = sanitizeID(machine)
		if len(id) > 21 {
			id = id[:21]
		}
		id = strings.Trim(id, "-") + "-" + hex.EncodeToString(sum[:5])
	}
	id = sanitizeID(id)
	if len(id) > 32 {
		id = strings.TrimRight(id[:32], "-")
	}
	return id
}

func sanitizeID(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	return b.String()
}

// ListenAddr picks the listen address from the port flag and settings.
func ListenAddr(bind string, port int, cfg *config.Config) string {
	if port == 0 {
		port = cfg.Local.Host.LocalHTTPPort
	}
	if port == 0 {
		port = 7071
	}
	return net.JoinHostPort(bind, strconv.Itoa(port))
}
