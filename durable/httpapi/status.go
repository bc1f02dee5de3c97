package httpapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
)

// Status is the instance status object of Durable Functions.
type Status struct {
	Name            string           `json:"name"`
	InstanceID      string           `json:"instanceId"`
	RuntimeStatus   history.Status   `json:"runtimeStatus"`
	Input           json.RawMessage  `json:"input"`
	CustomStatus    json.RawMessage  `json:"customStatus"`
	Output          json.RawMessage  `json:"output"`
	CreatedTime     string           `json:"createdTime"`
	LastUpdatedTime string           `json:"lastUpdatedTime"`
	HistoryEvents   []map[string]any `json:"historyEvents,omitempty"`
}

func isoTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05Z")
}

func jsonOrNull(s string) string {
	if strings.TrimSpace(s) == "" {
		return "null"
	}
	if !json.Valid([]byte(s)) {
		b, _ := json.Marshal(s)
		return string(b)
	}
	return s
}

func raw(s string) json.RawMessage { return json.RawMessage(jsonOrNull(s)) }

func toStatus(st *backend.InstanceState, hist []*history.Event, showOutput bool) *Status {
	s := &Status{
		Name:            st.Name,
		InstanceID:      st.InstanceID,
		RuntimeStatus:   st.RuntimeStatus,
		Input:           raw(st.Input),
		CustomStatus:    raw(st.CustomStatus),
		Output:          raw(st.Output),
		CreatedTime:     isoTime(st.CreatedTime),
		LastUpdatedTime: isoTime(st.LastUpdatedTime),
	}
	if hist != nil {
		s.HistoryEvents = HistoryJSON(hist, showOutput)
	}
	return s
}

// HistoryJSON renders history as Durable Functions' status API does:
// episode markers and scheduling events are folded into their completions
// (FunctionName, ScheduledTime), results appear only when showOutput is set.
func HistoryJSON(hist []*history.Event, showOutput bool) []map[string]any {
	scheduled := map[int]*history.Event{}
	out := []map[string]any{}
	for _, e := range hist {
		switch e.EventType {
		case history.OrchestratorStarted, history.OrchestratorCompleted:
			continue
		case history.TaskScheduled, history.SubOrchestrationInstanceCreated:
			scheduled[e.EventID] = e
			continue
		}
		m := map[string]any{"EventType": e.EventType.String(), "Timestamp": e.Timestamp.UTC().Format(time.RFC3339Nano)}
		switch e.EventType {
		case history.ExecutionStarted:
			m["FunctionName"] = e.Name
			if showOutput {
				m["Input"] = raw(e.Input)
			}
		case history.ExecutionCompleted, history.ContinueAsNew:
			m["OrchestrationStatus"] = e.OrchestrationStatus
			if showOutput {
				m["Result"] = raw(e.Result)
			}
			if e.FailureDetails != nil {
				m["FailureDetails"] = e.FailureDetails
			}
		case history.ExecutionTerminated:
			m["Input"] = raw(e.Input)
		case history.TaskCompleted, history.TaskFailed, history.SubOrchestrationInstanceCompleted, history.SubOrchestrationInstanceFailed:
			if s, ok := scheduled[e.TaskScheduledID]; ok {
				m["FunctionName"] = s.Name
				m["ScheduledTime"] = s.Timestamp.UTC().Format(time.RFC3339Nano)
				if s.InstanceID != "" {
					m["InstanceId"] = s.InstanceID
				}
			}
			if showOutput && e.Result != "" {
				m["Result"] = raw(e.Result)
			}
			if e.Reason != "" {
				m["Reason"] = e.Reason
			}
			if e.FailureDetails != nil {
				m["FailureDetails"] = e.FailureDetails
			}
		case history.TimerCreated, history.TimerFired:
			m["FireAt"] = e.FireAt.UTC().Format(time.RFC3339Nano)
		case history.EventRaised, history.EventSent:
			m["Name"] = e.Name
			if showOutput {
				m["Input"] = raw(e.Input)
			}
		case history.ExecutionSuspended, history.ExecutionResumed:
			m["Reason"] = e.Reason
		}
		out = append(out, m)
	}
	return out
}

// BaseURL is the API's absolute base URL as seen by the caller of r.
func BaseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		scheme = "https"
	}
	return scheme + "://" + r.Host + BasePath
}

// Payload is the check-status payload (HttpManagementPayload).
type Payload struct {
	ID                    string `json:"id"`
	StatusQueryGetURI     string `json:"statusQueryGetUri"`
	SendEventPostURI      string `json:"sendEventPostUri"`
	TerminatePostURI      string `json:"terminatePostUri"`
	RewindPostURI         string `json:"rewindPostUri"`
	PurgeHistoryDeleteURI string `json:"purgeHistoryDeleteUri"`
	RestartPostURI        string `json:"restartPostUri"`
	SuspendPostURI        string `json:"suspendPostUri"`
	ResumePostURI         string `json:"resumePostUri"`
}

// RequiredQuery is the query string every generated URL carries.
func (a *API) RequiredQuery() string {
	conn := a.Connection
	if conn == "" {
		conn = "Storage"
	}
	q := "taskHub=" + url.QueryEscape(a.HubName) + "&connection=" + url.QueryEscape(conn)
	if a.Key != "" {
		q += "&code=" + url.QueryEscape(a.Key)
	}
	return q
}

// Payload builds the management URLs of instance id under base.
func (a *API) Payload(base, id string) Payload {
	inst := base + "/instances/" + url.PathEscape(id)
	q := a.RequiredQuery()
	return Payload{
		ID:                    id,
		StatusQueryGetURI:     inst + "?" + q,
		SendEventPostURI:      inst + "/raiseEvent/{eventName}?" + q,
		TerminatePostURI:      inst + "/terminate?reason={text}&" + q,
		RewindPostURI:         inst + "/rewind?reason={text}&" + q,
		PurgeHistoryDeleteURI: inst + "?" + q,
		RestartPostURI:        inst + "/restart?" + q,
		SuspendPostURI:        inst + "/suspend?reason={text}&" + q,
		ResumePostURI:         inst + "/resume?reason={text}&" + q,
	}
}

// ClientData is the durableClient binding data language SDKs read.
type ClientData struct {
	TaskHubName                   string            `json:"taskHubName"`
	CreationURLs                  map[string]string `json:"creationUrls"`
	ManagementURLs                Payload           `json:"managementUrls"`
	BaseURL                       string            `json:"baseUrl"`
	RequiredQueryStringParameters string            `json:"requiredQueryStringParameters"`
	RPCBaseURL                    string            `json:"rpcBaseUrl,omitempty"`
}

// ClientBindingData builds the durableClient binding data for base (the
// API's absolute base URL).
func (a *API) ClientBindingData(base string) ClientData {
	q := a.RequiredQuery()
	return ClientData{
		TaskHubName: a.HubName,
		CreationURLs: map[string]string{
			"createNewInstancePostUri":          base + "/orchestrators/{functionName}[/{instanceId}]?" + q,
			"createAndWaitOnNewInstancePostUri": base + "/orchestrators/{functionName}[/{instanceId}]?timeout={timeoutInSeconds}&pollingInterval={intervalInSeconds}&" + q,
		},
		ManagementURLs:                a.Payload(base, "INSTANCEID"),
		BaseURL:                       base,
		RequiredQueryStringParameters: q,
	}
}
