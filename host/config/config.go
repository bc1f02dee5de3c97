// Package config owns the host's configuration: host.json, local.settings.json,
// app settings and connection strings, with the meanings the Azure Functions host
// gives them.
//
// Loading is strict about what the host relies on and lenient about the rest: a
// missing or malformed file, or a field of the wrong JSON type, is an error that
// names the file and the field; keys the host does not know are ignored, as the
// Azure Functions host ignores them.
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"
)

// File names inside the script root.
const (
	HostFileName          = "host.json"
	LocalSettingsFileName = "local.settings.json"
)

// Config is everything the host reads at start-up from its script root.
type Config struct {
	// Root is the absolute script root the files were read from.
	Root string
	// Host is the parsed host.json.
	Host HostJSON
	// Local is the parsed local.settings.json; zero when the file is absent
	// (it is optional, as in a deployed app).
	Local LocalSettings
	// Settings resolves app settings: the process environment first, then
	// local.settings.json Values.
	Settings *Settings
}

// Load reads host.json (required) and local.settings.json (optional) from root.
func Load(root string) (*Config, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("script root %q: %w", root, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("script root %s: %w", abs, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("script root %s: not a directory", abs)
	}
	cfg := &Config{Root: abs, Host: DefaultHostJSON()}
	hostPath := filepath.Join(abs, HostFileName)
	data, err := os.ReadFile(hostPath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &FileError{File: hostPath, Err: errors.New("file not found (every script root needs a host.json with \"version\": \"2.0\")")}
		}
		return nil, &FileError{File: hostPath, Err: err}
	}
	if err := decodeJSON(data, &cfg.Host); err != nil {
		return nil, &FileError{File: hostPath, Err: err}
	}
	if err := cfg.Host.Validate(); err != nil {
		return nil, &FileError{File: hostPath, Err: err}
	}

	localPath := filepath.Join(abs, LocalSettingsFileName)
	data, err = os.ReadFile(localPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, &FileError{File: localPath, Err: err}
	default:
		if err := decodeJSON(data, &cfg.Local); err != nil {
			return nil, &FileError{File: localPath, Err: err}
		}
		if err := cfg.Local.Validate(); err != nil {
			return nil, &FileError{File: localPath, Err: err}
		}
	}
	cfg.Settings = NewSettings(os.LookupEnv, cfg.Local)
	return cfg, nil
}

// FileError is a configuration problem in one file.
type FileError struct {
	// File is the path of the file.
	File string
	// Err is the problem; several problems (errors.Join) are reported on
	// one line, separated by "; ".
	Err error
}

func (e *FileError) Error() string {
	return e.File + ": " + strings.ReplaceAll(e.Err.Error(), "\n", "; ")
}

func (e *FileError) Unwrap() error { return e.Err }

// FieldError names the JSON path of a field that is wrong.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return "field " + e.Field + ": " + e.Msg }

// decodeJSON decodes data into v and turns the decoder's errors into messages
// that name the field and the line.
func decodeJSON(data []byte, v any) error {
	// Functions tooling writes files with a UTF-8 byte-order mark.
	data = trimBOM(data)
	if err := json.Unmarshal(data, v); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			line, col := position(data, syn.Offset)
			return fmt.Errorf("malformed JSON at line %d, column %d: %s", line, col, syn.Error())
		case errors.As(err, &typ):
			field := typ.Field
			if field == "" {
				field = "(root)"
			}
			return &FieldError{Field: field, Msg: fmt.Sprintf("expected %s, got %s", describeType(typ), typ.Value)}
		default:
			return err
		}
	}
	return nil
}

func describeType(e *json.UnmarshalTypeError) string {
	if e.Type == nil {
		return "a different type"
	}
	switch e.Type.Kind().String() {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "int", "int64", "int32", "float64":
		return "a number"
	case "slice":
		return "an array"
	case "map", "struct", "ptr":
		return "an object"
	}
	return e.Type.String()
}

