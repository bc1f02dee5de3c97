package azurestorage

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
)

// CreateInstance enqueues the ExecutionStarted message (visible at its
// ScheduledStartTime) and then inserts the Instances row as Pending. An id
// whose row is terminal is re-created (Generation + 1; the worker resets
// its history); one whose row is not terminal gives ErrInstanceExists and
// the message is withdrawn.
func (b *Backend) CreateInstance(ctx context.Context, started *history.Event) error {
	if started == nil || started.EventType != history.ExecutionStarted || started.OrchestrationInstance == nil ||
		started.OrchestrationInstance.InstanceID == "" || started.OrchestrationInstance.ExecutionID == "" {
		return errors.New("create instance: want an ExecutionStarted event with OrchestrationInstance set")
	}
	ev := started.Clone()
	if ev.Timestamp.IsZero() {
		ev.Timestamp = b.now()
	}
	inst := *ev.OrchestrationInstance
	var visibleAt time.Time
	if ev.ScheduledStartTime != nil {
		visibleAt = *ev.ScheduledStartTime
	}
	m, err := b.send(ctx, inst, ev, history.Instance{}, visibleAt, true)
	if err != nil {
		return fmt.Errorf("create instance %s: %w", inst.InstanceID, err)
	}
	withdraw := func() {
		if m != nil {
			_ = b.deleteMessage(context.WithoutCancel(ctx), m)
		}
	}
	st := &backend.InstanceState{
		InstanceID: inst.InstanceID, ExecutionID: inst.ExecutionID, Name: ev.Name, Version: ev.Version, RuntimeStatus: history.StatusPending,
		Input: ev.Input, CreatedTime: ev.Timestamp, Generation: ev.Generation, Tags: ev.Tags,
	}
	if ev.ScheduledStartTime != nil {
		st.ScheduledStartTime = *ev.ScheduledStartTime
	}
	pk := escapeKey(inst.InstanceID)
	at := b.now().Truncate(time.Millisecond)
	props, err := b.instanceProps(ctx, pk, st, true, at)
	if err != nil {
		withdraw()
		return fmt.Errorf("create instance %s: %w", inst.InstanceID, err)
	}
	body, _ := entityJSON(pk, "", props)
	fresh := false
	for attempt := 0; ; attempt++ {
		_, err = b.instT.AddEntity(ctx, body, nil)
		if err == nil {
			fresh = true
			break
		}
		if !isStatus(err, http.StatusConflict) {
			if b.retryable(ctx, err, attempt) {
				continue
			}
			withdraw()
			return fmt.Errorf("create instance %s: %w", inst.InstanceID, err)
		}
		row, etag, rerr := b.readInstanceRow(ctx, inst.InstanceID)
		if errors.Is(rerr, backend.ErrInstanceNotFound) {
			continue // purged meanwhile
		}
		if rerr != nil {
			withdraw()
			return fmt.Errorf("create instance %s: %w", inst.InstanceID, rerr)
		}
		if row.ExecutionID == inst.ExecutionID {
			break // a worker got to our message first
		}
		if !row.RuntimeStatus.Terminal() {
			withdraw()
			return fmt.Errorf("create instance %s: %w (status %s)", inst.InstanceID, backend.ErrInstanceExists, row.RuntimeStatus)
		}
		// Re-create a finished instance: the next generation, whose start
		// message says so.
		if ev.Generation <= row.Generation {
			withdraw()
			ev.Generation, st.Generation = row.Generation+1, row.Generation+1
			if m, err = b.send(ctx, inst, ev, history.Instance{}, visibleAt, true); err != nil {
				return fmt.Errorf("create instance %s: %w", inst.InstanceID, err)
			}
			if props, err = b.instanceProps(ctx, pk, st, true, at); err != nil {
				withdraw()
				return fmt.Errorf("create instance %s: %w", inst.InstanceID, err)
			}
			body, _ = entityJSON(pk, "", props)
		}
		_, err = b.instT.UpdateEntity(ctx, body, &aztables.UpdateEntityOptions{UpdateMode: aztables.UpdateModeReplace, IfMatch: to.Ptr(etag)})
		if err == nil {
			break
		}
		if !isStatus(err, http.StatusPreconditionFailed, http.StatusNotFound) && !b.retryable(ctx, err, attempt) {
			withdraw()
			return fmt.Errorf("create instance %s: %w", inst.InstanceID, err)
		}
	}
	if m != nil && m.local {
		if fresh {
			// No row existed, so no history is expected: the first
			// checkpoint Adds the sentinel (a 409 there reloads history).
			b.mu.Lock()
			if _, ok := b.cache[inst.InstanceID]; !ok && b.ownsLocked(m.queue) {
				b.cache[inst.InstanceID] = &cachedInstance{partition: m.queue}
			}
			b.mu.Unlock()
		}
		b.deliver(m)
	}
	return nil
}

