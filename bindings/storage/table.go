package storage

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/data/aztables"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/host/registry"
)

// TableOut is a table output binding (function.json type "table", direction out).
type TableOut struct {
	handle
}

// TableIn is a table input binding (function.json type "table", direction in).
type TableIn struct {
	handle
}

var (
	_ bindings.Binder = (*TableOut)(nil)
	_ bindings.Binder = (*TableIn)(nil)
)

// TableOutput declares a table output binding writing to tableName (a
// binding expression). [PartitionKey] and [RowKey] options give keys to
// entities that carry none. The table is created if missing.
func TableOutput(name, tableName string, opts ...Option) *TableOut {
	return &TableOut{handle: newHandle("table", bindings.Out, name, map[string]any{"tableName": tableName}, opts)}
}

// TableInput declares a table input binding reading tableName. With
// [PartitionKey] and [RowKey] it reads one entity ([TableIn.Get]); with
// [PartitionKey], [Filter] and [Take] it runs a query ([TableIn.Query]).
func TableInput(name, tableName string, opts ...Option) *TableIn {
	return &TableIn{handle: newHandle("table", bindings.In, name, map[string]any{"tableName": tableName}, opts)}
}

// Add buffers an insert of entity (a struct or map with PartitionKey and
// RowKey, as JSON); inserting an existing entity fails the flush, and so the
// invocation.
func (t *TableOut) Add(ctx context.Context, entity any) error { return t.write(ctx, entity, false) }

// Upsert buffers an insert-or-replace of entity.
func (t *TableOut) Upsert(ctx context.Context, entity any) error { return t.write(ctx, entity, true) }

