package httptrigger

import (
	"fmt"
	"math"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Route is a parsed ASP.NET Core style route template: literal segments,
// parameters with constraints ({id:int}, {x:alpha}, {ver:regex(...)}),
// optional parameters ({x?}), defaults ({x=1}) and a trailing catch-all
// ({*rest}).
type Route struct {
	template string
	segments []segment
}

type segment struct {
	// literal is set for a plain literal segment (matched case-insensitively).
	literal string
	// parts is set for segments with parameters.
	parts []part
	re    *regexp.Regexp
}

type part struct {
	literal  string
	param    string
	optional bool
	catchAll bool
	def      *string
	checks   []constraint
}

type constraint struct {
	name string
	ok   func(string) bool
}

// ParseRoute parses a route template.
func ParseRoute(tmpl string) (*Route, error) {
	t := strings.Trim(tmpl, "/")
	r := &Route{template: t}
	if t == "" {
		return r, nil
	}
	segs, err := splitSegments(t)
	if err != nil {
		return nil, fmt.Errorf("route %q: %w", tmpl, err)
	}
	seen := map[string]bool{}
	for i, s := range segs {
		seg, err := parseSegment(s)
		if err != nil {
			return nil, fmt.Errorf("route %q: %w", tmpl, err)
		}
		for _, p := range seg.parts {
			if p.param == "" {
				continue
			}
			k := strings.ToLower(p.param)
			if seen[k] {
				return nil, fmt.Errorf("route %q: parameter %q appears twice", tmpl, p.param)
			}
			seen[k] = true
			if p.catchAll && i != len(segs)-1 {
				return nil, fmt.Errorf("route %q: catch-all {*%s} must be the last segment", tmpl, p.param)
			}
		}
		r.segments = append(r.segments, seg)
	}
	// Optional parameters may only be followed by optional parameters.
	sawOptional := false
	for _, s := range r.segments {
		opt := s.optionalParam()
		if sawOptional && !opt {
			return nil, fmt.Errorf("route %q: an optional parameter must not be followed by a required segment", tmpl)
		}
		sawOptional = sawOptional || opt
	}
	return r, nil
}

// String returns the template.
func (r *Route) String() string { return r.template }

func (s segment) optionalParam() bool {
	return len(s.parts) == 1 && s.parts[0].param != "" && (s.parts[0].optional || s.parts[0].def != nil || s.parts[0].catchAll)
}

func splitSegments(t string) ([]string, error) {
	var out []string
	depth := 0
	start := 0
	for i := 0; i < len(t); i++ {
		switch t[i] {
		case '{':
			depth++
		case '}':
			depth--
			if depth < 0 {
				return nil, fmt.Errorf("unbalanced '}' at %d", i)
			}
		case '/':
			if depth == 0 {
				if i == start {
					return nil, fmt.Errorf("empty segment at %d", i)
				}
				out = append(out, t[start:i])
				start = i + 1
			}
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("unbalanced '{'")
	}
	return append(out, t[start:]), nil
}

func parseSegment(s string) (segment, error) {
	if !strings.ContainsAny(s, "{}") {
		return segment{literal: s}, nil
	}
	var seg segment
	for len(s) > 0 {
		i := strings.IndexByte(s, '{')
		if i < 0 {
			seg.parts = append(seg.parts, part{literal: s})
			break
		}
		if i > 0 {
			seg.parts = append(seg.parts, part{literal: s[:i]})
		}
		end, err := matchBrace(s, i)
		if err != nil {
			return segment{}, err
		}
		p, err := parseParam(s[i+1 : end])
		if err != nil {
			return segment{}, err
		}
		seg.parts = append(seg.parts, p)
		s = s[end+1:]
	}
	params := 0
	var re strings.Builder
	re.WriteString("^")
	for _, p := range seg.parts {
		if p.param == "" {
			re.WriteString(regexp.QuoteMeta(p.literal))
			continue
		}
		params++
		if (p.optional || p.catchAll) && len(seg.parts) > 1 {
			return segment{}, fmt.Errorf("parameter {%s} must be alone in its segment to be optional or catch-all", p.param)
		}
		re.WriteString("(.+?)")
	}
	re.WriteString("$")
	if len(seg.parts) > 1 {
		// Adjacent parameters cannot be split unambiguously.
		for j := 1; j < len(seg.parts); j++ {
			if seg.parts[j].param != "" && seg.parts[j-1].param != "" {
				return segment{}, fmt.Errorf("parameters {%s} and {%s} need a literal between them", seg.parts[j-1].param, seg.parts[j].param)
			}
		}
	}
	seg.re = regexp.MustCompile("(?i)" + re.String())
	return seg, nil
}

// matchBrace finds the '}' closing the '{' at i, skipping parentheses so that
// regex constraints may contain braces.
func matchBrace(s string, i int) (int, error) {
	paren := 0
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '(':
			paren++
		case ')':
			paren--
		case '}':
			if paren == 0 {
				return j, nil
			}
		}
	}
	return 0, fmt.Errorf("unclosed parameter in %q", s)
}

