package app

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/triggers"
	"github.com/stratus-dev/stratus/triggers/httptrigger"
)

func (h *Host) routes() {
	prefix := h.Router.Prefix()
	if prefix == "" {
		h.Mux.Handle("/", h.Router)
	} else {
		h.Mux.Handle("/"+prefix+"/", h.Router)
		h.Mux.Handle("/"+prefix, h.Router)
		h.Mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = w.Write([]byte("Stratus function host is running.\n"))
		})
	}
	h.Mux.Handle("GET /admin/host/status", h.admin(h.hostStatus))
	h.Mux.Handle("GET /admin/functions", h.admin(h.listFunctions))
	h.Mux.Handle("GET /admin/functions/{name}", h.admin(h.getFunction))
	h.Mux.Handle("POST /admin/functions/{name}", h.admin(h.invokeFunction))
}

// Handler returns the host's HTTP handler: the mux with CORS and the custom
// response headers of host.json applied.
func (h *Host) Handler() http.Handler {
	origins := parseOrigins(h.Config.Local.Host.CORS)
	creds := h.Config.Local.Host.CORSCredentials
	custom := h.Config.Host.Extensions.HTTP.CustomHeaders
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for k, v := range custom {
			w.Header().Set(k, v)
		}
		if origin := r.Header.Get("Origin"); origin != "" && len(origins) > 0 {
			if allowed(origins, origin) {
				if origins[0] == "*" && !creds {
					w.Header().Set("Access-Control-Allow-Origin", "*")
				} else {
					w.Header().Set("Access-Control-Allow-Origin", origin)
					w.Header().Add("Vary", "Origin")
				}
				if creds {
					w.Header().Set("Access-Control-Allow-Credentials", "true")
				}
				if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
					w.Header().Set("Access-Control-Allow-Methods", r.Header.Get("Access-Control-Request-Method"))
					if hdrs := r.Header.Get("Access-Control-Request-Headers"); hdrs != "" {
						w.Header().Set("Access-Control-Allow-Headers", hdrs)
					}
					w.Header().Set("Access-Control-Max-Age", "86400")
					w.WriteHeader(http.StatusNoContent)
					return
				}
			}
		}
		h.Mux.ServeHTTP(w, r)
	})
}

func parseOrigins(s string) []string {
	var out []string
	for _, o := range strings.Split(s, ",") {
		if o = strings.TrimRight(strings.TrimSpace(o), "/"); o != "" {
			out = append(out, o)
		}
	}
	for _, o := range out {
		if o == "*" {
			return []string{"*"}
		}
	}
	return out
}

func allowed(origins []string, origin string) bool {
	for _, o := range origins {
		if o == "*" || strings.EqualFold(o, strings.TrimRight(origin, "/")) {
			return true
		}
	}
	return false
}

// admin wraps admin endpoints: they need the master key unless auth is off.
func (h *Host) admin(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !h.Keys.Disabled && !h.Keys.IsMaster(httptrigger.RequestKey(r)) {
			httptrigger.WriteError(w, http.StatusUnauthorized, "admin endpoints require the master key (x-functions-key header or code query parameter)")
			return
		}
		next(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// HostStatus is the body of GET /admin/host/status.
type HostStatus struct {
	ID             string `json:"id"`
	State          string `json:"state"`
	Version        string `json:"version"`
	FunctionsCount int    `json:"functionsCount"`
	ProcessUptime  int64  `json:"processUptime"`
}

func (h *Host) hostStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, HostStatus{
		ID: h.Env.HostID, State: h.State(), Version: Version,
		FunctionsCount: len(h.Registry.Functions()),
		ProcessUptime:  time.Since(h.started).Milliseconds(),
	})
}

// FunctionInfo is one entry of GET /admin/functions.
type FunctionInfo struct {
	Name              string `json:"name"`
	TriggerType       string `json:"triggerType"`
	Route             string `json:"route,omitempty"`
	InvokeURLTemplate string `json:"invoke_url_template,omitempty"`
	IsDisabled        bool   `json:"isDisabled"`
	Config            struct {
		Bindings any `json:"bindings"`
	} `json:"config"`
}

func (h *Host) functionInfo(r *http.Request, fn *registry.Function) FunctionInfo {
	fi := FunctionInfo{Name: fn.Name, TriggerType: fn.Trigger.Type, IsDisabled: !h.Listening(fn.Name)}
	if route, ok := h.Router.Routes()[fn.Name]; ok {
		fi.Route = route
		fi.InvokeURLTemplate = "http://" + r.Host + route
	}
	fi.Config.Bindings = fn.Metadata()
	return fi
}

func (h *Host) listFunctions(w http.ResponseWriter, r *http.Request) {
	fns := h.Registry.Functions()
	out := make([]FunctionInfo, 0, len(fns))
	for _, fn := range fns {
		out = append(out, h.functionInfo(r, fn))
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Host) getFunction(w http.ResponseWriter, r *http.Request) {
	fn, ok := h.Registry.Lookup(r.PathValue("name"))
	if !ok {
		httptrigger.WriteError(w, http.StatusNotFound, "no function named "+r.PathValue("name"))
		return
	}
	writeJSON(w, http.StatusOK, h.functionInfo(r, fn))
}

// invokeFunction is the manual-run endpoint for non-HTTP functions: the
// invocation runs in the background and the call answers 202 at once.
func (h *Host) invokeFunction(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	fn, ok := h.Registry.Lookup(name)
	if !ok {
		httptrigger.WriteError(w, http.StatusNotFound, "no function named "+name)
		return
	}
	if fn.Trigger.Type == httptrigger.TypeName {
		httptrigger.WriteError(w, http.StatusBadRequest, "function "+fn.Name+" is HTTP-triggered; call its route instead")
		return
	}
	l, ok := h.listeners[fn.Name]
	if !ok {
		httptrigger.WriteError(w, http.StatusConflict, "function "+fn.Name+" is disabled")
		return
	}
	var body struct {
		Input *string `json:"input"`
	}
	if r.ContentLength != 0 {
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&body); err != nil {
			httptrigger.WriteError(w, http.StatusBadRequest, "body must be JSON like {\"input\": \"...\"}: "+err.Error())
			return
		}
	}
	input := ""
	if body.Input != nil {
		input = *body.Input
	}
	inv := &registry.Invocation{Function: fn, Trigger: input, Data: map[string]any{"input": input}}
	if m, ok := l.(triggers.ManualTrigger); ok {
		built, err := m.ManualInvocation(input)
		if err != nil {
			httptrigger.WriteError(w, http.StatusBadRequest, err.Error())
			return
		}
		built.Function = fn
		inv = built
	}
	// The invocation outlives the request but not the host.
	h.stateMu.Lock()
	ctx := h.runCtx
	h.stateMu.Unlock()
	if ctx == nil {
		ctx = context.WithoutCancel(r.Context())
	}
	go func() { _, _ = h.Pipeline.Deliver(ctx, inv) }()
	w.WriteHeader(http.StatusAccepted)
}
