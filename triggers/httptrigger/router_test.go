package httptrigger

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/host/config"
	"github.com/stratus-dev/stratus/host/registry"
	"github.com/stratus-dev/stratus/triggers"
)

// setup registers fns behind a router and starts their listeners with a
// deliver that calls the handler directly.
func setup(t *testing.T, settings map[string]string, fns ...registry.Function) *httptest.Server {
	t.Helper()
	s := config.NewSettings(nil, config.LocalSettings{Values: settings})
	keys := LoadKeys(s, false)
	router := NewRouter("api", keys, nil)
	router.SetDeliver(func(ctx context.Context, inv *registry.Invocation) (any, error) {
		inv.ID = "inv-1"
		return inv.Function.Handler.Invoke(ctx, inv)
	})
	tr := triggers.NewRegistry()
	Register(tr, router)
	env := &bindings.Env{Settings: s}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var started []triggers.Listener
	for i := range fns {
		f, _ := tr.Lookup(fns[i].Trigger.Type)
		l, err := f(env, &fns[i])
		if err != nil {
			t.Fatalf("listener for %s: %v", fns[i].Name, err)
		}
		started = append(started, l)
	}
	ready := make(chan struct{}, len(started))
	for _, l := range started {
		go func() {
			ready <- struct{}{}
			_ = l.Listen(ctx, nil)
			done <- struct{}{}
		}()
	}
	for range started {
		<-ready
	}
	srv := httptest.NewServer(router)
	t.Cleanup(func() {
		srv.Close()
		cancel()
		for range started {
			<-done
		}
	})
	return srv
}

func echo(ctx context.Context, r *Request) (*Response, error) {
	return JSON(http.StatusOK, map[string]any{"params": r.Params, "q": r.Query.Get("q"), "body": string(r.Body)}), nil
}

func do(t *testing.T, method, url string, hdr map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(`{"a":1}`))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func TestRouterServesAndRejects(t *testing.T) {
	t.Parallel()
	srv := setup(t, map[string]string{MasterKeySetting: "master", HostKeysSetting: "hostkey", FunctionKeysSettingPrefix + "Keyed": "fnkey"},
		Function("Items", Trigger{Route: "items/{id:int}", Methods: []string{"GET"}, AuthLevel: Anonymous}, echo),
		Function("Keyed", Trigger{Route: "keyed", AuthLevel: FunctionLevel}, echo),
		Function("AdminOnly", Trigger{AuthLevel: AdminLevel}, echo),
		Function("Boom", Trigger{AuthLevel: Anonymous}, func(context.Context, *Request) (*Response, error) {
			return nil, errors.New("kaput")
		}),
	)
	cases := []struct {
		name, method, path string
		hdr                map[string]string
		status             int
		body               string
	}{
		{"route values and query", "GET", "/api/items/42?q=x", nil, 200, `"id":"42"`},
		{"constraint miss is 404", "GET", "/api/items/abc", nil, 404, "no function"},
		{"unknown route", "GET", "/api/nothing", nil, 404, "no function"},
		{"outside prefix", "GET", "/items/42", nil, 404, ""},
		{"wrong method", "POST", "/api/items/42", nil, 405, "not allowed"},
		{"missing key", "GET", "/api/keyed", nil, 401, "requires a function key"},
		{"bad key", "GET", "/api/keyed?code=nope", nil, 401, ""},
		{"function key in query", "POST", "/api/keyed?code=fnkey", nil, 200, `{\"a\":1}`},
		{"host key in header", "GET", "/api/keyed", map[string]string{"x-functions-key": "hostkey"}, 200, ""},
		{"header wins over query", "GET", "/api/keyed?code=fnkey", map[string]string{"x-functions-key": "wrong"}, 401, ""},
		{"admin needs master", "GET", "/api/AdminOnly?code=hostkey", nil, 401, ""},
		{"admin with master", "GET", "/api/AdminOnly?code=master", nil, 200, ""},
		{"handler error is 500 with invocation id", "GET", "/api/Boom", nil, 500, "inv-1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			status, body := do(t, tc.method, srv.URL+tc.path, tc.hdr)
			if status != tc.status || !strings.Contains(body, tc.body) {
				t.Fatalf("%s %s = %d %s; want %d containing %q", tc.method, tc.path, status, body, tc.status, tc.body)
			}
		})
	}
}

func TestRouteConflictsFailAtStartup(t *testing.T) {
	t.Parallel()
	s := config.NewSettings(nil, config.LocalSettings{})
	router := NewRouter("api", LoadKeys(s, false), nil)
	tr := triggers.NewRegistry()
	Register(tr, router)
	f, _ := tr.Lookup(TypeName)
	env := &bindings.Env{Settings: s}
	a := Function("A", Trigger{Route: "same", Methods: []string{"GET"}}, echo)
	b := Function("B", Trigger{Route: "same", Methods: []string{"get", "post"}}, echo)
	c := Function("C", Trigger{Route: "same", Methods: []string{"DELETE"}}, echo)
	if _, err := f(env, &a); err != nil {
		t.Fatal(err)
	}
	if _, err := f(env, &b); err == nil || !strings.Contains(err.Error(), "conflicts with function A") {
		t.Fatalf("overlapping methods: err = %v", err)
	}
	if _, err := f(env, &c); err != nil {
		t.Fatalf("disjoint methods must coexist: %v", err)
	}
}

func TestKeysDisabledAcceptsAll(t *testing.T) {
	t.Parallel()
	k := LoadKeys(config.NewSettings(nil, config.LocalSettings{}), true)
	if !k.Authorize(AdminLevel, "X", "") {
		t.Fatal("disabled keys must accept admin calls")
	}
	k = LoadKeys(config.NewSettings(nil, config.LocalSettings{}), false)
	if k.Authorize(FunctionLevel, "X", "") || !k.Generated || !k.Authorize(AdminLevel, "X", k.Master()) {
		t.Fatal("generated master key must be the only key")
	}
}
