package azurestorage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
)

// Sentinel columns. ExecutionId, IsCheckpointComplete and
// CheckpointCompletedTimestamp are DurableTask.AzureStorage's; the others
// are this package's recovery record of the last checkpoint.
const (
	sentinelRowKey  = "sentinel"
	colPending      = "PendingOutbound"  // outbound messages of the last checkpoint
	colRecent       = "RecentMessageIds" // ids of recently consumed queue messages
	colUnacked      = "UnackedMessages"  // consumed messages perhaps still queued: id → pop receipt
	colCustomStatus = "CustomStatus"     // custom status at the last checkpoint
	recentIDs       = 100                // consumed message ids kept for duplicate detection
	maxBatchRows    = 99                 // history rows per transaction (plus the sentinel)
	maxBatchBytes   = 3 << 20            // payload per transaction (Azure caps it at 4 MB)
)

// loadedHistory is an instance's current execution as stored.
type loadedHistory struct {
	events       []*history.Event
	executionID  string
	etag         azcore.ETag // sentinel ETag; "" when there is no sentinel
	checkpointAt time.Time
	applied      []string
	unacked      map[string]string // consumed messages perhaps still queued, by id: their pop receipts
	pending      string
	customStatus string
}

func entityJSON(pk, rk string, props map[string]any) ([]byte, error) {
	return json.Marshal(aztables.EDMEntity{Entity: aztables.Entity{PartitionKey: pk, RowKey: rk}, Properties: props})
}

// readHistory reads an instance's History partition: the sentinel and the
// rows of its execution, in RowKey order, stopping at the first row of
// another execution or a gap; spilled columns are inflated.
func (b *Backend) readHistory(ctx context.Context, instanceID string) (*loadedHistory, error) {
	pk := escapeKey(instanceID)
	pager := b.histT.NewListEntitiesPager(&aztables.ListEntitiesOptions{Filter: to.Ptr("PartitionKey eq " + odataString(pk))})
	var rows []aztables.EDMEntity
	var sentinel *aztables.EDMEntity
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("read history of %s: %w", instanceID, err)
		}
		for _, raw := range page.Entities {
			var e aztables.EDMEntity
			if err := json.Unmarshal(raw, &e); err != nil {
				return nil, fmt.Errorf("read history of %s: %w", instanceID, err)
			}
			if e.RowKey == sentinelRowKey {
				sentinel = &e
				continue
			}
			rows = append(rows, e)
		}
	}
	lh := &loadedHistory{}
	if sentinel == nil {
		return lh, nil
	}
	if err := b.inflateRow(ctx, sentinel.Properties); err != nil {
		return nil, err
	}
	sp := sentinel.Properties
	lh.etag = azcore.ETag(sentinel.ETag)
	lh.executionID, _ = sp["ExecutionId"].(string)
	lh.checkpointAt = propTime(sp, "CheckpointCompletedTimestamp")
	lh.pending, _ = sp[colPending].(string)
	lh.customStatus, _ = sp[colCustomStatus].(string)
	if s, _ := sp[colRecent].(string); s != "" {
		_ = json.Unmarshal([]byte(s), &lh.applied)
	}
	if s, _ := sp[colUnacked].(string); s != "" {
		_ = json.Unmarshal([]byte(s), &lh.unacked)
	}
	slices.SortFunc(rows, func(x, y aztables.EDMEntity) int {
		switch {
		case x.RowKey < y.RowKey:
			return -1
		case x.RowKey > y.RowKey:
			return 1
		}
		return 0
	})
	for i, r := range rows {
		if r.RowKey != rowKey(i) || r.Properties["ExecutionId"] != lh.executionID {
			break
		}
		if err := b.inflateRow(ctx, r.Properties); err != nil {
			return nil, err
		}
		ev, err := eventFromRow(r.Properties)
		if err != nil {
			return nil, fmt.Errorf("history of %s row %s: %w", instanceID, r.RowKey, err)
		}
		lh.events = append(lh.events, ev)
	}
	return lh, nil
}

