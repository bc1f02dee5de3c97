package bindings

import (
	"crypto/rand"
	"fmt"
	"strings"
	"time"

	"github.com/stratus-dev/stratus/host/config"
)

// Expand evaluates a binding expression: %Setting% from settings, then
// {name} from the invocation's binding data (dotted paths reach into nested
// objects), {rand-guid} / {rand-guid:N}, {DateTime} / {DateTime:layout} and
// {sys.utcnow} / {sys.randguid}. "{{" and "}}" are literal braces. A {name}
// missing from data is an error that names it.
func Expand(expr string, data map[string]any, settings *config.Settings, now time.Time) (string, error) {
	if settings != nil {
		var err error
		if expr, err = settings.Resolve(expr); err != nil {
			return "", err
		}
	}
	var b strings.Builder
	for i := 0; i < len(expr); i++ {
		c := expr[i]
		switch {
		case c == '{' && i+1 < len(expr) && expr[i+1] == '{':
			b.WriteByte('{')
			i++
		case c == '}' && i+1 < len(expr) && expr[i+1] == '}':
			b.WriteByte('}')
			i++
		case c == '{':
			end := strings.IndexByte(expr[i:], '}')
			if end < 0 {
				return "", fmt.Errorf("binding expression %q: unclosed '{'", expr)
			}
			tok := expr[i+1 : i+end]
			v, err := evalToken(tok, data, now)
			if err != nil {
				return "", fmt.Errorf("binding expression %q: %w", expr, err)
			}
			b.WriteString(v)
			i += end
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

func evalToken(tok string, data map[string]any, now time.Time) (string, error) {
	name, format, _ := strings.Cut(tok, ":")
	switch strings.ToLower(name) {
	case "rand-guid", "sys.randguid":
		g := NewGUID()
		if strings.EqualFold(format, "N") {
			g = strings.ReplaceAll(g, "-", "")
		}
		return g, nil
	case "datetime", "sys.utcnow":
		t := now.UTC()
		if format != "" {
			return t.Format(dotnetLayout(format)), nil
		}
		return t.Format("2006-01-02T15-04-05Z"), nil
	}
	v, ok := lookupPath(data, tok)
	if !ok {
		return "", fmt.Errorf("no value for {%s} in the trigger data", tok)
	}
	switch x := v.(type) {
	case string:
		return x, nil
	case time.Time:
		return x.UTC().Format(time.RFC3339), nil
	case float64:
		if x == float64(int64(x)) {
			return fmt.Sprintf("%d", int64(x)), nil
		}
	}
	return fmt.Sprint(v), nil
}

func lookupPath(data map[string]any, path string) (any, bool) {
	if v, ok := lookupFold(data, path); ok {
		return v, true
	}
	cur := any(data)
	for _, p := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = lookupFold(m, p); !ok {
			return nil, false
		}
	}
	return cur, true
}

func lookupFold(m map[string]any, k string) (any, bool) {
	if v, ok := m[k]; ok {
		return v, true
	}
	for mk, v := range m {
		if strings.EqualFold(mk, k) {
			return v, true
		}
	}
	return nil, false
}

// dotnetLayout converts the common .NET date format tokens to a Go layout.
func dotnetLayout(f string) string {
	r := strings.NewReplacer("yyyy", "2006", "MM", "01", "dd", "02", "HH", "15", "mm", "04", "ss", "05", "fff", "000")
	return r.Replace(f)
}

// NewGUID returns a random (version 4) GUID in the 8-4-4-4-12 form.
func NewGUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
