package storage_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azqueue"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/bindings/storage"
	"github.com/stratus-dev/stratus/host/config"
	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/tests/triggertest"
)

func TestMain(m *testing.M) { triggertest.Main(m) }

type row struct {
	PartitionKey, RowKey string
	Count                int
}

// invoke runs body as a function with binding data and the given handles,
// flushing outputs only when body succeeds.
func invoke(t *testing.T, env *bindings.Env, data map[string]any, body func(ctx context.Context) error, handles ...bindings.Declared) error {
	t.Helper()
	fn := &registry.Function{Name: "F", Trigger: bindings.Binding{Type: "manual"}, Bindings: handles,
		Handler: registry.HandlerFunc(func(ctx context.Context, _ *registry.Invocation) (any, error) { return nil, body(ctx) })}
	triggertest.Bind(t, env, fn)
	_, err := triggertest.Deliver(context.Background(), &registry.Invocation{Function: fn, Data: data})
	return err
}

func TestTableOutputAndInput(t *testing.T) {
	t.Parallel()
	env := triggertest.Env(t, nil)
	table := "T" + triggertest.Unique("tbl")[4:]
	out := storage.TableOutput("out", table, storage.PartitionKey("{customer}"))
	// Entities without a PartitionKey get the binding's; the second Add of
	// one key would fail, so only the upsert repeats it.
	err := invoke(t, env, map[string]any{"customer": "ada"}, func(ctx context.Context) error {
		for i := range 3 {
			if err := out.Add(ctx, map[string]any{"RowKey": fmt.Sprint(i), "Count": i}); err != nil {
				return err
			}
		}
		return out.Upsert(ctx, row{PartitionKey: "ada", RowKey: "0", Count: 10})
	}, out)
	if err != nil {
		t.Fatal(err)
	}

	point := storage.TableInput("in", table, storage.PartitionKey("{customer}"), storage.RowKey("{id}"))
	query := storage.TableInput("q", table, storage.PartitionKey("{customer}"), storage.Filter("Count ge 1"), storage.Take(1))
	all := storage.TableInput("all", table, storage.PartitionKey("ada"))
	err = invoke(t, env, map[string]any{"customer": "ada", "id": "0"}, func(ctx context.Context) error {
		var r row
		if err := point.Get(ctx, &r); err != nil || r.Count != 10 {
			return fmt.Errorf("point read = %+v, %v; want Count 10", r, err)
		}
		if err := point.Lookup(ctx, "ada", "missing", &r); !errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("missing entity: err = %v, want ErrNotFound", err)
		}
		var rows []row
		if err := query.Query(ctx, &rows); err != nil || len(rows) != 1 || rows[0].Count < 1 {
			return fmt.Errorf("query = %+v, %v; want 1 row with Count >= 1", rows, err)
		}
		if err := all.Query(ctx, &rows); err != nil || len(rows) != 3 {
			return fmt.Errorf("partition = %+v, %v; want 3 rows", rows, err)
		}
		return nil
	}, point, query, all)
	if err != nil {
		t.Fatal(err)
	}
}

func TestFailedInvocationWritesNothing(t *testing.T) {
	t.Parallel()
	env := triggertest.Env(t, nil)
	cont := triggertest.Unique("nothing")
	out := storage.BlobOutput("out", cont+"/{name}.txt")
	in := storage.BlobInput("in", cont+"/{name}.txt")
	boom := errors.New("boom")
	if err := invoke(t, env, map[string]any{"name": "a"}, func(ctx context.Context) error {
		if err := out.WriteString(ctx, "never"); err != nil {
			return err
		}
		return boom
	}, out); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if err := invoke(t, env, map[string]any{"name": "a"}, func(ctx context.Context) error {
		_, err := in.Read(ctx)
		if !errors.Is(err, storage.ErrNotFound) {
			return fmt.Errorf("read after a failed write: %v, want ErrNotFound", err)
		}
		return nil
	}, in); err != nil {
		t.Fatal(err)
	}
}

func TestBlobOutputThenInputWithExpressions(t *testing.T) {
	t.Parallel()
	env := triggertest.Env(t, nil)
	cont := triggertest.Unique("expr")
	out := storage.BlobOutput("out", cont+"/{dir}/{name}-{rand-guid}.txt")
	fixed := storage.BlobOutput("fixed", cont+"/{dir}/{name}.txt")
	in := storage.BlobInput("in", cont+"/{dir}/{name}.txt")
	data := map[string]any{"dir": "x", "name": "report"}
	if err := invoke(t, env, data, func(ctx context.Context) error {
		if err := out.WriteString(ctx, "random"); err != nil {
			return err
		}
		return fixed.WriteString(ctx, "content")
	}, out, fixed); err != nil {
		t.Fatal(err)
	}
	if err := invoke(t, env, data, func(ctx context.Context) error {
		s, err := in.ReadString(ctx)
		if err != nil || s != "content" {
			return fmt.Errorf("read = %q, %v", s, err)
		}
		return nil
	}, in); err != nil {
		t.Fatal(err)
	}
	// A missing {name} in the data is a clear error.
	err := invoke(t, env, map[string]any{"dir": "x"}, func(ctx context.Context) error { return fixed.WriteString(ctx, "x") }, fixed)
	if err == nil {
		t.Fatal("missing binding data accepted")
	}
}