func (t *TableOut) write(ctx context.Context, entity any, upsert bool) error {
	if err := t.ready(); err != nil {
		return err
	}
	inv, err := invocation(ctx)
	if err != nil {
		return err
	}
	table, err := t.expand(ctx, t.md.String("tableName"))
	if err != nil {
		return err
	}
	b, err := json.Marshal(entity)
	if err != nil {
		return fmt.Errorf("table binding %q: encode entity: %w", t.md.Name, err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("table binding %q: an entity must be a JSON object: %w", t.md.Name, err)
	}
	for _, k := range []string{"PartitionKey", "RowKey"} {
		if _, ok := m[k]; ok {
			continue
		}
		expr := t.md.String(strings.ToLower(k[:1]) + k[1:])
		if expr == "" {
			return fmt.Errorf("table binding %q: entity has no %s and the binding sets none", t.md.Name, k)
		}
		if m[k], err = t.expand(ctx, expr); err != nil {
			return err
		}
	}
	if b, err = json.Marshal(m); err != nil {
		return fmt.Errorf("table binding %q: encode entity: %w", t.md.Name, err)
	}
	svc := t.clients.Table
	inv.Defer(registry.PendingFunc(func(ctx context.Context) error {
		tc := svc.NewClient(table)
		do := func() error {
			if upsert {
				_, err := tc.UpsertEntity(ctx, b, &aztables.UpsertEntityOptions{UpdateMode: aztables.UpdateModeReplace})
				return err
			}
			_, err := tc.AddEntity(ctx, b, nil)
			return err
		}
		err := do()
		if ErrorCode(err) == string(aztables.TableNotFound) || (IsNotFound(err) && ErrorCode(err) != string(aztables.ResourceNotFound)) {
			if err = CreateTable(ctx, svc, table); err != nil {
				return err
			}
			err = do()
		}
		if err != nil {
			return fmt.Errorf("table %s: write entity: %w", table, err)
		}
		return nil
	}))
	return nil
}

// CreateTable creates a table; an existing one is not an error.
func CreateTable(ctx context.Context, svc *aztables.ServiceClient, table string) error {
	if _, err := svc.CreateTable(ctx, table, nil); err != nil && !IsConflict(err) {
		return fmt.Errorf("create table %s: %w", table, err)
	}
	return nil
}

// AddEntityOnce inserts entity (JSON with PartitionKey and RowKey) into t,
// creating the table if it is missing. An entity that exists already is
// not an error: the write is idempotent, as a step that may be retried or
// redelivered needs.
func AddEntityOnce(ctx context.Context, t *aztables.Client, entity []byte) error {
	_, err := t.AddEntity(ctx, entity, nil)
	if IsNotFound(err) {
		if _, cerr := t.CreateTable(ctx, nil); cerr != nil && !IsConflict(cerr) {
			return fmt.Errorf("create table: %w", cerr)
		}
		_, err = t.AddEntity(ctx, entity, nil)
	}
	if err != nil && !IsConflict(err) {
		return err
	}
	return nil
}

// Get reads the entity the binding's partitionKey and rowKey expressions
// name into out (a pointer to a struct or map, decoded from JSON). A missing
// entity or table wraps [ErrNotFound].
func (t *TableIn) Get(ctx context.Context, out any) error {
	pkExpr, rkExpr := t.md.String("partitionKey"), t.md.String("rowKey")
	if pkExpr == "" || rkExpr == "" {
		return fmt.Errorf("table binding %q: Get needs partitionKey and rowKey", t.md.Name)
	}
	pk, err := t.expand(ctx, pkExpr)
	if err != nil {
		return err
	}
	rk, err := t.expand(ctx, rkExpr)
	if err != nil {
		return err
	}
	return t.Lookup(ctx, pk, rk, out)
}

// Lookup reads the entity (pk, rk) into out. A missing entity or table wraps
// [ErrNotFound].
func (t *TableIn) Lookup(ctx context.Context, pk, rk string, out any) error {
	if err := t.ready(); err != nil {
		return err
	}
	table, err := t.expand(ctx, t.md.String("tableName"))
	if err != nil {
		return err
	}
	res, err := t.clients.Table.NewClient(table).GetEntity(ctx, pk, rk, nil)
	if IsNotFound(err) {
		return fmt.Errorf("table %s entity (%s, %s): %w", table, pk, rk, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("table %s: read entity: %w", table, err)
	}
	if err := json.Unmarshal(res.Value, out); err != nil {
		return fmt.Errorf("table %s: decode entity: %w", table, err)
	}
	return nil
}

// Query runs the binding's query into out, a pointer to a slice: entities of
// partitionKey (when set) matching filter (when set), at most take (when
// set). A missing table gives an empty result.
func (t *TableIn) Query(ctx context.Context, out any) error {
	if err := t.ready(); err != nil {
		return err
	}
	rv := reflect.ValueOf(out)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Slice {
		return fmt.Errorf("table binding %q: Query needs a pointer to a slice, got %T", t.md.Name, out)
	}
	table, err := t.expand(ctx, t.md.String("tableName"))
	if err != nil {
		return err
	}
	var clauses []string
	if e := t.md.String("partitionKey"); e != "" {
		pk, err := t.expand(ctx, e)
		if err != nil {
			return err
		}
		clauses = append(clauses, "PartitionKey eq '"+strings.ReplaceAll(pk, "'", "''")+"'")
	}
	if e := t.md.String("filter"); e != "" {
		f, err := t.expand(ctx, e)
		if err != nil {
			return err
		}
		clauses = append(clauses, "("+f+")")
	}
	take := t.md.Int("take", 0)
	opts := &aztables.ListEntitiesOptions{}
	if len(clauses) > 0 {
		f := strings.Join(clauses, " and ")
		opts.Filter = &f
	}
	if take > 0 {
		top := int32(min(take, 1000))
		opts.Top = &top
	}
	var raw []json.RawMessage
	pager := t.clients.Table.NewClient(table).NewListEntitiesPager(opts)
	for pager.More() && (take <= 0 || len(raw) < take) {
		page, err := pager.NextPage(ctx)
		if IsNotFound(err) {
			break
		}
		if err != nil {
			return fmt.Errorf("table %s: query: %w", table, err)
		}
		for _, e := range page.Entities {
			raw = append(raw, e)
		}
	}
	if take > 0 && len(raw) > take {
		raw = raw[:take]
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("table %s: decode entities: %w", table, err)
	}
	return nil
}
