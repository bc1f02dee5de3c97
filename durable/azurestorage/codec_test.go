package azurestorage

import (
	"bytes"
	"encoding/base64"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/durable/history"
)

func TestFNV1a(t *testing.T) {
	t.Parallel()
	cases := []struct {
		id        string
		hash      uint32
		partition int
	}{
		{"abc", 0x1a47e90b, 3},
		{"@counter@myKey", 0x69dfc660, 0},
		{"", 0x811c9dc5, 1},
	}
	for _, c := range cases {
		if got := fnv1a32(c.id); got != c.hash {
			t.Errorf("fnv1a32(%q) = %#x, want %#x", c.id, got, c.hash)
		}
		if got := partitionOf(c.id, 4); got != c.partition {
			t.Errorf("partitionOf(%q, 4) = %d, want %d", c.id, got, c.partition)
		}
	}
}

func TestEscapeKey(t *testing.T) {
	t.Parallel()
	cases := []struct{ id, key string }{
		{"plain-id", "plain-id"},
		{"a/b", "a^0b"},
		{`a\b`, "a^1b"},
		{"a#b?c", "a^2b^3c"},
		{"x^y", "x^^y"},
		{"tab\there", "tab^\u00c9here"},
		{"del\u007f", "del^\u013f"},
	}
	for _, c := range cases {
		if got := escapeKey(c.id); got != c.key {
			t.Errorf("escapeKey(%q) = %q, want %q", c.id, got, c.key)
		}
		if got := unescapeKey(c.key); got != c.id {
			t.Errorf("unescapeKey(%q) = %q, want %q", c.key, got, c.id)
		}
	}
}

func TestNames(t *testing.T) {
	t.Parallel()
	n := newNames("MyHub", 3)
	want := names{
		hub: "MyHub", controlQueues: []string{"myhub-control-00", "myhub-control-01", "myhub-control-02"},
		workItemQueue: "myhub-workitems", poisonQueue: "myhub-poison", historyTable: "MyHubHistory",
		instancesTable: "MyHubInstances", leaseContainer: "myhub-leases", largeContainer: "myhub-largemessages",
	}
	if !reflect.DeepEqual(n, want) {
		t.Fatalf("names = %+v, want %+v", n, want)
	}
	if rowKey(26) != "000000000000001A" {
		t.Fatalf("rowKey(26) = %s", rowKey(26))
	}
	for _, bad := range []string{"", "ab", "1hub", "hub-name", strings.Repeat("a", 46)} {
		if ValidateHubName(bad) == nil {
			t.Errorf("ValidateHubName(%q) accepted", bad)
		}
	}
}

