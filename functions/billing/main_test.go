package billing

import (
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/bindings"
	"github.com/stratus-dev/stratus/bindings/azstorage"
	"github.com/stratus-dev/stratus/host/config"
	"github.com/stratus-dev/stratus/tests/azurite"
	"github.com/stratus-dev/stratus/tests/triggertest"
)

func TestMain(m *testing.M) { triggertest.Main(m) }

// storage returns clients for the Azurite of `make test` (STRATUS_TEST_STORAGE)
// or, without it, for one Azurite started for this package.
func storage(t *testing.T) *azstorage.Clients {
	t.Helper()
	var cs string
	if os.Getenv(azurite.EnvVar) != "" {
		cs = azurite.Shared(t).ConnectionString
	} else {
		cs = triggertest.Storage(t).ConnectionString
	}
	c, err := azstorage.Open(cs)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// prefix returns a storage prefix of this test's own.
func prefix() string {
	return "t" + strings.ToLower(strings.TrimPrefix(triggertest.Unique("x"), "x-"))
}

// testEnv is a host environment over c with app settings values (plus
// AzureWebJobsStorage).
func testEnv(t *testing.T, c *azstorage.Clients, values map[string]string) *bindings.Env {
	t.Helper()
	v := map[string]string{"AzureWebJobsStorage": c.Account.ConnectionString()}
	for k, x := range values {
		v[k] = x
	}
	level := slog.LevelWarn
	if testing.Verbose() {
		level = slog.LevelDebug
	}
	return &bindings.Env{
		Settings: config.NewSettings(nil, config.LocalSettings{Values: v}),
		Logger:   slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: level})),
		HostID:   "testhost",
		Storage:  func(string) (*azstorage.Clients, error) { return c, nil },
		Now:      time.Now,
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