// writeCheckpoint writes events at rows base… and the sentinel, in
// entity-group transactions of at most 99 rows, chaining the sentinel ETag:
// Add when no sentinel is known (409: another writer created it), Merge
// with If-Match otherwise (412: another writer changed it). Intermediate
// batches mark the checkpoint incomplete; extra goes into the last one.
// It returns the sentinel's new ETag.
func (b *Backend) writeCheckpoint(ctx context.Context, pk string, etag azcore.ETag, executionID string, base int, events []*history.Event,
	extra map[string]any, at time.Time) (azcore.ETag, error) {
	type row struct {
		body []byte
	}
	rows := make([]row, 0, len(events))
	for i, e := range events {
		p := historyRow(e, executionID)
		rk := rowKey(base + i)
		if err := b.spillRow(ctx, pk, rk, e.EventType.String(), p); err != nil {
			return "", err
		}
		body, err := entityJSON(pk, rk, p)
		if err != nil {
			return "", fmt.Errorf("encode history row %s: %w", rk, err)
		}
		rows = append(rows, row{body})
	}
	if err := b.spillRow(ctx, pk, sentinelRowKey, "sentinel", extra); err != nil {
		return "", err
	}
	for start := 0; ; {
		end, size := start, 0
		for end < len(rows) && end-start < maxBatchRows && (end == start || size+len(rows[end].body) < maxBatchBytes) {
			size += len(rows[end].body)
			end++
		}
		last := end == len(rows)
		actions := make([]aztables.TransactionAction, 0, end-start+1)
		for _, r := range rows[start:end] {
			actions = append(actions, aztables.TransactionAction{ActionType: aztables.TransactionTypeInsertReplace, Entity: r.body})
		}
		sp := map[string]any{"ExecutionId": executionID, "IsCheckpointComplete": last, "CheckpointCompletedTimestamp": edmTime(at)}
		if last {
			for k, v := range extra {
				sp[k] = v
			}
		}
		sbody, err := entityJSON(pk, sentinelRowKey, sp)
		if err != nil {
			return "", fmt.Errorf("encode sentinel: %w", err)
		}
		if etag == "" {
			actions = append(actions, aztables.TransactionAction{ActionType: aztables.TransactionTypeAdd, Entity: sbody})
		} else {
			actions = append(actions, aztables.TransactionAction{ActionType: aztables.TransactionTypeUpdateMerge, Entity: sbody, IfMatch: to.Ptr(etag)})
		}
		if etag, err = submit(ctx, b.histT, actions); err != nil {
			return "", fmt.Errorf("write history of %s: %w", unescapeKey(pk), err)
		}
		if etag == "" {
			return "", fmt.Errorf("write history of %s: no sentinel ETag in the transaction response", unescapeKey(pk))
		}
		if last {
			return etag, nil
		}
		start = end
	}
}

// Instances rows.

func orNull(s string) string {
	if s == "" {
		return "null"
	}
	return s
}

func fromNull(s string) string {
	if s == "null" {
		return ""
	}
	return s
}

// outputOf is the Output column of a status: the result, the failure
// details or the termination reason.
func outputOf(s *backend.InstanceState) string {
	if s.Output == "" && s.FailureDetails != nil {
		b, _ := json.Marshal(s.FailureDetails)
		return string(b)
	}
	return s.Output
}

