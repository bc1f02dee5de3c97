package azurestorage

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/stratus-dev/stratus/durable/history"
)

// Wire format of queue messages: DurableTask.AzureStorage's MessageData
// envelope, serialized as Newtonsoft does with TypeNameHandling.Objects
// ("$type" first, no assembly part), raw UTF-8 JSON.

const (
	envelopeType    = "DurableTask.AzureStorage.MessageData"
	taskMessageType = "DurableTask.Core.TaskMessage"
	historyNS       = "DurableTask.Core.History."
	timeLayout      = "2006-01-02T15:04:05.0000000Z"
)

var eventClass = map[history.Type]string{
	history.ExecutionStarted: "ExecutionStartedEvent", history.ExecutionCompleted: "ExecutionCompletedEvent",
	history.ExecutionTerminated: "ExecutionTerminatedEvent", history.TaskScheduled: "TaskScheduledEvent",
	history.TaskCompleted: "TaskCompletedEvent", history.TaskFailed: "TaskFailedEvent",
	history.SubOrchestrationInstanceCreated:   "SubOrchestrationInstanceCreatedEvent",
	history.SubOrchestrationInstanceCompleted: "SubOrchestrationInstanceCompletedEvent",
	history.SubOrchestrationInstanceFailed:    "SubOrchestrationInstanceFailedEvent",
	history.TimerCreated:                      "TimerCreatedEvent", history.TimerFired: "TimerFiredEvent",
	history.OrchestratorStarted: "OrchestratorStartedEvent", history.OrchestratorCompleted: "OrchestratorCompletedEvent",
	history.EventSent: "EventSentEvent", history.EventRaised: "EventRaisedEvent", history.ContinueAsNew: "ContinueAsNewEvent",
	history.GenericEvent: "GenericEvent", history.HistoryState: "HistoryStateEvent",
	history.ExecutionSuspended: "ExecutionSuspendedEvent", history.ExecutionResumed: "ExecutionResumedEvent",
}

// OrchestrationStatus numbers (DurableTask.Core's enum), used in queue JSON.
var statusNumber = map[history.Status]int{
	history.StatusRunning: 0, history.StatusCompleted: 1, history.StatusContinuedAsNew: 2, history.StatusFailed: 3,
	history.StatusCanceled: 4, history.StatusTerminated: 5, history.StatusPending: 6, history.StatusSuspended: 7,
}

func statusFromNumber(n int) history.Status {
	for s, v := range statusNumber {
		if v == n {
			return s
		}
	}
	return ""
}

type wireTime time.Time

func (t wireTime) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Time(t).UTC().Format(timeLayout) + `"`), nil
}

func (t *wireTime) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return err
	}
	*t = wireTime(v.UTC())
	return nil
}

// wireEvent is a history event as DurableTask.Core serializes it.
type wireEvent struct {
	EventType             int                     `json:"EventType"`
	EventID               int                     `json:"EventId"`
	IsPlayed              bool                    `json:"IsPlayed"`
	Timestamp             wireTime                `json:"Timestamp"`
	OrchestrationInstance *history.Instance       `json:"OrchestrationInstance,omitempty"`
	ParentInstance        *history.ParentInstance `json:"ParentInstance,omitempty"`
	Name                  *string                 `json:"Name,omitempty"`
	Version               *string                 `json:"Version,omitempty"`
	Input                 *string                 `json:"Input,omitempty"`
	Result                *string                 `json:"Result,omitempty"`
	Reason                *string                 `json:"Reason,omitempty"`
	Details               *string                 `json:"Details,omitempty"`
	Data                  *string                 `json:"Data,omitempty"`
	Tags                  map[string]string       `json:"Tags,omitempty"`
	ScheduledStartTime    *wireTime               `json:"ScheduledStartTime,omitempty"`
	Generation            *int                    `json:"Generation,omitempty"`
	OrchestrationStatus   *int                    `json:"OrchestrationStatus,omitempty"`
	FailureDetails        *history.FailureDetails `json:"FailureDetails,omitempty"`
	TaskScheduledID       *int                    `json:"TaskScheduledId,omitempty"`
	TimerID               *int                    `json:"TimerId,omitempty"`
	FireAt                *wireTime               `json:"FireAt,omitempty"`
	InstanceID            *string                 `json:"InstanceId,omitempty"`
}

