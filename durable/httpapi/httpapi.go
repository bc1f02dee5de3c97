// Package httpapi owns the Durable Functions HTTP management API under
// /runtime/webhooks/durabletask: the same routes, query parameters, status
// codes and JSON as Durable Functions, so that its SDK clients, Durable
// Functions Monitor, scripts and curl work against Stratus unchanged. It also
// builds the check-status payload and the durableClient binding data.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
)

// BasePath is where the API is served.
const BasePath = "/runtime/webhooks/durabletask"

// Authorizer decides whether a request's key may use the API.
type Authorizer func(r *http.Request) bool

// API serves the management routes.
type API struct {
	// Client is the durable client.
	Client Client
	// Entities serves entity routes; nil answers 501.
	Entities EntityClient
	// HubName is the task hub's name (taskHub query parameter).
	HubName string
	// Connection is the connection name reported in URLs ("Storage").
	Connection string
	// Key is the key written into generated URLs (code=...).
	Key string
	// Authorize checks keys; nil allows every request.
	Authorize Authorizer
	// Logger logs failures.
	Logger *slog.Logger
}

// Register adds the API's routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	h := func(f http.HandlerFunc) http.Handler { return a.guard(f) }
	mux.Handle("POST "+BasePath+"/orchestrators/{functionName}", h(a.startNew))
	mux.Handle("POST "+BasePath+"/orchestrators/{functionName}/{instanceId}", h(a.startNew))
	mux.Handle("GET "+BasePath+"/instances/{instanceId}", h(a.getStatus))
	mux.Handle("GET "+BasePath+"/instances", h(a.list))
	mux.Handle("GET "+BasePath+"/instances/{$}", h(a.list))
	mux.Handle("DELETE "+BasePath+"/instances/{instanceId}", h(a.purgeOne))
	mux.Handle("DELETE "+BasePath+"/instances", h(a.purgeMany))
	mux.Handle("DELETE "+BasePath+"/instances/{$}", h(a.purgeMany))
	mux.Handle("POST "+BasePath+"/instances/{instanceId}/raiseEvent/{eventName}", h(a.raiseEvent))
	mux.Handle("POST "+BasePath+"/instances/{instanceId}/terminate", h(a.control("terminate")))
	mux.Handle("POST "+BasePath+"/instances/{instanceId}/suspend", h(a.control("suspend")))
	mux.Handle("POST "+BasePath+"/instances/{instanceId}/resume", h(a.control("resume")))
	mux.Handle("POST "+BasePath+"/instances/{instanceId}/rewind", h(a.control("rewind")))
	mux.Handle("POST "+BasePath+"/instances/{instanceId}/restart", h(a.restart))
	mux.Handle("GET "+BasePath+"/entities/{name}/{key}", h(a.readEntity))
	mux.Handle("POST "+BasePath+"/entities/{name}/{key}", h(a.signalEntity))
	mux.Handle("DELETE "+BasePath+"/entities/{name}/{key}", h(a.signalEntity))
	mux.Handle("GET "+BasePath+"/entities", h(a.listEntities))
	mux.Handle("GET "+BasePath+"/entities/{name}", h(a.listEntities))
	mux.Handle(BasePath+"/", h(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no durable management route matches "+r.Method+" "+r.URL.Path)
	}))
}

// maxPageSize bounds the page size a listing asks for with top.
const maxPageSize = 1000

func (a *API) guard(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.Authorize != nil && !a.Authorize(r) {
			writeError(w, http.StatusUnauthorized, "the durable management API requires the durabletask_extension system key or the master key (code query parameter or x-functions-key header)")
			return
		}
		// Durable Functions serves any task hub named by taskHub; this host
		// serves its own only, and says so rather than answer for another.
		if hub := r.URL.Query().Get("taskHub"); hub != "" && a.HubName != "" && !strings.EqualFold(hub, a.HubName) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("this host serves task hub %s, not %s", a.HubName, hub))
			return
		}
		next(w, r)
	})
}