func parseParam(body string) (part, error) {
	var p part
	if strings.HasPrefix(body, "*") {
		p.catchAll = true
		body = strings.TrimPrefix(strings.TrimPrefix(body, "*"), "*")
	}
	// Split name from constraints on the first ':' outside parentheses.
	name, rest := body, ""
	if i := strings.IndexByte(body, ':'); i >= 0 {
		name, rest = body[:i], body[i+1:]
	}
	if strings.HasSuffix(rest, "?") || (rest == "" && strings.HasSuffix(name, "?")) {
		p.optional = true
		if rest != "" {
			rest = strings.TrimSuffix(rest, "?")
		} else {
			name = strings.TrimSuffix(name, "?")
		}
	}
	if i := strings.IndexByte(name, '='); i >= 0 {
		d := name[i+1:]
		p.def = &d
		name = name[:i]
	}
	if rest != "" {
		if i := lastTopLevel(rest, '='); i >= 0 {
			d := rest[i+1:]
			p.def = &d
			rest = rest[:i]
		}
	}
	if name == "" || !validParamName(name) {
		return part{}, fmt.Errorf("invalid parameter name %q", name)
	}
	p.param = name
	for _, c := range splitConstraints(rest) {
		chk, err := parseConstraint(c)
		if err != nil {
			return part{}, fmt.Errorf("parameter {%s}: %w", name, err)
		}
		p.checks = append(p.checks, chk)
	}
	return p, nil
}

func validParamName(n string) bool {
	for _, c := range n {
		if !(c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

func lastTopLevel(s string, c byte) int {
	paren := 0
	for j := len(s) - 1; j >= 0; j-- {
		switch s[j] {
		case ')':
			paren++
		case '(':
			paren--
		case c:
			if paren == 0 {
				return j
			}
		}
	}
	return -1
}

func splitConstraints(s string) []string {
	if s == "" {
		return nil
	}
	var out []string
	paren, start := 0, 0
	for j := 0; j < len(s); j++ {
		switch s[j] {
		case '(':
			paren++
		case ')':
			paren--
		case ':':
			if paren == 0 {
				out = append(out, s[start:j])
				start = j + 1
			}
		}
	}
	return append(out, s[start:])
}

var guidRE = regexp.MustCompile(`^(?i)\{?[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\}?$`)

func parseConstraint(c string) (constraint, error) {
	name, arg := c, ""
	if i := strings.IndexByte(c, '('); i >= 0 {
		if !strings.HasSuffix(c, ")") {
			return constraint{}, fmt.Errorf("constraint %q: missing ')'", c)
		}
		name, arg = c[:i], c[i+1:len(c)-1]
	}
	ints := func(n int) ([]int64, error) {
		fs := strings.Split(arg, ",")
		if len(fs) != n {
			return nil, fmt.Errorf("constraint %q: want %d argument(s)", c, n)
		}
		out := make([]int64, n)
		for i, f := range fs {
			v, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("constraint %q: %q is not an integer", c, f)
			}
			out[i] = v
		}
		return out, nil
	}
	num := func(v string) (int64, bool) {
		n, err := strconv.ParseInt(v, 10, 64)
		return n, err == nil
	}
	mk := func(f func(string) bool) (constraint, error) { return constraint{name: c, ok: f}, nil }
	switch strings.ToLower(name) {
	case "int":
		return mk(func(v string) bool { _, err := strconv.ParseInt(v, 10, 32); return err == nil })
	case "long":
		return mk(func(v string) bool { _, ok := num(v); return ok })
	case "bool":
		return mk(func(v string) bool { return strings.EqualFold(v, "true") || strings.EqualFold(v, "false") })
	case "alpha":
		return mk(func(v string) bool {
			for _, r := range v {
				if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
					return false
				}
			}
			return v != ""
		})
	case "guid":
		return mk(guidRE.MatchString)
	case "decimal", "double", "float":
		return mk(func(v string) bool {
			f, err := strconv.ParseFloat(v, 64)
			return err == nil && !math.IsInf(f, 0) && !math.IsNaN(f)
		})
	case "datetime":
		return mk(func(v string) bool {
			for _, l := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05", "2006-01-02"} {
				if _, err := time.Parse(l, v); err == nil {
					return true
				}
			}
			return false
		})
	case "min", "max":
		a, err := ints(1)
		if err != nil {
			return constraint{}, err
		}
		isMin := strings.EqualFold(name, "min")
		return mk(func(v string) bool {
			n, ok := num(v)
			return ok && (isMin && n >= a[0] || !isMin && n <= a[0])
		})
	case "range":
		a, err := ints(2)
		if err != nil {
			return constraint{}, err
		}
		return mk(func(v string) bool { n, ok := num(v); return ok && n >= a[0] && n <= a[1] })
	case "minlength", "maxlength":
		a, err := ints(1)
		if err != nil {
			return constraint{}, err
		}
		isMin := strings.EqualFold(name, "minlength")
		return mk(func(v string) bool {
			n := int64(len([]rune(v)))
			return isMin && n >= a[0] || !isMin && n <= a[0]
		})
	case "length":
		if !strings.Contains(arg, ",") {
			a, err := ints(1)
			if err != nil {
				return constraint{}, err
			}
			return mk(func(v string) bool { return int64(len([]rune(v))) == a[0] })
		}
		a, err := ints(2)
		if err != nil {
			return constraint{}, err
		}
		return mk(func(v string) bool { n := int64(len([]rune(v))); return n >= a[0] && n <= a[1] })
	case "regex":
		// ASP.NET escapes braces in route regexes by doubling them.
		expr := strings.NewReplacer("{{", "{", "}}", "}").Replace(arg)
		re, err := regexp.Compile("(?i)" + expr)
		if err != nil {
			return constraint{}, fmt.Errorf("constraint %q: %w", c, err)
		}
		return mk(re.MatchString)
	}
	return constraint{}, fmt.Errorf("unknown constraint %q (known: int, long, bool, alpha, guid, decimal, double, float, datetime, min, max, range, minlength, maxlength, length, regex)", name)
}