func TestOutsideInvocationAndUnbound(t *testing.T) {
	t.Parallel()
	q := storage.QueueOutput("out", "q-unbound")
	if err := q.Add(context.Background(), "x"); !errors.Is(err, storage.ErrNotBound) {
		t.Fatalf("unbound: %v", err)
	}
	env := triggertest.Env(t, nil)
	if err := q.Bind(env); err != nil {
		t.Fatal(err)
	}
	if err := q.Add(context.Background(), "x"); !errors.Is(err, storage.ErrNoInvocation) {
		t.Fatalf("no invocation: %v", err)
	}
	if md := q.Metadata(); md.Type != "queue" || md.Direction != bindings.Out || md.String("queueName") != "q-unbound" {
		t.Fatalf("metadata = %+v", md)
	}
}

func TestEncodeDecode(t *testing.T) {
	t.Parallel()
	cases := []struct {
		body, enc, raw string
	}{
		{"hello", storage.EncodingBase64, "aGVsbG8="},
		{"hello", storage.EncodingNone, "hello"},
		{"", storage.EncodingBase64, ""},
	}
	for _, tc := range cases {
		if got := storage.EncodeMessage([]byte(tc.body), tc.enc); got != tc.raw {
			t.Errorf("Encode(%q, %s) = %q, want %q", tc.body, tc.enc, got, tc.raw)
		}
		if got, ok := storage.DecodeMessage(tc.raw, tc.enc); string(got) != tc.body || !ok {
			t.Errorf("Decode(%q, %s) = %q, %v", tc.raw, tc.enc, got, ok)
		}
	}
	if got, ok := storage.DecodeMessage("not base64!", storage.EncodingBase64); string(got) != "not base64!" || ok {
		t.Errorf("plain text under base64 = %q, %v; want it kept, ok false", got, ok)
	}
}

func TestNotifier(t *testing.T) {
	t.Parallel()
	var n storage.Notifier
	got := make(chan string, 4)
	cancel := n.Subscribe(storage.BlobTopic("c"), func(d string) { got <- d })
	n.Publish(storage.BlobTopic("c"), "a.txt")
	n.Publish(storage.BlobTopic("other"), "b.txt")
	cancel()
	n.Publish(storage.BlobTopic("c"), "c.txt")
	close(got)
	var all []string
	for d := range got {
		all = append(all, d)
	}
	if fmt.Sprint(all) != "[a.txt]" {
		t.Fatalf("deliveries = %v, want [a.txt]", all)
	}
}

func TestValidateQueueName(t *testing.T) {
	t.Parallel()
	for name, ok := range map[string]bool{"echo-in": true, "abc": true, "ab": false, "Echo": false, "a--b": false, "-ab": false, "ab-": false, "a_b": false} {
		if err := storage.ValidateQueueName(name); (err == nil) != ok {
			t.Errorf("%q: err = %v, want ok=%v", name, err, ok)
		}
	}
}

func TestQueueOutputManyMessagesAndSettings(t *testing.T) {
	t.Parallel()
	env := triggertest.Env(t, nil)
	prefix := triggertest.Unique("many")
	out := storage.QueueOutput("out", "%OutQueue%-{dir}")

	// A %Setting% that is not set stops the host when it binds, naming the
	// property and the setting.
	err := out.Bind(env)
	var miss *config.MissingSettingError
	if !errors.As(err, &miss) || miss.Name != "OutQueue" || !strings.Contains(err.Error(), "queueName") {
		t.Fatalf("Bind without the setting: err = %v, want a MissingSettingError for OutQueue naming queueName", err)
	}

	env.Settings = config.NewSettings(nil, config.LocalSettings{Values: map[string]string{"OutQueue": prefix}})
	if err := invoke(t, env, map[string]any{"dir": "x"}, func(ctx context.Context) error {
		return out.AddAll(ctx, "one", map[string]int{"two": 2}, []byte("three"))
	}, out); err != nil {
		t.Fatal(err)
	}
	c, err := env.Storage("")
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Queue.NewQueueClient(prefix+"-x").PeekMessages(context.Background(), &azqueue.PeekMessagesOptions{NumberOfMessages: to.Ptr(int32(32))})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range res.Messages {
		b, _ := storage.DecodeMessage(*m.MessageText, storage.EncodingBase64)
		got = append(got, string(b))
	}
	if want := `[one {"two":2} three]`; fmt.Sprint(got) != want {
		t.Fatalf("queue %s-x holds %v, want %s", prefix, got, want)
	}
}