// retryable waits before another attempt at a transient error.
func (b *Backend) retryable(ctx context.Context, err error, attempt int) bool {
	if isPermanent(err) || attempt > 8 {
		return false
	}
	return sleep(ctx, jitter(min(100*time.Millisecond<<attempt, 5*time.Second)))
}

// SendEvent enqueues an event for an instance's current execution.
func (b *Backend) SendEvent(ctx context.Context, m backend.Message) error {
	if m.Event == nil || m.TargetInstanceID == "" {
		return errors.New("send event: want a target instance and an event")
	}
	ev := m.Event.Clone()
	if ev.Timestamp.IsZero() {
		ev.Timestamp = b.now()
	}
	_, err := b.send(ctx, history.Instance{InstanceID: m.TargetInstanceID, ExecutionID: m.TargetExecutionID}, ev, history.Instance{}, m.VisibleAt, false)
	if err != nil {
		return fmt.Errorf("send %s to %s: %w", ev.EventType, m.TargetInstanceID, err)
	}
	return nil
}

// GetInstance reads an instance's status row; Output (and Input when asked)
// are inflated from blobs.
func (b *Backend) GetInstance(ctx context.Context, instanceID string, fetchInput bool) (*backend.InstanceState, error) {
	st, _, err := b.readInstanceRow(ctx, instanceID)
	if err != nil {
		return nil, err
	}
	if err := b.inflateState(ctx, st, fetchInput); err != nil {
		return nil, fmt.Errorf("instance %s: %w", instanceID, err)
	}
	return st, nil
}

// GetHistory reads the current execution's history.
func (b *Backend) GetHistory(ctx context.Context, instanceID string) ([]*history.Event, error) {
	lh, err := b.readHistory(ctx, instanceID)
	if err != nil {
		return nil, err
	}
	if lh.etag == "" {
		if _, _, err := b.readInstanceRow(ctx, instanceID); err != nil {
			return nil, err
		}
	}
	return lh.events, nil
}

// queryToken is the decoded continuation token of QueryInstances.
type queryToken struct {
	PK string `json:"pk"`
	RK string `json:"rk"`
}

// prefixUpper is the smallest string greater than every string with prefix p.
func prefixUpper(p string) string {
	r := []rune(p)
	r[len(r)-1]++
	return string(r)
}

func instanceFilter(q backend.InstanceQuery, onlyTerminal bool) string {
	var parts []string
	statuses := q.RuntimeStatus
	if onlyTerminal {
		var t []history.Status
		for _, s := range statuses {
			if s.Terminal() {
				t = append(t, s)
			}
		}
		if len(t) == 0 {
			t = []history.Status{history.StatusCompleted, history.StatusFailed, history.StatusTerminated, history.StatusCanceled}
		}
		statuses = t
	}
	if len(statuses) > 0 {
		var or []string
		for _, s := range statuses {
			or = append(or, "RuntimeStatus eq "+odataString(string(s)))
		}
		parts = append(parts, "("+strings.Join(or, " or ")+")")
	}
	if !q.CreatedFrom.IsZero() {
		parts = append(parts, "CreatedTime ge datetime'"+q.CreatedFrom.UTC().Format(time.RFC3339Nano)+"'")
	}
	if !q.CreatedTo.IsZero() {
		parts = append(parts, "CreatedTime le datetime'"+q.CreatedTo.UTC().Format(time.RFC3339Nano)+"'")
	}
	if p := q.InstanceIDPrefix; p != "" {
		ep := escapeKey(p)
		parts = append(parts, "PartitionKey ge "+odataString(ep)+" and PartitionKey lt "+odataString(prefixUpper(ep)))
	}
	switch {
	case q.EntitiesOnly:
		parts = append(parts, "PartitionKey ge '@' and PartitionKey lt 'A'")
	case !q.IncludeEntities:
		parts = append(parts, "(PartitionKey lt '@' or PartitionKey ge 'A')")
	}
	return strings.Join(parts, " and ")
}