// instanceProps are the Instances columns for s. Identity columns
// (CreatedTime, Input, Tags, Generation, ScheduledStartTime) are written
// when full is set (a new execution, a repair); Output when the instance is
// terminal or has one.
func (b *Backend) instanceProps(ctx context.Context, pk string, s *backend.InstanceState, full bool, updated time.Time) (map[string]any, error) {
	p := map[string]any{
		"Name": s.Name, "Version": s.Version, "ExecutionId": s.ExecutionID, "RuntimeStatus": string(s.RuntimeStatus),
		"LastUpdatedTime": edmTime(updated), "CustomStatus": orNull(s.CustomStatus), "TaskHubName": b.opts.HubName,
	}
	if full {
		created := s.CreatedTime
		if created.IsZero() {
			created = updated
		}
		p["CreatedTime"] = edmTime(created)
		in, err := b.instanceValue(ctx, pk, s.ExecutionID, "Input", orNull(s.Input))
		if err != nil {
			return nil, err
		}
		p["Input"] = in
		p["Generation"] = int32(s.Generation)
		p["Tags"] = "null"
		if len(s.Tags) > 0 {
			t, _ := json.Marshal(s.Tags)
			p["Tags"] = string(t)
		}
		if !s.ScheduledStartTime.IsZero() {
			p["ScheduledStartTime"] = edmTime(s.ScheduledStartTime)
		}
	}
	if out := outputOf(s); out != "" || s.RuntimeStatus.Terminal() {
		v, err := b.instanceValue(ctx, pk, s.ExecutionID, "Output", orNull(out))
		if err != nil {
			return nil, err
		}
		p["Output"] = v
	}
	if s.RuntimeStatus.Terminal() {
		done := s.CompletedTime
		if done.IsZero() {
			done = updated
		}
		p["CompletedTime"] = edmTime(done)
	}
	return p, nil
}

// writeInstanceRow merges s into the instance's row (InsertOrMerge).
func (b *Backend) writeInstanceRow(ctx context.Context, s *backend.InstanceState, full bool, updated time.Time) error {
	pk := escapeKey(s.InstanceID)
	p, err := b.instanceProps(ctx, pk, s, full, updated)
	if err != nil {
		return err
	}
	body, err := entityJSON(pk, "", p)
	if err != nil {
		return fmt.Errorf("encode instance row: %w", err)
	}
	return b.retry(ctx, "write instance row", func() error {
		_, err := b.instT.UpsertEntity(ctx, body, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeMerge})
		return err
	})
}

// stateFromRow decodes an Instances row (without inflating blob URLs).
func stateFromRow(id string, p map[string]any) *backend.InstanceState {
	str := func(k string) string { s, _ := p[k].(string); return s }
	s := &backend.InstanceState{
		InstanceID: id, ExecutionID: str("ExecutionId"), Name: str("Name"), Version: str("Version"),
		RuntimeStatus: history.Status(str("RuntimeStatus")), Input: fromNull(str("Input")), Output: fromNull(str("Output")),
		CustomStatus: fromNull(str("CustomStatus")), CreatedTime: propTime(p, "CreatedTime"), LastUpdatedTime: propTime(p, "LastUpdatedTime"),
		CompletedTime: propTime(p, "CompletedTime"), ScheduledStartTime: propTime(p, "ScheduledStartTime"), Generation: propInt(p, "Generation"),
	}
	if t := str("Tags"); t != "" && t != "null" {
		_ = json.Unmarshal([]byte(t), &s.Tags)
	}
	return s
}

// inflateState downloads Input and Output held in blobs and decodes the
// failure details of a failed instance.
func (b *Backend) inflateState(ctx context.Context, s *backend.InstanceState, fetchInput bool) error {
	var err error
	if !fetchInput {
		s.Input = ""
	} else if s.Input, err = b.readInstanceValue(ctx, s.Input); err != nil {
		return err
	}
	if s.Output, err = b.readInstanceValue(ctx, s.Output); err != nil {
		return err
	}
	s.Input, s.Output = fromNull(s.Input), fromNull(s.Output)
	if s.RuntimeStatus == history.StatusFailed && s.Output != "" {
		var fd history.FailureDetails
		if json.Unmarshal([]byte(s.Output), &fd) == nil && (fd.ErrorType != "" || fd.ErrorMessage != "") {
			s.FailureDetails = &fd
		}
	}
	return nil
}