func sampleEvents() []*history.Event {
	ts := time.Date(2026, 1, 2, 3, 4, 5, 123456700, time.UTC)
	start := ts.Add(time.Hour)
	return []*history.Event{
		{EventType: history.ExecutionStarted, EventID: -1, Timestamp: ts, Name: "HelloSequence", Input: `"in"`,
			OrchestrationInstance: &history.Instance{InstanceID: "i1", ExecutionID: "e1"}, ScheduledStartTime: &start, Generation: 2,
			Tags:           map[string]string{"k": "v"},
			ParentInstance: &history.ParentInstance{Name: "Parent", OrchestrationInstance: history.Instance{InstanceID: "p", ExecutionID: "pe"}, TaskScheduleID: 4}},
		{EventType: history.TaskScheduled, EventID: 0, Timestamp: ts, Name: "SayHello", Input: `"Tokyo"`},
		{EventType: history.TaskCompleted, EventID: -1, Timestamp: ts, TaskScheduledID: 0, Result: `"Hello Tokyo!"`},
		{EventType: history.TaskFailed, EventID: -1, Timestamp: ts, TaskScheduledID: 1, Reason: "boom", Details: "d",
			FailureDetails: &history.FailureDetails{ErrorType: "E", ErrorMessage: "boom"}},
		{EventType: history.TimerCreated, EventID: 2, Timestamp: ts, FireAt: ts.Add(time.Minute)},
		{EventType: history.TimerFired, EventID: -1, Timestamp: ts, TimerID: 2, FireAt: ts.Add(time.Minute)},
		{EventType: history.EventRaised, EventID: -1, Timestamp: ts, Name: "Approval", Input: `{"ok":true}`},
		{EventType: history.EventSent, EventID: 3, Timestamp: ts, Name: "op", InstanceID: "@counter@k", Input: `1`},
		{EventType: history.ExecutionCompleted, EventID: -1, Timestamp: ts, OrchestrationStatus: history.StatusCompleted, Result: `[1,2]`},
		{EventType: history.ExecutionTerminated, EventID: -1, Timestamp: ts, Input: `"why"`},
		{EventType: history.ExecutionSuspended, EventID: -1, Timestamp: ts, Reason: "pause"},
		{EventType: history.GenericEvent, EventID: -1, Timestamp: ts, Data: "x"},
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	t.Parallel()
	for _, e := range sampleEvents() {
		seq := int64(7)
		episode := 3
		env := &envelope{ActivityID: "act", Instance: history.Instance{InstanceID: "i1", ExecutionID: "e1"}, Event: e,
			SequenceNumber: seq, Episode: &episode, Sender: history.Instance{InstanceID: "s", ExecutionID: "se"}}
		body, err := encodeEnvelope(env)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(body, []byte(`{"$type":"DurableTask.AzureStorage.MessageData",`)) {
			t.Fatalf("envelope does not start with $type: %s", body)
		}
		for _, want := range []string{`"TaskMessage":{"$type":"DurableTask.Core.TaskMessage",`,
			`"Event":{"$type":"DurableTask.Core.History.` + eventClass[e.EventType] + `",`} {
			if !bytes.Contains(body, []byte(want)) {
				t.Fatalf("%s: body lacks %s: %s", e, want, body)
			}
		}
		for _, in := range [][]byte{body, []byte(base64.StdEncoding.EncodeToString(body))} {
			got, err := decodeEnvelope(in)
			if err != nil {
				t.Fatalf("%s: decode: %v", e, err)
			}
			if !reflect.DeepEqual(got, env) {
				t.Fatalf("%s: round trip\n got %+v %+v\nwant %+v %+v", e, got, got.Event, env, env.Event)
			}
		}
	}
}

func TestCompressedEnvelope(t *testing.T) {
	t.Parallel()
	body, err := compressedEnvelope("act", "i1/message-x.json.gz", 4)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(body, []byte(`{"$type":"DurableTask.AzureStorage.MessageData",`)) || !bytes.Contains(body, []byte(`"TaskMessage":null`)) {
		t.Fatalf("compressed envelope: %s", body)
	}
	env, err := decodeEnvelope(body)
	if err != nil || env.CompressedBlobName != "i1/message-x.json.gz" || env.Event != nil {
		t.Fatalf("decode compressed envelope: %+v %v", env, err)
	}
	if _, err := decodeEnvelope([]byte("%%% not json")); err == nil {
		t.Fatal("garbage decoded")
	}
}

func TestHistoryRowRoundTrip(t *testing.T) {
	t.Parallel()
	for _, e := range sampleEvents() {
		p := historyRow(e, "e1")
		if p["EventType"] != e.EventType.String() || p["ExecutionId"] != "e1" {
			t.Fatalf("%s: row %v", e, p)
		}
		if _, ok := p["_Timestamp"]; !ok {
			t.Fatalf("%s: no _Timestamp", e)
		}
		got, err := eventFromRow(p)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, e) {
			t.Fatalf("%s: row round trip\n got %+v\nwant %+v", e, got, e)
		}
	}
	p := historyRow(&history.Event{EventType: history.ExecutionStarted, EventID: -1, Name: "x"}, "e")
	if p["ParentInstance"] != "null" || p["Tags"] != "null" {
		t.Fatalf("null complex columns: %v", p)
	}
}