// QueryInstances lists instances by status, created time and id prefix.
// Entities are left out unless asked for. The continuation token is opaque.
func (b *Backend) QueryInstances(ctx context.Context, q backend.InstanceQuery) (*backend.InstancePage, error) {
	return b.queryInstances(ctx, q, false)
}

func (b *Backend) queryInstances(ctx context.Context, q backend.InstanceQuery, onlyTerminal bool) (*backend.InstancePage, error) {
	size := q.PageSize
	if size <= 0 {
		size = 100
	}
	opts := &aztables.ListEntitiesOptions{Top: to.Ptr(int32(min(size, 1000)))}
	if f := instanceFilter(q, onlyTerminal); f != "" {
		opts.Filter = &f
	}
	if !q.FetchInput {
		opts.Select = to.Ptr("PartitionKey,RowKey,Name,Version,ExecutionId,RuntimeStatus,CreatedTime,LastUpdatedTime,CompletedTime,Output,CustomStatus,ScheduledStartTime,Generation,Tags")
	}
	if q.ContinuationToken != "" {
		raw, err := base64.RawURLEncoding.DecodeString(q.ContinuationToken)
		var tok queryToken
		if err != nil || json.Unmarshal(raw, &tok) != nil || tok.PK == "" {
			return nil, fmt.Errorf("query instances: invalid continuation token")
		}
		opts.NextPartitionKey, opts.NextRowKey = &tok.PK, &tok.RK
	}
	page := &backend.InstancePage{}
	pager := b.instT.NewListEntitiesPager(opts)
	if !pager.More() {
		return page, nil
	}
	res, err := pager.NextPage(ctx)
	if err != nil {
		return nil, fmt.Errorf("query instances: %w", err)
	}
	for _, raw := range res.Entities {
		var e aztables.EDMEntity
		if err := json.Unmarshal(raw, &e); err != nil {
			return nil, fmt.Errorf("query instances: %w", err)
		}
		st := stateFromRow(unescapeKey(e.PartitionKey), e.Properties)
		if err := b.inflateState(ctx, st, q.FetchInput); err != nil {
			return nil, fmt.Errorf("query instances: %w", err)
		}
		page.Instances = append(page.Instances, st)
	}
	if res.NextPartitionKey != nil && *res.NextPartitionKey != "" {
		tok := queryToken{PK: *res.NextPartitionKey}
		if res.NextRowKey != nil {
			tok.RK = *res.NextRowKey
		}
		raw, _ := json.Marshal(tok)
		page.ContinuationToken = base64.RawURLEncoding.EncodeToString(raw)
	}
	return page, nil
}

// PurgeInstance deletes an instance's History rows, its Instances row and
// its large-message blobs, or returns ErrInstanceNotFound.
func (b *Backend) PurgeInstance(ctx context.Context, instanceID string) error {
	pk := escapeKey(instanceID)
	_, _, rowErr := b.readInstanceRow(ctx, instanceID)
	if rowErr != nil && !errors.Is(rowErr, backend.ErrInstanceNotFound) {
		return fmt.Errorf("purge %s: %w", instanceID, rowErr)
	}
	rows, err := b.deleteHistory(ctx, pk)
	if err != nil {
		return fmt.Errorf("purge %s: %w", instanceID, err)
	}
	if rowErr != nil && rows == 0 {
		return backend.ErrInstanceNotFound
	}
	if _, err := b.deleteLargeBlobs(ctx, pk); err != nil {
		return fmt.Errorf("purge %s: %w", instanceID, err)
	}
	if _, err := b.instT.DeleteEntity(ctx, pk, "", &aztables.DeleteEntityOptions{IfMatch: to.Ptr(azcore.ETagAny)}); err != nil && !isStatus(err, http.StatusNotFound) {
		return fmt.Errorf("purge %s: %w", instanceID, err)
	}
	b.invalidate(instanceID)
	return nil
}

