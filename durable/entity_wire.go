package durable

import (
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
)

// The entity wire format is Durable Functions': every message to an entity
// is an EventRaised event. "op" (or "op@<time>" when delayed) carries a
// request, "release" ends a lock, and a response goes back to the caller as
// an EventRaised named by the request id. The entity's state travels from
// batch to batch as the input of its next execution (continue-as-new): a
// scheduler state of the entity state, the queue of waiting requests, the
// lock holder and the message sorter that puts each sender's requests in
// order and drops duplicates.

// Entity event names.
const (
	entityOpEvent       = "op"
	entityReleaseEvent  = "release"
	entityContinueEvent = "continue"
	lockGrantedResult   = "Lock Acquisition Completed"
)

// reorderWindow is how long the sorter holds a request whose predecessor
// has not arrived, and how long it remembers senders (Durable Functions'
// EntityMessageReorderWindowInMinutes default).
const reorderWindow = 30 * time.Minute

// sorterCollectInterval spaces the sorter's clean-ups.
const sorterCollectInterval = 10 * time.Second

// maxRecentRequests bounds the ids of unsorted requests (from clients,
// delayed signals and forwarded lock requests) an entity remembers to
// drop redelivered copies.
const maxRecentRequests = 500

// entityRef is an entity id in a lock set.
type entityRef struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

// entityRequest is an operation or lock request (Durable Functions'
// RequestMessage).
type entityRequest struct {
	Op              string      `json:"op,omitempty"`
	Signal          bool        `json:"signal,omitempty"`
	Input           string      `json:"input,omitempty"`
	ID              string      `json:"id"`
	Parent          string      `json:"parent,omitempty"`
	ParentExecution string      `json:"parentExecution,omitempty"`
	Timestamp       time.Time   `json:"Timestamp"`
	Predecessor     time.Time   `json:"Predecessor"`
	LockSet         []entityRef `json:"lockset,omitempty"`
	Pos             int         `json:"pos,omitempty"`
}

func (r *entityRequest) isLock() bool { return r.LockSet != nil }

// sorted reports whether the request takes part in per-sender ordering.
func (r *entityRequest) sorted() bool {
	return r.Parent != "" && r.Pos == 0 && !r.Timestamp.IsZero()
}

// entityResponse answers a call or a lock request (ResponseMessage).
type entityResponse struct {
	Result         string                  `json:"result"`
	ExceptionType  string                  `json:"exceptionType,omitempty"`
	FailureDetails *history.FailureDetails `json:"failureDetails,omitempty"`
}

// entityRelease ends a lock (ReleaseMessage).
type entityRelease struct {
	Parent string `json:"parent"`
	ID     string `json:"id"`
}

// schedulerState is an entity's persisted state (SchedulerState).
type schedulerState struct {
	Exists   bool             `json:"exists,omitempty"`
	State    string           `json:"state,omitempty"`
	Queue    []*entityRequest `json:"queue,omitempty"`
	LockedBy string           `json:"lockedBy,omitempty"`
	Sorter   *messageSorter   `json:"sorter,omitempty"`
	// Recent holds the ids of the latest unsorted requests, oldest first
	// (a Stratus addition: Durable Functions does not deduplicate them).
	Recent []string `json:"recent,omitempty"`
}

// messageSorter orders and deduplicates sorted requests (MessageSorter).
type messageSorter struct {
	LastSentToInstance   map[string]time.Time      `json:",omitempty"`
	ReceivedFromInstance map[string]*receiveBuffer `json:",omitempty"`
	ReceiveHorizon       time.Time
	SendHorizon          time.Time
}

// receiveBuffer is what the sorter knows of one sender.
type receiveBuffer struct {
	Last     time.Time
	Buffered []*entityRequest `json:",omitempty"` // by Timestamp
}

func parseSchedulerState(s string) (*schedulerState, error) {
	st := &schedulerState{}
	if s == "" || s == "null" {
		return st, nil
	}
	if err := json.Unmarshal([]byte(s), st); err != nil {
		return nil, err
	}
	return st, nil
}

func (st *schedulerState) encode() string {
	b, _ := json.Marshal(st)
	return string(b)
}

// public is the state as written to the Instances row: without the
// sorter's bookkeeping.
func (st *schedulerState) public() string {
	c := *st
	c.Sorter, c.Recent = nil, nil
	return c.encode()
}

func (st *schedulerState) sorter() *messageSorter {
	if st.Sorter == nil {
		st.Sorter = &messageSorter{}
	}
	return st.Sorter
}

// label stamps an outgoing request to dest with this entity's send clock.
func (st *schedulerState) label(r *entityRequest, dest string, now time.Time) {
	s := st.sorter()
	r.Timestamp, r.Predecessor = labelRequest(&s.LastSentToInstance, &s.SendHorizon, dest, now)
}