func strp(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func intp(i int) *int { return &i }

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func toWire(e *history.Event) wireEvent {
	w := wireEvent{EventType: int(e.EventType), EventID: e.EventID, IsPlayed: e.IsPlayed, Timestamp: wireTime(e.Timestamp),
		OrchestrationInstance: e.OrchestrationInstance, ParentInstance: e.ParentInstance, Tags: e.Tags,
		Name: strp(e.Name), Version: strp(e.Version), Input: strp(e.Input), Result: strp(e.Result), Reason: strp(e.Reason),
		Details: strp(e.Details), Data: strp(e.Data), FailureDetails: e.FailureDetails, InstanceID: strp(e.InstanceID)}
	if e.ScheduledStartTime != nil {
		t := wireTime(*e.ScheduledStartTime)
		w.ScheduledStartTime = &t
	}
	switch e.EventType {
	case history.ExecutionStarted:
		w.Generation = intp(e.Generation)
	case history.ExecutionCompleted, history.ContinueAsNew:
		w.OrchestrationStatus = intp(statusNumber[e.OrchestrationStatus])
	case history.TaskCompleted, history.TaskFailed, history.SubOrchestrationInstanceCompleted, history.SubOrchestrationInstanceFailed:
		w.TaskScheduledID = intp(e.TaskScheduledID)
	case history.TimerFired:
		w.TimerID = intp(e.TimerID)
		t := wireTime(e.FireAt)
		w.FireAt = &t
	case history.TimerCreated:
		t := wireTime(e.FireAt)
		w.FireAt = &t
	}
	return w
}

func fromWire(w *wireEvent) *history.Event {
	e := &history.Event{EventType: history.Type(w.EventType), EventID: w.EventID, IsPlayed: w.IsPlayed, Timestamp: time.Time(w.Timestamp),
		OrchestrationInstance: w.OrchestrationInstance, ParentInstance: w.ParentInstance, Tags: w.Tags,
		Name: deref(w.Name), Version: deref(w.Version), Input: deref(w.Input), Result: deref(w.Result), Reason: deref(w.Reason),
		Details: deref(w.Details), Data: deref(w.Data), FailureDetails: w.FailureDetails, InstanceID: deref(w.InstanceID)}
	if w.ScheduledStartTime != nil {
		t := time.Time(*w.ScheduledStartTime)
		e.ScheduledStartTime = &t
	}
	if w.Generation != nil {
		e.Generation = *w.Generation
	}
	if w.OrchestrationStatus != nil {
		e.OrchestrationStatus = statusFromNumber(*w.OrchestrationStatus)
	}
	if w.TaskScheduledID != nil {
		e.TaskScheduledID = *w.TaskScheduledID
	}
	if w.TimerID != nil {
		e.TimerID = *w.TimerID
	}
	if w.FireAt != nil {
		e.FireAt = time.Time(*w.FireAt)
	}
	return e
}

// withType marshals v and puts "$type": typ first.
func withType(typ string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	head, _ := json.Marshal(typ)
	out := make([]byte, 0, len(b)+len(head)+10)
	out = append(out, `{"$type":`...)
	out = append(out, head...)
	if len(b) > 2 {
		out = append(out, ',')
		out = append(out, b[1:]...)
	} else {
		out = append(out, '}')
	}
	return out, nil
}

// envelope is the decoded MessageData.
type envelope struct {
	ActivityID         string
	Instance           history.Instance
	Event              *history.Event
	CompressedBlobName string
	SequenceNumber     int64
	Episode            *int
	Sender             history.Instance
}

type wireEnvelope struct {
	ActivityID  string `json:"ActivityId"`
	TaskMessage *struct {
		Event                 json.RawMessage  `json:"Event"`
		SequenceNumber        int64            `json:"SequenceNumber"`
		OrchestrationInstance history.Instance `json:"OrchestrationInstance"`
	} `json:"TaskMessage"`
	CompressedBlobName *string          `json:"CompressedBlobName"`
	SequenceNumber     int64            `json:"SequenceNumber"`
	Episode            *int             `json:"Episode,omitempty"`
	Sender             history.Instance `json:"Sender"`
}

// encodeEnvelope writes the MessageData JSON.
func encodeEnvelope(env *envelope) ([]byte, error) {
	ev, err := withType(historyNS+eventClass[env.Event.EventType], toWire(env.Event))
	if err != nil {
		return nil, err
	}
	tm, err := withType(taskMessageType, struct {
		Event                         json.RawMessage  `json:"Event"`
		SequenceNumber                int64            `json:"SequenceNumber"`
		OrchestrationInstance         history.Instance `json:"OrchestrationInstance"`
		OrchestrationExecutionContext any              `json:"OrchestrationExecutionContext"`
	}{ev, 0, env.Instance, nil})
	if err != nil {
		return nil, err
	}
	return withType(envelopeType, struct {
		ActivityID               string           `json:"ActivityId"`
		TaskMessage              json.RawMessage  `json:"TaskMessage"`
		CompressedBlobName       *string          `json:"CompressedBlobName"`
		SequenceNumber           int64            `json:"SequenceNumber"`
		Episode                  *int             `json:"Episode,omitempty"`
		Sender                   history.Instance `json:"Sender"`
		SerializableTraceContext any              `json:"SerializableTraceContext"`
	}{env.ActivityID, tm, nil, env.SequenceNumber, env.Episode, env.Sender, nil})
}

// compressedEnvelope is the queue body that points at a spilled message.
func compressedEnvelope(activityID, blobName string, seq int64) ([]byte, error) {
	return withType(envelopeType, struct {
		ActivityID         string `json:"ActivityId"`
		TaskMessage        any    `json:"TaskMessage"`
		CompressedBlobName string `json:"CompressedBlobName"`
		SequenceNumber     int64  `json:"SequenceNumber"`
	}{activityID, nil, blobName, seq})
}

// decodeEnvelope reads a queue message body: raw JSON, or base64 of it.
// When the envelope points at a blob, CompressedBlobName is set and Event is nil.
func decodeEnvelope(body []byte) (*envelope, error) {
	body = bytes.TrimSpace(body)
	if len(body) > 0 && body[0] != '{' {
		dec, err := base64.StdEncoding.DecodeString(string(body))
		if err != nil {
			return nil, fmt.Errorf("message is neither JSON nor base64 JSON")
		}
		body = dec
	}
	var w wireEnvelope
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, fmt.Errorf("decode message envelope: %w", err)
	}
	env := &envelope{ActivityID: w.ActivityID, SequenceNumber: w.SequenceNumber, Episode: w.Episode, Sender: w.Sender}
	if w.CompressedBlobName != nil && *w.CompressedBlobName != "" {
		env.CompressedBlobName = *w.CompressedBlobName
		return env, nil
	}
	if w.TaskMessage == nil || len(w.TaskMessage.Event) == 0 {
		return nil, fmt.Errorf("message envelope has no TaskMessage.Event")
	}
	var we wireEvent
	if err := json.Unmarshal(w.TaskMessage.Event, &we); err != nil {
		return nil, fmt.Errorf("decode history event: %w", err)
	}
	if _, ok := eventClass[history.Type(we.EventType)]; !ok {
		return nil, fmt.Errorf("unknown EventType %d", we.EventType)
	}
	env.Event = fromWire(&we)
	env.Instance = w.TaskMessage.OrchestrationInstance
	return env, nil
}

