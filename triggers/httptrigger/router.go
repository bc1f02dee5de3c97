package httptrigger

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/triggers"
)

// Router serves every HTTP-triggered function under the route prefix.
type Router struct {
	prefix string
	keys   *Keys
	log    *slog.Logger

	mu      sync.RWMutex
	routes  []*route
	deliver triggers.Deliver
}

// SetDeliver sets the pipeline that runs invocations. The host calls it once
// before serving, so that routes answer as soon as the server listens.
func (rt *Router) SetDeliver(d triggers.Deliver) {
	rt.mu.Lock()
	rt.deliver = d
	rt.mu.Unlock()
}

type route struct {
	fn      *registry.Function
	trigger Trigger
	tmpl    *Route
}

func (r *route) allows(method string) bool {
	return len(r.trigger.Methods) == 0 || slices.Contains(r.trigger.Methods, method)
}

// NewRouter returns a router for routes under /{prefix}/.
func NewRouter(prefix string, keys *Keys, log *slog.Logger) *Router {
	if log == nil {
		log = slog.Default()
	}
	return &Router{prefix: strings.Trim(prefix, "/"), keys: keys, log: log}
}

// Prefix returns the route prefix without slashes ("api").
func (rt *Router) Prefix() string { return rt.prefix }

// Routes returns each function's route template (with the prefix) and methods.
func (rt *Router) Routes() map[string]string {
	rt.mu.RLock()
	defer rt.mu.RUnlock()
	out := map[string]string{}
	for _, r := range rt.routes {
		out[r.fn.Name] = rt.join(r.tmpl.String())
	}
	return out
}

func (rt *Router) join(t string) string {
	if rt.prefix == "" {
		return "/" + t
	}
	return "/" + rt.prefix + "/" + t
}

func (rt *Router) add(fn *registry.Function, t Trigger) (*route, error) {
	tmpl, err := ParseRoute(t.Route)
	if err != nil {
		return nil, fmt.Errorf("function %s: %w", fn.Name, err)
	}
	if rt.prefix == "" {
		first := strings.ToLower(strings.SplitN(tmpl.String(), "/", 2)[0])
		if first == "admin" || first == "runtime" {
			return nil, fmt.Errorf("function %s: route %q must not start with admin or runtime", fn.Name, t.Route)
		}
	}
	nr := &route{fn: fn, trigger: t, tmpl: tmpl}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for _, r := range rt.routes {
		if !strings.EqualFold(r.tmpl.String(), tmpl.String()) {
			continue
		}
		if len(r.trigger.Methods) == 0 || len(t.Methods) == 0 || slices.ContainsFunc(t.Methods, r.allows) {
			return nil, fmt.Errorf("function %s: route %q with methods %v conflicts with function %s", fn.Name, t.Route, t.Methods, r.fn.Name)
		}
	}
	rt.routes = append(rt.routes, nr)
	slices.SortStableFunc(rt.routes, func(a, b *route) int { return slices.Compare(a.tmpl.precedence(), b.tmpl.precedence()) })
	return nr, nil
}

// Match finds the function for a path below the prefix. allowed lists the
// methods of routes that match the path but not the method.
func (rt *Router) match(method, path string) (r *route, vals map[string]string, allowed []string) {
	rt.mu.RLock()
	defer rt.mu.RUnlock()
	for _, cand := range rt.routes {
		v, ok := cand.tmpl.Match(path)
		if !ok {
			continue
		}
		if cand.allows(method) {
			return cand, v, nil
		}
		allowed = append(allowed, cand.trigger.Methods...)
	}
	return nil, nil, allowed
}