// Match matches a path (without the route prefix, unescaped segments) and
// returns the route values.
func (r *Route) Match(path string) (map[string]string, bool) {
	path = strings.Trim(path, "/")
	var segs []string
	if path != "" {
		segs = strings.Split(path, "/")
	}
	vals := map[string]string{}
	for i, s := range r.segments {
		if i >= len(segs) {
			if !s.optionalParam() {
				return nil, false
			}
			p := s.parts[0]
			if p.def != nil {
				vals[p.param] = *p.def
			}
			continue
		}
		if s.literal != "" {
			if !strings.EqualFold(s.literal, segs[i]) {
				return nil, false
			}
			continue
		}
		if len(s.parts) == 1 && s.parts[0].catchAll {
			v := strings.Join(segs[i:], "/")
			if !checkAll(s.parts[0], v) {
				return nil, false
			}
			vals[s.parts[0].param] = v
			return vals, true
		}
		m := s.re.FindStringSubmatch(segs[i])
		if m == nil {
			return nil, false
		}
		k := 1
		for _, p := range s.parts {
			if p.param == "" {
				continue
			}
			if !checkAll(p, m[k]) {
				return nil, false
			}
			vals[p.param] = m[k]
			k++
		}
	}
	if len(segs) > len(r.segments) {
		return nil, false
	}
	return vals, true
}

func checkAll(p part, v string) bool {
	for _, c := range p.checks {
		if !c.ok(v) {
			return false
		}
	}
	return true
}

// precedence orders routes so that more specific templates are tried first:
// literals before constrained parameters before plain parameters before
// optional ones before catch-alls, segment by segment.
func (r *Route) precedence() []int {
	out := make([]int, 0, len(r.segments))
	for _, s := range r.segments {
		switch {
		case s.literal != "":
			out = append(out, 0)
		case len(s.parts) > 1:
			out = append(out, 1)
		case s.parts[0].catchAll:
			out = append(out, 5)
		case s.parts[0].optional || s.parts[0].def != nil:
			out = append(out, 4)
		case len(s.parts[0].checks) > 0:
			out = append(out, 2)
		default:
			out = append(out, 3)
		}
	}
	return out
}

func urlPathUnescape(s string) (string, error) { return url.PathUnescape(s) }