// deleteHistory deletes every History row of a partition, 100 per
// transaction, and returns how many it deleted.
func (b *Backend) deleteHistory(ctx context.Context, pk string) (int, error) {
	pager := b.histT.NewListEntitiesPager(&aztables.ListEntitiesOptions{Filter: to.Ptr("PartitionKey eq " + odataString(pk)), Select: to.Ptr("PartitionKey,RowKey")})
	var keys []string
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return 0, fmt.Errorf("list history: %w", err)
		}
		for _, raw := range page.Entities {
			var e aztables.Entity
			if err := json.Unmarshal(raw, &e); err != nil {
				return 0, err
			}
			keys = append(keys, e.RowKey)
		}
	}
	for i := 0; i < len(keys); i += 100 {
		var actions []aztables.TransactionAction
		for _, rk := range keys[i:min(i+100, len(keys))] {
			body, _ := json.Marshal(aztables.Entity{PartitionKey: pk, RowKey: rk})
			actions = append(actions, aztables.TransactionAction{ActionType: aztables.TransactionTypeDelete, Entity: body, IfMatch: to.Ptr(azcore.ETagAny)})
		}
		if _, err := submit(ctx, b.histT, actions); err != nil {
			return i, fmt.Errorf("delete history: %w", err)
		}
	}
	return len(keys), nil
}

// PurgeInstances purges every terminal instance the filter selects and
// returns how many it purged.
func (b *Backend) PurgeInstances(ctx context.Context, f backend.PurgeFilter) (int, error) {
	q := backend.InstanceQuery{RuntimeStatus: f.RuntimeStatus, CreatedFrom: f.CreatedFrom, CreatedTo: f.CreatedTo, PageSize: 500, IncludeEntities: true}
	var ids []string
	for {
		page, err := b.queryInstances(ctx, q, true)
		if err != nil {
			return 0, fmt.Errorf("purge instances: %w", err)
		}
		for _, s := range page.Instances {
			ids = append(ids, s.InstanceID)
		}
		if page.ContinuationToken == "" {
			break
		}
		q.ContinuationToken = page.ContinuationToken
	}
	var (
		mu    sync.Mutex
		n     int
		first error
		wg    sync.WaitGroup
	)
	sem := make(chan struct{}, 8)
	for _, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := b.PurgeInstance(ctx, id)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				n++
			case !errors.Is(err, backend.ErrInstanceNotFound) && first == nil:
				first = err
			}
		})
	}
	wg.Wait()
	return n, first
}

// SetInstanceState overwrites the status fields of an existing row (Name,
// Version and ExecutionId when given, RuntimeStatus, CustomStatus, Output
// and the times), or returns ErrInstanceNotFound.
func (b *Backend) SetInstanceState(ctx context.Context, s *backend.InstanceState) error {
	pk := escapeKey(s.InstanceID)
	p := map[string]any{"LastUpdatedTime": edmTime(b.now().Truncate(time.Millisecond)), "TaskHubName": b.opts.HubName}
	if s.Name != "" {
		p["Name"], p["Version"] = s.Name, s.Version
	}
	if s.ExecutionID != "" {
		p["ExecutionId"] = s.ExecutionID
	}
	if s.RuntimeStatus != "" {
		p["RuntimeStatus"] = string(s.RuntimeStatus)
	}
	p["CustomStatus"] = orNull(s.CustomStatus)
	if out := outputOf(s); out != "" || s.RuntimeStatus.Terminal() {
		v, err := b.instanceValue(ctx, pk, s.ExecutionID, "Output", orNull(out))
		if err != nil {
			return err
		}
		p["Output"] = v
	}
	if s.Input != "" {
		v, err := b.instanceValue(ctx, pk, s.ExecutionID, "Input", s.Input)
		if err != nil {
			return err
		}
		p["Input"] = v
	}
	if !s.CompletedTime.IsZero() {
		p["CompletedTime"] = edmTime(s.CompletedTime)
	} else if s.RuntimeStatus.Terminal() {
		p["CompletedTime"] = p["LastUpdatedTime"]
	}
	body, err := entityJSON(pk, "", p)
	if err != nil {
		return err
	}
	_, err = b.instT.UpdateEntity(ctx, body, &aztables.UpdateEntityOptions{UpdateMode: aztables.UpdateModeMerge, IfMatch: to.Ptr(azcore.ETagAny)})
	if isStatus(err, http.StatusNotFound) {
		return backend.ErrInstanceNotFound
	}
	if err != nil {
		return fmt.Errorf("set state of %s: %w", s.InstanceID, err)
	}
	return nil
}