// ServeHTTP serves /{prefix}/... requests.
func (rt *Router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	path := req.URL.EscapedPath()
	if rt.prefix != "" {
		p := "/" + rt.prefix
		if !strings.EqualFold(path, p) && !strings.HasPrefix(strings.ToLower(path), strings.ToLower(p)+"/") {
			writeError(w, http.StatusNotFound, "", "no function matches "+req.URL.Path)
			return
		}
		path = path[len(p):]
	}
	segs := strings.Split(strings.Trim(path, "/"), "/")
	for i, s := range segs {
		if u, err := unescape(s); err == nil {
			segs[i] = u
		}
	}
	r, vals, allowed := rt.match(req.Method, strings.Join(segs, "/"))
	if r == nil {
		if len(allowed) > 0 {
			slices.Sort(allowed)
			w.Header().Set("Allow", strings.Join(slices.Compact(allowed), ", "))
			writeError(w, http.StatusMethodNotAllowed, "", fmt.Sprintf("method %s is not allowed here", req.Method))
			return
		}
		writeError(w, http.StatusNotFound, "", "no function matches "+req.URL.Path)
		return
	}
	if !rt.keys.Authorize(r.trigger.AuthLevel, r.fn.Name, RequestKey(req)) {
		writeError(w, http.StatusUnauthorized, "", fmt.Sprintf("function %s requires a %s key (x-functions-key header or code query parameter)", r.fn.Name, r.trigger.AuthLevel))
		return
	}
	rt.mu.RLock()
	deliver := rt.deliver
	rt.mu.RUnlock()
	if deliver == nil {
		writeError(w, http.StatusServiceUnavailable, "", "function "+r.fn.Name+" is not listening")
		return
	}
	body, err := readBody(req)
	if err != nil {
		status := http.StatusBadRequest
		if errors.Is(err, errBodyTooLarge) {
			status = http.StatusRequestEntityTooLarge
		}
		writeError(w, status, "", err.Error())
		return
	}
	q := req.URL.Query()
	hreq := &Request{Method: req.Method, URL: req.URL, Header: req.Header, Query: q, Params: vals, Body: body, Raw: req}
	inv := &registry.Invocation{Function: r.fn, Trigger: hreq, Data: bindingData(hreq)}
	out, err := deliver(req.Context(), inv)
	if err != nil {
		writeError(w, http.StatusInternalServerError, inv.ID, "function "+r.fn.Name+" failed; see the host log for invocation "+inv.ID)
		return
	}
	writeResponse(w, out)
}

// bindingData is the HTTP trigger's binding data: JSON body properties,
// query parameters (except code), route values, Query and Headers.
func bindingData(r *Request) map[string]any {
	d := map[string]any{}
	var body map[string]any
	if len(r.Body) > 0 && json.Unmarshal(r.Body, &body) == nil {
		for k, v := range body {
			d[k] = v
		}
	}
	query := map[string]any{}
	for k, v := range r.Query {
		if strings.EqualFold(k, "code") || len(v) == 0 {
			continue
		}
		d[k] = v[0]
		query[k] = v[0]
	}
	for k, v := range r.Params {
		d[k] = v
	}
	headers := map[string]any{}
	for k, v := range r.Header {
		headers[k] = strings.Join(v, ",")
	}
	d["Query"] = query
	d["Headers"] = headers
	return d
}

func writeResponse(w http.ResponseWriter, out any) {
	switch res := out.(type) {
	case *Response:
		if res == nil {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		for k, v := range res.Header {
			w.Header()[k] = v
		}
		status := res.Status
		if status == 0 {
			status = http.StatusOK
		}
		w.WriteHeader(status)
		_, _ = w.Write(res.Body)
	case nil:
		w.WriteHeader(http.StatusNoContent)
	default:
		b, err := json.Marshal(res)
		if err != nil {
			writeError(w, http.StatusInternalServerError, "", "encode response: "+err.Error())
			return
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_, _ = w.Write(b)
	}
}

// ErrorBody is the JSON body of errors the host itself answers with.
type ErrorBody struct {
	Error        string `json:"error"`
	InvocationID string `json:"invocationId,omitempty"`
}

func writeError(w http.ResponseWriter, status int, invocationID, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if invocationID != "" {
		w.Header().Set("X-Invocation-Id", invocationID)
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(ErrorBody{Error: msg, InvocationID: invocationID})
}

// WriteError writes a JSON error body; other host endpoints use it so that
// all errors look alike.
func WriteError(w http.ResponseWriter, status int, msg string) { writeError(w, status, "", msg) }

func unescape(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	return urlPathUnescape(s)
}