// ErrorBody is the JSON body of an error answer.
type ErrorBody struct {
	Message string `json:"Message"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(ErrorBody{Message: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// fail maps client errors to status codes: not found 404, bad arguments 400,
// anything else 500 (logged).
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, backend.ErrInstanceNotFound):
		writeError(w, http.StatusNotFound, "no instance with id "+r.PathValue("instanceId"))
	case errors.Is(err, ErrUnknownOrchestrator), errors.Is(err, backend.ErrInstanceExists), errors.Is(err, ErrBadRequest), errors.Is(err, ErrNotFailed):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrInstanceFinished):
		writeError(w, http.StatusGone, err.Error())
	case errors.Is(err, context.Canceled):
		writeError(w, http.StatusServiceUnavailable, "request cancelled")
	default:
		if a.Logger != nil {
			a.Logger.Error("durable management API", "method", r.Method, "path", r.URL.Path, "error", err)
		}
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// Errors a Client may return (wrapped) besides backend.ErrInstanceNotFound,
// backend.ErrInstanceExists and ErrUnknownOrchestrator; the API answers them
// with Durable Functions' status codes.
var (
	// ErrBadRequest is a malformed request (400).
	ErrBadRequest = errors.New("bad request")
	// ErrInstanceFinished is an operation on an instance that has completed,
	// failed or been terminated (410).
	ErrInstanceFinished = errors.New("instance is no longer running")
	// ErrNotFailed is a rewind of an instance that is not Failed (400).
	ErrNotFailed = errors.New("only failed instances can be rewound")
)

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadRequest, fmt.Sprintf(format, args...))
}

// readJSONBody returns the body as compact JSON text, "" when empty.
func readJSONBody(r *http.Request) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	if err != nil {
		return "", badRequest("read body: %v", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", nil
	}
	if !json.Valid([]byte(s)) {
		return "", badRequest("the request body is not valid JSON")
	}
	return s, nil
}

func (a *API) startNew(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("functionName")
	id := r.PathValue("instanceId")
	if id != "" {
		if err := ValidateInstanceID(id); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	input, err := readJSONBody(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	timeout, poll, err := waitParams(r.URL.Query())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	id, err = a.Client.ScheduleNew(r.Context(), name, input, id, time.Time{})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.answerStarted(w, r, id, timeout, poll)
}

func waitParams(q url.Values) (timeout, poll time.Duration, err error) {
	ts, ps := q.Get("timeout"), q.Get("pollingInterval")
	if ts == "" {
		return 0, 0, nil
	}
	t, err := strconv.Atoi(ts)
	if err != nil || t < 0 {
		return 0, 0, badRequest("timeout must be a number of seconds")
	}
	p := 1
	if ps != "" {
		if p, err = strconv.Atoi(ps); err != nil || p <= 0 {
			return 0, 0, badRequest("pollingInterval must be a positive number of seconds")
		}
	}
	if p > t && t > 0 {
		return 0, 0, badRequest("pollingInterval must not exceed timeout")
	}
	return time.Duration(t) * time.Second, time.Duration(p) * time.Second, nil
}

// answerStarted answers 202 with the check-status payload, or, when the caller
// asked to wait (timeout), the output of a completed instance.
func (a *API) answerStarted(w http.ResponseWriter, r *http.Request, id string, timeout, poll time.Duration) {
	if timeout > 0 {
		deadline := time.Now().Add(timeout)
		for {
			st, err := a.Client.GetInstance(r.Context(), id, true)
			if err == nil && st.RuntimeStatus == history.StatusCompleted {
				w.Header().Set("Content-Type", "application/json; charset=utf-8")
				w.WriteHeader(http.StatusOK)
				_, _ = io.WriteString(w, jsonOrNull(st.Output))
				return
			}
			if err == nil && (st.RuntimeStatus == history.StatusFailed || st.RuntimeStatus == history.StatusTerminated || st.RuntimeStatus == history.StatusCanceled) {
				writeJSON(w, http.StatusOK, toStatus(st, nil, false))
				return
			}
			if time.Now().Add(poll).After(deadline) {
				break
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(poll):
			}
		}
	}
	p := a.Payload(BaseURL(r), id)
	w.Header().Set("Location", p.StatusQueryGetURI)
	w.Header().Set("Retry-After", "10")
	writeJSON(w, http.StatusAccepted, p)
}

func boolParam(q url.Values, name string, def bool) bool {
	v := q.Get(name)
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return def
	}
	return b
}

func (a *API) getStatus(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("instanceId")
	if err := validateLookupID(id); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	q := r.URL.Query()
	showHistory := boolParam(q, "showHistory", false)
	showHistoryOutput := boolParam(q, "showHistoryOutput", false)
	showInput := boolParam(q, "showInput", true)
	st, err := a.Client.GetInstance(r.Context(), id, showInput)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var hist []*history.Event
	if showHistory {
		if hist, err = a.Client.GetHistory(r.Context(), id); err != nil && !errors.Is(err, backend.ErrInstanceNotFound) {
			a.fail(w, r, err)
			return
		}
	}
	body := toStatus(st, hist, showHistoryOutput)
	if !showInput {
		body.Input = nil
	}
	status := http.StatusOK
	switch st.RuntimeStatus {
	case history.StatusRunning, history.StatusPending, history.StatusContinuedAsNew, history.StatusSuspended:
		status = http.StatusAccepted
		w.Header().Set("Location", BaseURL(r)+"/instances/"+url.PathEscape(id)+"?"+r.URL.RawQuery)
		w.Header().Set("Retry-After", "5")
	case history.StatusFailed:
		if boolParam(q, "returnInternalServerErrorOnFailure", false) {
			status = http.StatusInternalServerError
		}
	}
	writeJSON(w, status, body)
}

// validateLookupID checks ids used to look instances up; entity ids
// ("@name@key") are allowed here.
func validateLookupID(id string) error {
	if strings.HasPrefix(id, "@") {
		if len(id) > 256 || strings.Count(id, "@") < 2 {
			return fmt.Errorf("entity instance id %q must look like @name@key", id)
		}
		return nil
	}
	return ValidateInstanceID(id)
}

func parseTimeParam(q url.Values, name string) (time.Time, error) {
	v := q.Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, badRequest("%s %q is not an ISO-8601 time", name, v)
}

func parseStatuses(q url.Values) ([]history.Status, error) {
	var out []history.Status
	for _, v := range q["runtimeStatus"] {
		for _, s := range strings.Split(v, ",") {
			s = strings.TrimSpace(s)
			if s == "" {
				continue
			}
			st, err := history.ParseStatus(s)
			if err != nil {
				return nil, badRequest("%v (use Pending, Running, Completed, ContinuedAsNew, Failed, Terminated, Suspended)", err)
			}
			out = append(out, st)
		}
	}
	return out, nil
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	query := backend.InstanceQuery{
		InstanceIDPrefix:  q.Get("instanceIdPrefix"),
		FetchInput:        boolParam(q, "showInput", false),
		ContinuationToken: r.Header.Get("x-ms-continuation-token"),
		PageSize:          100,
	}
	var err error
	if query.CreatedFrom, err = parseTimeParam(q, "createdTimeFrom"); err != nil {
		a.fail(w, r, err)
		return
	}
	if query.CreatedTo, err = parseTimeParam(q, "createdTimeTo"); err != nil {
		a.fail(w, r, err)
		return
	}
	if query.RuntimeStatus, err = parseStatuses(q); err != nil {
		a.fail(w, r, err)
		return
	}
	if top := q.Get("top"); top != "" {
		n, err := strconv.Atoi(top)
		if err != nil || n <= 0 {
			writeError(w, http.StatusBadRequest, "top must be a positive number")
			return
		}
		// Larger pages are cut to maxPageSize; the continuation token
		// carries on from there.
		query.PageSize = min(n, maxPageSize)
	}
	page, err := a.Client.Query(r.Context(), query)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]*Status, 0, len(page.Instances))
	for _, st := range page.Instances {
		s := toStatus(st, nil, false)
		if !query.FetchInput {
			s.Input = nil
		}
		out = append(out, s)
	}
	if page.ContinuationToken != "" {
		w.Header().Set("x-ms-continuation-token", page.ContinuationToken)
	}
	writeJSON(w, http.StatusOK, out)
}

// PurgeResult is the body of purge answers.
type PurgeResult struct {
	InstancesDeleted int `json:"instancesDeleted"`
}

func (a *API) purgeOne(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("instanceId")
	if err := validateLookupID(id); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := a.Client.Purge(r.Context(), id); err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, PurgeResult{InstancesDeleted: 1})
}

func (a *API) purgeMany(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("createdTimeFrom") == "" {
		writeError(w, http.StatusBadRequest, "createdTimeFrom is required to purge instances by filter")
		return
	}
	var f backend.PurgeFilter
	var err error
	if f.CreatedFrom, err = parseTimeParam(q, "createdTimeFrom"); err != nil {
		a.fail(w, r, err)
		return
	}
	if f.CreatedTo, err = parseTimeParam(q, "createdTimeTo"); err != nil {
		a.fail(w, r, err)
		return
	}
	if f.CreatedTo.IsZero() {
		f.CreatedTo = time.Now().UTC()
	}
	if f.RuntimeStatus, err = parseStatuses(q); err != nil {
		a.fail(w, r, err)
		return
	}
	n, err := a.Client.PurgeBy(r.Context(), f)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if n == 0 {
		writeJSON(w, http.StatusNotFound, PurgeResult{})
		return
	}
	writeJSON(w, http.StatusOK, PurgeResult{InstancesDeleted: n})
}

// existing loads an instance for a control operation and answers 404/410
// itself; ok is false when it has answered.
func (a *API) existing(w http.ResponseWriter, r *http.Request, goneIf func(history.Status) bool) (*backend.InstanceState, bool) {
	id := r.PathValue("instanceId")
	if err := validateLookupID(id); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return nil, false
	}
	st, err := a.Client.GetInstance(r.Context(), id, false)
	if err != nil {
		a.fail(w, r, err)
		return nil, false
	}
	if goneIf(st.RuntimeStatus) {
		writeError(w, http.StatusGone, fmt.Sprintf("instance %s is %s", id, st.RuntimeStatus))
		return nil, false
	}
	return st, true
}

func (a *API) raiseEvent(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("eventName")
	if err := ValidateEventName(name); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		writeError(w, http.StatusBadRequest, "raiseEvent needs a JSON body with Content-Type: application/json")
		return
	}
	data, err := readJSONBody(r)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	st, ok := a.existing(w, r, history.Status.Terminal)
	if !ok {
		return
	}
	if err := a.Client.RaiseEvent(r.Context(), st.InstanceID, name, data); err != nil {
		a.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

func (a *API) control(op string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		gone := history.Status.Terminal
		if op == "rewind" {
			gone = func(s history.Status) bool {
				return s == history.StatusCompleted || s == history.StatusTerminated || s == history.StatusCanceled
			}
		}
		st, ok := a.existing(w, r, gone)
		if !ok {
			return
		}
		reason := r.URL.Query().Get("reason")
		var err error
		switch op {
		case "terminate":
			err = a.Client.Terminate(r.Context(), st.InstanceID, reason)
		case "suspend":
			err = a.Client.Suspend(r.Context(), st.InstanceID, reason)
		case "resume":
			err = a.Client.Resume(r.Context(), st.InstanceID, reason)
		case "rewind":
			if st.RuntimeStatus != history.StatusFailed {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("only Failed instances can be rewound; %s is %s", st.InstanceID, st.RuntimeStatus))
				return
			}
			err = a.Client.Rewind(r.Context(), st.InstanceID, reason)
		}
		if err != nil {
			a.fail(w, r, err)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	}
}

func (a *API) restart(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("instanceId")
	if err := ValidateInstanceID(id); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	st, err := a.Client.GetInstance(r.Context(), id, true)
	if errors.Is(err, backend.ErrInstanceNotFound) {
		writeError(w, http.StatusBadRequest, "no instance with id "+id+" to restart")
		return
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	newID := ""
	if !boolParam(r.URL.Query(), "restartWithNewInstanceId", true) {
		newID = id
		if !st.RuntimeStatus.Terminal() {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("instance %s is %s; only a finished instance can be restarted with the same id", id, st.RuntimeStatus))
			return
		}
	}
	timeout, poll, err := waitParams(r.URL.Query())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	started, err := a.Client.ScheduleNew(r.Context(), st.Name, st.Input, newID, time.Time{})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.answerStarted(w, r, started, timeout, poll)
}

func (a *API) readEntity(w http.ResponseWriter, r *http.Request) {
	if a.Entities == nil {
		writeError(w, http.StatusNotImplemented, "durable entities are not enabled on this host")
		return
	}
	name, key := strings.ToLower(r.PathValue("name")), entityKey(r.PathValue("key"))
	state, exists, err := a.Entities.ReadEntity(r.Context(), name, key)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if !exists {
		writeError(w, http.StatusNotFound, fmt.Sprintf("entity @%s@%s does not exist", name, key))
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = io.WriteString(w, jsonOrNull(state))
}

func entityKey(k string) string {
	if k == "$" {
		return ""
	}
	return k
}

func (a *API) signalEntity(w http.ResponseWriter, r *http.Request) {
	if a.Entities == nil {
		writeError(w, http.StatusNotImplemented, "durable entities are not enabled on this host")
		return
	}
	name, key := strings.ToLower(r.PathValue("name")), entityKey(r.PathValue("key"))
	op := r.URL.Query().Get("op")
	if r.Method == http.MethodDelete {
		op = "delete"
	}
	if op == "" {
		writeError(w, http.StatusBadRequest, "the op query parameter names the operation to signal")
		return
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, 16<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, "read body: "+err.Error())
		return
	}
	input := strings.TrimSpace(string(b))
	if input != "" && !strings.HasPrefix(strings.ToLower(r.Header.Get("Content-Type")), "application/json") {
		// A body that is not declared JSON is a raw string, as in Durable Functions.
		enc, _ := json.Marshal(string(b))
		input = string(enc)
	} else if input != "" && !json.Valid([]byte(input)) {
		writeError(w, http.StatusBadRequest, "the request body is not valid JSON")
		return
	}
	if err := a.Entities.SignalEntity(r.Context(), name, key, op, input); err != nil {
		a.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusAccepted)
}

// EntityListItem is one item of GET entities.
type EntityListItem struct {
	EntityID struct {
		Name string `json:"name"`
		Key  string `json:"key"`
	} `json:"entityId"`
	LastOperationTime string          `json:"lastOperationTime"`
	State             json.RawMessage `json:"state,omitempty"`
}

func (a *API) listEntities(w http.ResponseWriter, r *http.Request) {
	if a.Entities == nil {
		writeError(w, http.StatusNotImplemented, "durable entities are not enabled on this host")
		return
	}
	q := r.URL.Query()
	eq := EntityQuery{Name: strings.ToLower(r.PathValue("name")), PageSize: 100, FetchState: boolParam(q, "fetchState", false), ContinuationToken: r.Header.Get("x-ms-continuation-token")}
	var err error
	if eq.LastOperationTimeFrom, err = parseTimeParam(q, "lastOperationTimeFrom"); err != nil {
		a.fail(w, r, err)
		return
	}
	if eq.LastOperationTimeTo, err = parseTimeParam(q, "lastOperationTimeTo"); err != nil {
		a.fail(w, r, err)
		return
	}
	if top := q.Get("top"); top != "" {
		if eq.PageSize, err = strconv.Atoi(top); err != nil || eq.PageSize <= 0 {
			writeError(w, http.StatusBadRequest, "top must be a positive number")
			return
		}
	}
	page, err := a.Entities.ListEntities(r.Context(), eq)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]EntityListItem, 0, len(page.Entities))
	for _, e := range page.Entities {
		var it EntityListItem
		it.EntityID.Name, it.EntityID.Key = e.Name, e.Key
		it.LastOperationTime = isoTime(e.LastOperationTime)
		if eq.FetchState {
			it.State = json.RawMessage(jsonOrNull(e.State))
		}
		out = append(out, it)
	}
	if page.ContinuationToken != "" {
		w.Header().Set("x-ms-continuation-token", page.ContinuationToken)
	}
	writeJSON(w, http.StatusOK, out)
}