func trimBOM(b []byte) []byte {
	if len(b) >= 3 && b[0] == 0xEF && b[1] == 0xBB && b[2] == 0xBF {
		return b[3:]
	}
	return b
}

func position(data []byte, off int64) (line, col int) {
	line, col = 1, 1
	for i := int64(0); i < off && i < int64(len(data)); i++ {
		if data[i] == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return line, col
}

// TimeSpan is a duration written as a .NET TimeSpan ("hh:mm:ss", "d.hh:mm:ss",
// "hh:mm:ss.fff") in JSON. The value -1 (number or string) means unbounded and
// is represented as a negative duration.
type TimeSpan time.Duration

// Duration returns the value as a time.Duration.
func (t TimeSpan) Duration() time.Duration { return time.Duration(t) }

// UnmarshalJSON accepts "hh:mm:ss" strings and -1.
func (t *TimeSpan) UnmarshalJSON(b []byte) error {
	s := strings.TrimSpace(string(b))
	if s == "-1" || s == `"-1"` {
		*t = -1
		return nil
	}
	if s == "null" {
		return nil
	}
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return &json.UnmarshalTypeError{Value: "value " + s + " (want a time span string like \"00:05:00\")", Type: reflect.TypeFor[string]()}
	}
	d, err := ParseTimeSpan(str)
	if err != nil {
		return &json.UnmarshalTypeError{Value: "string " + s + " (want hh:mm:ss or d.hh:mm:ss)", Type: reflect.TypeFor[string]()}
	}
	*t = TimeSpan(d)
	return nil
}

// MarshalJSON writes the value as "hh:mm:ss".
func (t TimeSpan) MarshalJSON() ([]byte, error) {
	if t < 0 {
		return []byte(`"-1"`), nil
	}
	return json.Marshal(FormatTimeSpan(time.Duration(t)))
}

// ParseTimeSpan parses the .NET TimeSpan forms "hh:mm:ss", "d.hh:mm:ss" and
// "hh:mm:ss.fffffff".
func ParseTimeSpan(s string) (time.Duration, error) {
	orig := s
	bad := func() (time.Duration, error) {
		return 0, fmt.Errorf("invalid time span %q (want hh:mm:ss or d.hh:mm:ss)", orig)
	}
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var days int64
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return bad()
	}
	if i := strings.IndexByte(parts[0], '.'); i >= 0 {
		d, ok := atoi(parts[0][:i])
		if !ok {
			return bad()
		}
		days = d
		parts[0] = parts[0][i+1:]
	}
	h, ok1 := atoi(parts[0])
	m, ok2 := atoi(parts[1])
	secPart, frac := parts[2], ""
	if i := strings.IndexByte(secPart, '.'); i >= 0 {
		secPart, frac = secPart[:i], secPart[i+1:]
	}
	sec, ok3 := atoi(secPart)
	if !ok1 || !ok2 || !ok3 || h > 23 && days > 0 || m > 59 || sec > 59 {
		return bad()
	}
	d := time.Duration(days)*24*time.Hour + time.Duration(h)*time.Hour + time.Duration(m)*time.Minute + time.Duration(sec)*time.Second
	if frac != "" {
		if len(frac) > 7 {
			return bad()
		}
		f, ok := atoi(frac)
		if !ok {
			return bad()
		}
		for i := len(frac); i < 9; i++ {
			f *= 10
		}
		d += time.Duration(f)
	}
	if neg {
		d = -d
	}
	return d, nil
}

// FormatTimeSpan writes d as "hh:mm:ss" (with a day part when longer than a day).
func FormatTimeSpan(d time.Duration) string {
	days := d / (24 * time.Hour)
	d -= days * 24 * time.Hour
	h := d / time.Hour
	d -= h * time.Hour
	m := d / time.Minute
	d -= m * time.Minute
	s := d / time.Second
	if days > 0 {
		return fmt.Sprintf("%d.%02d:%02d:%02d", days, h, m, s)
	}
	return fmt.Sprintf("%02d:%02d:%02d", h, m, s)
}

func atoi(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	var n int64
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}