// readInstanceRow reads an instance's row, or returns ErrInstanceNotFound.
func (b *Backend) readInstanceRow(ctx context.Context, id string) (*backend.InstanceState, azcore.ETag, error) {
	res, err := b.instT.GetEntity(ctx, escapeKey(id), "", nil)
	if isStatus(err, http.StatusNotFound) {
		return nil, "", backend.ErrInstanceNotFound
	}
	if err != nil {
		return nil, "", fmt.Errorf("read instance %s: %w", id, err)
	}
	var e aztables.EDMEntity
	if err := json.Unmarshal(res.Value, &e); err != nil {
		return nil, "", fmt.Errorf("read instance %s: %w", id, err)
	}
	return stateFromRow(id, e.Properties), res.ETag, nil
}

// deriveState computes an instance's status from its history, as a worker
// would have written it; customStatus comes from the sentinel.
func deriveState(id string, hist []*history.Event, customStatus string) *backend.InstanceState {
	s := &backend.InstanceState{InstanceID: id, RuntimeStatus: history.StatusPending, CustomStatus: customStatus}
	for _, e := range hist {
		if !e.Timestamp.IsZero() {
			s.LastUpdatedTime = e.Timestamp
		}
		switch e.EventType {
		case history.ExecutionStarted:
			s.Name, s.Version, s.Input, s.CreatedTime, s.Generation, s.Tags = e.Name, e.Version, e.Input, e.Timestamp, e.Generation, e.Tags
			if e.OrchestrationInstance != nil {
				s.ExecutionID = e.OrchestrationInstance.ExecutionID
			}
			if e.ScheduledStartTime != nil {
				s.ScheduledStartTime = *e.ScheduledStartTime
			}
			s.RuntimeStatus = history.StatusRunning
		case history.ExecutionSuspended:
			s.RuntimeStatus = history.StatusSuspended
		case history.ExecutionResumed:
			s.RuntimeStatus = history.StatusRunning
		case history.ExecutionTerminated:
			s.RuntimeStatus, s.Output, s.CompletedTime = history.StatusTerminated, e.Input, e.Timestamp
		case history.ExecutionCompleted:
			s.RuntimeStatus = e.OrchestrationStatus
			if s.RuntimeStatus == "" {
				s.RuntimeStatus = history.StatusCompleted
			}
			if e.Result != "" || s.RuntimeStatus != history.StatusTerminated {
				s.Output = e.Result // a termination keeps its reason
			}
			s.FailureDetails, s.CompletedTime = e.FailureDetails, e.Timestamp
		}
	}
	return s
}

// terminalHistory reports whether hist ends its execution.
func terminalHistory(hist []*history.Event) bool {
	for i := len(hist) - 1; i >= 0; i-- {
		if hist[i].EventType == history.ExecutionCompleted {
			return true
		}
	}
	return false
}

// Recovery record of a checkpoint's outbound messages.

type outRecord struct {
	Target    history.Instance `json:"Target"`
	VisibleAt *time.Time       `json:"VisibleAt,omitempty"`
	// H is the index in history of an activity call identical to the
	// message (the common case, stored without repeating the input).
	H     *int            `json:"H,omitempty"`
	Event json.RawMessage `json:"Event,omitempty"`
}

