package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeRoot(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	root := writeRoot(t, map[string]string{HostFileName: `{"version":"2.0"}`})
	cfg, err := Load(root)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Host.RoutePrefix(); got != "api" {
		t.Errorf("route prefix = %q, want api", got)
	}
	if got := cfg.Host.Timeout(); got != DefaultFunctionTimeout {
		t.Errorf("timeout = %v, want %v", got, DefaultFunctionTimeout)
	}
	if got := cfg.Host.HubName(); got != "TestHubName" {
		t.Errorf("hub = %q", got)
	}
}

func TestLoadFullFiles(t *testing.T) {
	t.Parallel()
	root := writeRoot(t, map[string]string{
		HostFileName: "\ufeff" + `{"version":"2.0","functionTimeout":"00:00:30",
			"logging":{"logLevel":{"default":"Warning","Function.Hello":"Debug"}},
			"extensions":{"http":{"routePrefix":""},"queues":{"maxDequeueCount":3,"messageEncoding":"none"},
			"durableTask":{"hubName":"MyHub"}},
			"extensionBundle":{"id":"Microsoft.Azure.Functions.ExtensionBundle"}}`,
		LocalSettingsFileName: `{"IsEncrypted":false,"Values":{"AzureWebJobsStorage":"UseDevelopmentStorage=true","Greeting":"hi"},
			"Host":{"LocalHttpPort":7077,"CORS":"*"},"ConnectionStrings":{"Sql":{"ConnectionString":"x","ProviderName":"p"},"Plain":"y"}}`,
	})
	cfg, err := Load(root)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host.RoutePrefix() != "" || cfg.Host.Timeout() != 30*time.Second || cfg.Host.HubName() != "MyHub" {
		t.Errorf("host.json not applied: %+v", cfg.Host)
	}
	if cfg.Local.Host.LocalHTTPPort != 7077 || cfg.Local.Host.CORS != "*" {
		t.Errorf("local host = %+v", cfg.Local.Host)
	}
	if v, _ := cfg.Settings.Connection("Sql"); v != "x" {
		t.Errorf("connection Sql = %q", v)
	}
	if v, _ := cfg.Settings.Connection("Plain"); v != "y" {
		t.Errorf("connection Plain = %q", v)
	}
}

func TestLoadErrorsNameFileAndField(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		files map[string]string
		want  []string
	}{
		{"missing host.json", map[string]string{}, []string{"host.json", "not found"}},
		{"malformed host.json", map[string]string{HostFileName: "{\n \"version\": \"2.0\",\n}"}, []string{"host.json", "line 3"}},
		{"wrong type", map[string]string{HostFileName: `{"version":"2.0","functionTimeout":5}`}, []string{"host.json", "functionTimeout"}},
		{"wrong nested type", map[string]string{HostFileName: `{"version":"2.0","extensions":{"queues":{"batchSize":"many"}}}`}, []string{"host.json", "extensions.queues.batchSize", "number"}},
		{"bad version", map[string]string{HostFileName: `{"version":"1.0"}`}, []string{"host.json", "version"}},
		{"bad hub", map[string]string{HostFileName: `{"version":"2.0","extensions":{"durableTask":{"hubName":"9-bad"}}}`}, []string{"hubName"}},
		{"bad level", map[string]string{HostFileName: `{"version":"2.0","logging":{"logLevel":{"default":"Loud"}}}`}, []string{"logging.logLevel.default"}},
		{"encrypted settings", map[string]string{HostFileName: `{"version":"2.0"}`, LocalSettingsFileName: `{"IsEncrypted":true}`}, []string{"local.settings.json", "IsEncrypted"}},
		{"values not strings", map[string]string{HostFileName: `{"version":"2.0"}`, LocalSettingsFileName: `{"Values":{"A":1}}`}, []string{"local.settings.json", "Values"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Load(writeRoot(t, tc.files))
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error spans lines: %q", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not mention %q", msg, w)
				}
			}
		})
	}
}

func TestSettingsResolveEnvFirst(t *testing.T) {
	t.Parallel()
	env := map[string]string{"Shared": "from-env", "A__B": "nested"}
	s := NewSettings(func(k string) (string, bool) { v, ok := env[k]; return v, ok },
		LocalSettings{Values: map[string]string{"Shared": "from-file", "Only": "file"}})
	cases := []struct{ in, want string }{
		{"%Shared%", "from-env"},
		{"x-%Only%-y", "x-file-y"},
		{"%A:B%", "nested"},
		{"100%%", "100%"},
		{"plain", "plain"},
	}
	for _, tc := range cases {
		got, err := s.Resolve(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	_, err := s.Resolve("%Missing%")
	var miss *MissingSettingError
	if !errors.As(err, &miss) || miss.Name != "Missing" {
		t.Errorf("Resolve(%%Missing%%) error = %v, want MissingSettingError", err)
	}
}

func TestParseStorageConnectionString(t *testing.T) {
	t.Parallel()
	dev, err := ParseStorageConnectionString("UseDevelopmentStorage=true")
	if err != nil || dev.QueueURL != "http://127.0.0.1:10001/devstoreaccount1" || dev.Name != DevAccountName {
		t.Fatalf("dev = %+v, %v", dev, err)
	}
	custom := "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" + DevAccountKey +
		";BlobEndpoint=http://127.0.0.1:41000/devstoreaccount1;QueueEndpoint=http://127.0.0.1:41001/devstoreaccount1;TableEndpoint=http://127.0.0.1:41002/devstoreaccount1;"
	a, err := ParseStorageConnectionString(custom)
	if err != nil || a.TableURL != "http://127.0.0.1:41002/devstoreaccount1" {
		t.Fatalf("custom = %+v, %v", a, err)
	}
	cloud, err := ParseStorageConnectionString("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=" + DevAccountKey + ";EndpointSuffix=core.windows.net")
	if err != nil || cloud.BlobURL != "https://acct.blob.core.windows.net" {
		t.Fatalf("cloud = %+v, %v", cloud, err)
	}
	for _, bad := range []string{"AccountName=x", "garbage", "AccountName=a;AccountKey=!!!"} {
		if _, err := ParseStorageConnectionString(bad); err == nil {
			t.Errorf("%q parsed, want error", bad)
		}
	}
}

func TestTimeSpan(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in   string
		want time.Duration
	}{
		{"00:05:00", 5 * time.Minute},
		{"01:00:00", time.Hour},
		{"1.02:03:04", 26*time.Hour + 3*time.Minute + 4*time.Second},
		{"00:00:00.5", 500 * time.Millisecond},
	}
	for _, tc := range cases {
		got, err := ParseTimeSpan(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseTimeSpan(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"5", "00:61:00", "a:b:c", ""} {
		if _, err := ParseTimeSpan(bad); err == nil {
			t.Errorf("ParseTimeSpan(%q) succeeded", bad)
		}
	}
}

func TestRetryPolicyDelay(t *testing.T) {
	t.Parallel()
	lo, hi := TimeSpan(time.Second), TimeSpan(5*time.Second)
	p := RetryPolicy{Strategy: "exponentialBackoff", MaxRetryCount: 5, MinimumInterval: &lo, MaximumInterval: &hi}
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second}
	for i, w := range want {
		if got := p.Delay(i + 1); got != w {
			t.Errorf("Delay(%d) = %v, want %v", i+1, got, w)
		}
	}
}