// Table rows.

func edmTime(t time.Time) aztables.EDMDateTime { return aztables.EDMDateTime(t.UTC()) }

// historyRow converts an event to History table properties (without keys).
func historyRow(e *history.Event, executionID string) map[string]any {
	p := map[string]any{
		"ExecutionId": executionID,
		"EventId":     int32(e.EventID),
		"IsPlayed":    e.IsPlayed,
		"EventType":   e.EventType.String(),
		"_Timestamp":  edmTime(e.Timestamp),
	}
	set := func(k, v string) {
		if v != "" {
			p[k] = v
		}
	}
	set("Name", e.Name)
	set("Version", e.Version)
	set("Input", e.Input)
	set("Result", e.Result)
	set("Reason", e.Reason)
	set("Details", e.Details)
	set("Data", e.Data)
	set("InstanceId", e.InstanceID)
	js := func(k string, v any) {
		b, _ := json.Marshal(v)
		p[k] = string(b)
	}
	// Complex members are Newtonsoft JSON strings; DurableTask.Core stores a
	// null one as "null" for the members its event class declares.
	if e.OrchestrationInstance != nil {
		js("OrchestrationInstance", e.OrchestrationInstance)
	}
	switch e.EventType {
	case history.ExecutionStarted:
		jsOrNull(p, "ParentInstance", e.ParentInstance, e.ParentInstance == nil)
		jsOrNull(p, "Tags", e.Tags, len(e.Tags) == 0)
	case history.TaskScheduled, history.SubOrchestrationInstanceCreated:
		jsOrNull(p, "Tags", e.Tags, len(e.Tags) == 0)
	case history.ExecutionCompleted, history.TaskFailed, history.SubOrchestrationInstanceFailed:
		jsOrNull(p, "FailureDetails", e.FailureDetails, e.FailureDetails == nil)
	default:
		if e.ParentInstance != nil {
			js("ParentInstance", e.ParentInstance)
		}
		if len(e.Tags) > 0 {
			js("Tags", e.Tags)
		}
		if e.FailureDetails != nil {
			js("FailureDetails", e.FailureDetails)
		}
	}
	if e.ScheduledStartTime != nil {
		p["ScheduledStartTime"] = edmTime(*e.ScheduledStartTime)
	}
	switch e.EventType {
	case history.ExecutionStarted:
		p["Generation"] = int32(e.Generation)
	case history.ExecutionCompleted, history.ContinueAsNew:
		p["OrchestrationStatus"] = string(e.OrchestrationStatus)
	case history.TaskCompleted, history.TaskFailed, history.SubOrchestrationInstanceCompleted, history.SubOrchestrationInstanceFailed:
		p["TaskScheduledId"] = int32(e.TaskScheduledID)
	case history.TimerFired:
		p["TimerId"] = int32(e.TimerID)
		p["FireAt"] = edmTime(e.FireAt)
	case history.TimerCreated:
		p["FireAt"] = edmTime(e.FireAt)
	}
	return p
}