func encodeOutbound(out []backend.Message, newHist []*history.Event, base int) (string, error) {
	if len(out) == 0 {
		return "[]", nil
	}
	recs := make([]outRecord, 0, len(out))
	for _, m := range out {
		r := outRecord{Target: history.Instance{InstanceID: m.TargetInstanceID, ExecutionID: m.TargetExecutionID}}
		if !m.VisibleAt.IsZero() {
			t := m.VisibleAt.UTC()
			r.VisibleAt = &t
		}
		if m.Event.EventType == history.TaskScheduled {
			for j, e := range newHist {
				if e.EventType == history.TaskScheduled && e.EventID == m.Event.EventID && e.Name == m.Event.Name && e.Input == m.Event.Input && e.Version == m.Event.Version {
					r.H = to.Ptr(base + j)
					break
				}
			}
		}
		if r.H == nil {
			ev, err := json.Marshal(toWire(m.Event))
			if err != nil {
				return "", err
			}
			r.Event = ev
		}
		recs = append(recs, r)
	}
	b, err := json.Marshal(recs)
	return string(b), err
}

func decodeOutbound(s string, hist []*history.Event) ([]outMsg, error) {
	if s == "" {
		return nil, nil
	}
	var recs []outRecord
	if err := json.Unmarshal([]byte(s), &recs); err != nil {
		return nil, fmt.Errorf("decode pending outbound: %w", err)
	}
	out := make([]outMsg, 0, len(recs))
	for _, r := range recs {
		m := outMsg{target: r.Target}
		if r.VisibleAt != nil {
			m.visibleAt = *r.VisibleAt
		}
		switch {
		case r.H != nil:
			if *r.H < 0 || *r.H >= len(hist) {
				return nil, fmt.Errorf("pending outbound refers to history row %d of %d", *r.H, len(hist))
			}
			m.event = hist[*r.H]
		case len(r.Event) > 0:
			var w wireEvent
			if err := json.Unmarshal(r.Event, &w); err != nil {
				return nil, fmt.Errorf("decode pending outbound: %w", err)
			}
			m.event = fromWire(&w)
		default:
			continue
		}
		out = append(out, m)
	}
	return out, nil
}

// answered reports whether hist already holds the answer to an outbound
// activity call or timer, so that recovery need not resend it.
func answered(hist []*history.Event, e *history.Event) bool {
	for _, h := range hist {
		switch e.EventType {
		case history.TaskScheduled:
			if (h.EventType == history.TaskCompleted || h.EventType == history.TaskFailed) && h.TaskScheduledID == e.EventID {
				return true
			}
		case history.TimerFired:
			if h.EventType == history.TimerFired && h.TimerID == e.TimerID {
				return true
			}
		}
	}
	return false
}

// recoverCheckpoint finishes a checkpoint whose Instances row write never
// happened (the process died after writing history): it resends the
// recorded outbound messages not yet answered and rewrites the row from
// history. A row updated at or after the checkpoint needs nothing.
func (b *Backend) recoverCheckpoint(ctx context.Context, id string, lh *loadedHistory) error {
	row, _, err := b.readInstanceRow(ctx, id)
	if err != nil && !errors.Is(err, backend.ErrInstanceNotFound) {
		return err
	}
	if row != nil && !row.LastUpdatedTime.Before(lh.checkpointAt) {
		return nil
	}
	pending, err := decodeOutbound(lh.pending, lh.events)
	if err != nil {
		b.log.Warn("pending outbound unreadable; not resent", "instance_id", id, "error", err)
	}
	pending = slices.DeleteFunc(pending, func(m outMsg) bool { return answered(lh.events, m.event) })
	if len(pending) > 0 {
		if err := b.sendAll(ctx, pending, history.Instance{InstanceID: id, ExecutionID: lh.executionID}); err != nil {
			return err
		}
		b.stats.resent.Add(int64(len(pending)))
	}
	st := deriveState(id, lh.events, lh.customStatus)
	full := row == nil || row.ExecutionID != st.ExecutionID
	if row != nil && !full {
		st.CreatedTime = row.CreatedTime
	}
	if err := b.writeInstanceRow(ctx, st, full, lh.checkpointAt); err != nil {
		return err
	}
	b.stats.repaired.Add(1)
	b.log.Info("instance recovered from an interrupted checkpoint", "instance_id", id, "status", st.RuntimeStatus, "resent", len(pending))
	return nil
}