// labelRequest returns the Timestamp and Predecessor of the next request
// to dest: strictly after the previous one, so that the receiver can put
// the sender's requests in order.
func labelRequest(last *map[string]time.Time, horizon *time.Time, dest string, now time.Time) (time.Time, time.Time) {
	now = now.UTC()
	if horizon.Add(reorderWindow + sorterCollectInterval).Before(now) {
		*horizon = now.Add(-reorderWindow)
		for k, t := range *last {
			if t.Before(*horizon) {
				delete(*last, k)
			}
		}
	}
	if *last == nil {
		*last = map[string]time.Time{}
	}
	ts, pred := now, time.Time{}
	if prev, ok := (*last)[dest]; ok {
		pred = prev
		if !ts.After(prev) {
			ts = prev.Add(100 * time.Nanosecond)
		}
	}
	(*last)[dest] = ts
	return ts, pred
}

// remember records the id of an unsorted request; it reports false when
// the id was seen before (a redelivered copy).
func (st *schedulerState) remember(id string) bool {
	if slices.Contains(st.Recent, id) {
		return false
	}
	st.Recent = append(st.Recent, id)
	if n := len(st.Recent) - maxRecentRequests; n > 0 {
		st.Recent = slices.Delete(st.Recent, 0, n)
	}
	return true
}

// receive passes a request through the sorter and returns the requests now
// deliverable, in order (none for a duplicate, several when it fills a gap).
func (st *schedulerState) receive(r *entityRequest) []*entityRequest {
	if !r.sorted() {
		if !st.remember(r.ID) {
			return nil
		}
		return []*entityRequest{r}
	}
	s := st.sorter()
	var out []*entityRequest
	if s.ReceiveHorizon.Add(reorderWindow + sorterCollectInterval).Before(r.Timestamp) {
		s.ReceiveHorizon = r.Timestamp.Add(-reorderWindow)
		for _, k := range sortedKeys(s.ReceivedFromInstance) {
			b := s.ReceivedFromInstance[k]
			if b.Last.Before(s.ReceiveHorizon) {
				b.Last = time.Time{}
			}
			out = append(out, s.deliverBuffered(b)...)
			if b.Last.IsZero() && len(b.Buffered) == 0 {
				delete(s.ReceivedFromInstance, k)
			}
		}
	}
	if r.Timestamp.Before(s.ReceiveHorizon) {
		return append(out, r)
	}
	if s.ReceivedFromInstance == nil {
		s.ReceivedFromInstance = map[string]*receiveBuffer{}
	}
	key := strings.ToLower(r.Parent)
	b := s.ReceivedFromInstance[key]
	if b == nil {
		b = &receiveBuffer{}
		s.ReceivedFromInstance[key] = b
	}
	if !r.Timestamp.After(b.Last) {
		return out // already delivered: a duplicate
	}
	if r.Predecessor.After(b.Last) && !r.Predecessor.Before(s.ReceiveHorizon) {
		if !slices.ContainsFunc(b.Buffered, func(x *entityRequest) bool { return x.Timestamp.Equal(r.Timestamp) }) {
			b.Buffered = append(b.Buffered, r)
			slices.SortFunc(b.Buffered, func(x, y *entityRequest) int { return x.Timestamp.Compare(y.Timestamp) })
		}
		return out
	}
	out = append(out, r)
	b.Last = s.lastOf(r)
	return append(out, s.deliverBuffered(b)...)
}

func (s *messageSorter) lastOf(r *entityRequest) time.Time {
	if r.Timestamp.Before(s.ReceiveHorizon) {
		return time.Time{}
	}
	return r.Timestamp
}

// deliverBuffered releases buffered requests whose predecessor has been
// delivered (or fell out of the window).
func (s *messageSorter) deliverBuffered(b *receiveBuffer) []*entityRequest {
	var out []*entityRequest
	for len(b.Buffered) > 0 {
		next := b.Buffered[0]
		if next.Predecessor.After(b.Last) && !next.Predecessor.Before(s.ReceiveHorizon) {
			break
		}
		b.Buffered = b.Buffered[1:]
		b.Last = s.lastOf(next)
		out = append(out, next)
	}
	if len(b.Buffered) == 0 {
		b.Buffered = nil
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// requestEventName is "op", or "op@<time>" for a request delivered later.
func requestEventName(at time.Time) string {
	if at.IsZero() {
		return entityOpEvent
	}
	return entityOpEvent + "@" + at.UTC().Format("2006-01-02T15:04:05.0000000Z")
}

// requestMessage is the message carrying req to entity id, delivered at at
// (zero: now).
func requestMessage(id EntityID, req *entityRequest, at time.Time) backend.Message {
	b, _ := json.Marshal(req)
	return backend.Message{
		TargetInstanceID: id.String(),
		VisibleAt:        at,
		Event:            &history.Event{EventType: history.EventRaised, EventID: -1, Name: requestEventName(at), Input: string(b)},
	}
}

// newGUID returns a random GUID in the 8-4-4-4-12 form.
func newGUID() string {
	s := newGUIDN()
	return s[0:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:32]
}

// entityCustomStatus is the custom status of an entity instance.
type entityCustomStatus struct {
	EntityExists bool   `json:"entityExists"`
	QueueSize    int    `json:"queueSize"`
	LockedBy     string `json:"lockedBy,omitempty"`
}