// eventFromRow converts History table properties back to an event.
func eventFromRow(p map[string]any) (*history.Event, error) {
	typeName, _ := p["EventType"].(string)
	t, err := history.ParseType(typeName)
	if err != nil {
		return nil, err
	}
	e := &history.Event{EventType: t, EventID: propInt(p, "EventId"), Timestamp: propTime(p, "_Timestamp")}
	e.IsPlayed, _ = p["IsPlayed"].(bool)
	str := func(k string) string { s, _ := p[k].(string); return s }
	e.Name, e.Version, e.Input, e.Result = str("Name"), str("Version"), str("Input"), str("Result")
	e.Reason, e.Details, e.Data, e.InstanceID = str("Reason"), str("Details"), str("Data"), str("InstanceId")
	unjs := func(k string, v any) error {
		s := str(k)
		if s == "" || s == "null" {
			return nil
		}
		if err := json.Unmarshal([]byte(s), v); err != nil {
			return fmt.Errorf("column %s: %w", k, err)
		}
		return nil
	}
	if s := str("OrchestrationInstance"); s != "" && s != "null" {
		e.OrchestrationInstance = &history.Instance{}
		if err := unjs("OrchestrationInstance", e.OrchestrationInstance); err != nil {
			return nil, err
		}
	}
	if s := str("ParentInstance"); s != "" && s != "null" {
		e.ParentInstance = &history.ParentInstance{}
		if err := unjs("ParentInstance", e.ParentInstance); err != nil {
			return nil, err
		}
	}
	if err := unjs("Tags", &e.Tags); err != nil {
		return nil, err
	}
	if s := str("FailureDetails"); s != "" && s != "null" {
		e.FailureDetails = &history.FailureDetails{}
		if err := unjs("FailureDetails", e.FailureDetails); err != nil {
			return nil, err
		}
	}
	if _, ok := p["ScheduledStartTime"]; ok {
		st := propTime(p, "ScheduledStartTime")
		e.ScheduledStartTime = &st
	}
	e.Generation = propInt(p, "Generation")
	e.OrchestrationStatus = history.Status(str("OrchestrationStatus"))
	e.TaskScheduledID = propInt(p, "TaskScheduledId")
	e.TimerID = propInt(p, "TimerId")
	e.FireAt = propTime(p, "FireAt")
	return e, nil
}

// jsOrNull stores v as a JSON string column, or "null" when isNil.
func jsOrNull(p map[string]any, k string, v any, isNil bool) {
	if isNil {
		p[k] = "null"
		return
	}
	b, _ := json.Marshal(v)
	p[k] = string(b)
}

func propInt(p map[string]any, k string) int {
	switch v := p[k].(type) {
	case int32:
		return int(v)
	case int64:
		return int(v)
	case int:
		return v
	case float64:
		return int(v)
	case string:
		n, _ := strconv.Atoi(v)
		return n
	}
	return 0
}

func propTime(p map[string]any, k string) time.Time {
	switch v := p[k].(type) {
	case aztables.EDMDateTime:
		return time.Time(v).UTC()
	case time.Time:
		return v.UTC()
	case string:
		t, err := time.Parse(time.RFC3339Nano, v)
		if err == nil {
			return t.UTC()
		}
	}
	return time.Time{}
}
