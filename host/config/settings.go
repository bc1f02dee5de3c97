package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// LocalSettings is local.settings.json.
type LocalSettings struct {
	// IsEncrypted must be false: Stratus does not decrypt settings.
	IsEncrypted *bool `json:"IsEncrypted"`
	// Values are app settings (string to string).
	Values map[string]string `json:"Values"`
	// Host holds local host options.
	Host LocalHost `json:"Host"`
	// ConnectionStrings maps names to connection strings; a value is a string
	// or {"ConnectionString": ..., "ProviderName": ...}.
	ConnectionStrings map[string]ConnectionStringValue `json:"ConnectionStrings"`
}

// LocalHost is the "Host" section of local.settings.json.
type LocalHost struct {
	// LocalHTTPPort is the default HTTP port (7071 when zero).
	LocalHTTPPort int `json:"LocalHttpPort"`
	// CORS is a comma-separated list of allowed origins, or "*".
	CORS string `json:"CORS"`
	// CORSCredentials allows credentials on cross-origin requests.
	CORSCredentials bool `json:"CORSCredentials"`
}

// ConnectionStringValue is a connection string entry, written either as a
// plain string or as an object.
type ConnectionStringValue struct {
	ConnectionString string `json:"ConnectionString"`
	ProviderName     string `json:"ProviderName,omitempty"`
}

// UnmarshalJSON accepts a string or an object.
func (c *ConnectionStringValue) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		c.ConnectionString = s
		return nil
	}
	type plain ConnectionStringValue
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return errors.New("expected a string or {\"ConnectionString\": \"...\"}")
	}
	*c = ConnectionStringValue(p)
	return nil
}

// Validate checks local.settings.json.
func (l *LocalSettings) Validate() error {
	if l.IsEncrypted != nil && *l.IsEncrypted {
		return &FieldError{Field: "IsEncrypted", Msg: "encrypted settings are not supported; set it to false and store values in plain text"}
	}
	if p := l.Host.LocalHTTPPort; p < 0 || p > 65535 {
		return &FieldError{Field: "Host.LocalHttpPort", Msg: fmt.Sprintf("%d is not a TCP port", p)}
	}
	return nil
}

// LookupFunc looks a name up, like os.LookupEnv.
type LookupFunc func(name string) (string, bool)

// Settings resolves app settings: the process environment first, then
// local.settings.json Values. Names are matched exactly first, then with ":"
// and "__" treated as the same separator (as .NET configuration does).
type Settings struct {
	env    LookupFunc
	values map[string]string
	conns  map[string]ConnectionStringValue
}

// NewSettings builds settings over an environment lookup and local settings.
func NewSettings(env LookupFunc, local LocalSettings) *Settings {
	if env == nil {
		env = func(string) (string, bool) { return "", false }
	}
	return &Settings{env: env, values: local.Values, conns: local.ConnectionStrings}
}

// Lookup returns the app setting name.
func (s *Settings) Lookup(name string) (string, bool) {
	for _, n := range nameForms(name) {
		if v, ok := s.env(n); ok {
			return v, true
		}
	}
	for _, n := range nameForms(name) {
		if v, ok := s.values[n]; ok {
			return v, true
		}
	}
	return "", false
}

// Get returns the app setting name, or "" when it is not set.
func (s *Settings) Get(name string) string {
	v, _ := s.Lookup(name)
	return v
}

// Bool reports whether the setting is "true" or "1".
func (s *Settings) Bool(name string) bool {
	v := strings.ToLower(strings.TrimSpace(s.Get(name)))
	return v == "true" || v == "1"
}

func nameForms(name string) []string {
	forms := []string{name}
	if strings.Contains(name, ":") {
		forms = append(forms, strings.ReplaceAll(name, ":", "__"))
	}
	if strings.Contains(name, "__") {
		forms = append(forms, strings.ReplaceAll(name, "__", ":"))
	}
	return forms
}

// MissingSettingError reports a %Setting% or connection that is referenced but not set.
type MissingSettingError struct {
	Name string
}

func (e *MissingSettingError) Error() string {
	return fmt.Sprintf("app setting %q is referenced but not set (set it in the environment or in local.settings.json Values)", e.Name)
}

// Resolve replaces every %Name% in s with the app setting Name. "%%" stays a
// literal percent sign. A setting that is not set is a *MissingSettingError.
func (s *Settings) Resolve(v string) (string, error) {
	if !strings.Contains(v, "%") {
		return v, nil
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(v, '%')
		if i < 0 {
			b.WriteString(v)
			return b.String(), nil
		}
		b.WriteString(v[:i])
		rest := v[i+1:]
		j := strings.IndexByte(rest, '%')
		if j < 0 {
			return "", fmt.Errorf("unterminated %%setting%% expression in %q", v)
		}
		name := rest[:j]
		if name == "" {
			b.WriteByte('%')
		} else {
			val, ok := s.Lookup(name)
			if !ok {
				return "", &MissingSettingError{Name: name}
			}
			b.WriteString(val)
		}
		v = rest[j+1:]
	}
}

// Connection returns the connection string named by a binding's "connection"
// property, searched as the Azure Functions host does: ConnectionStrings
// "AzureWebJobs<name>", setting "AzureWebJobs<name>", ConnectionStrings
// "<name>", setting "<name>". An empty name means "Storage", i.e.
// AzureWebJobsStorage.
func (s *Settings) Connection(name string) (string, error) {
	if name == "" {
		name = "Storage"
	}
	if v, ok := s.conns["AzureWebJobs"+name]; ok {
		return v.ConnectionString, nil
	}
	if v, ok := s.Lookup("AzureWebJobs" + name); ok && v != "" {
		return v, nil
	}
	if v, ok := s.conns[name]; ok {
		return v.ConnectionString, nil
	}
	if v, ok := s.Lookup(name); ok && v != "" {
		return v, nil
	}
	if v, ok := s.Lookup("ConnectionStrings:" + name); ok && v != "" {
		return v, nil
	}
	if name == "Storage" {
		return "", &MissingSettingError{Name: "AzureWebJobsStorage"}
	}
	return "", &MissingSettingError{Name: name}
}

// ParseLevel maps an Azure Functions log level name to a slog level. "None"
// maps to a level above every record.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "trace", "debug":
		return slog.LevelDebug, nil
	case "information", "info":
		return slog.LevelInfo, nil
	case "warning", "warn":
		return slog.LevelWarn, nil
	case "error", "critical":
		return slog.LevelError, nil
	case "none":
		return slog.LevelError + 100, nil
	}
	return 0, fmt.Errorf("unknown log level %q (want Trace, Debug, Information, Warning, Error, Critical or None)", s)
}
