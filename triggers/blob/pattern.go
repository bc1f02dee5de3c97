package blob

import (
	"fmt"
	"regexp"
	"strings"
)

// Pattern is a blobTrigger path: "container/prefix{name}.{ext}". Each {p}
// captures any text (greedy, '/' included); "{{" and "}}" are literal braces.
// The container part cannot hold expressions.
type Pattern struct {
	// Container is the container the pattern watches.
	Container string
	// Prefix is the literal start of the blob name (used as a listing prefix).
	Prefix string
	// Names are the capture names in order.
	Names []string
	raw   string
	re    *regexp.Regexp
}

var containerRE = regexp.MustCompile(`^(\$root|\$logs|[a-z0-9](?:[a-z0-9]|-[a-z0-9]){2,62})$`)

// ParsePattern parses a blobTrigger path.
func ParsePattern(path string) (*Pattern, error) {
	p := strings.TrimPrefix(strings.TrimSpace(path), "/")
	container, rest, _ := strings.Cut(p, "/")
	if strings.ContainsAny(container, "{}") {
		return nil, fmt.Errorf("blob path %q: the container name cannot contain expressions", path)
	}
	if len(container) > 63 || !containerRE.MatchString(container) {
		return nil, fmt.Errorf("blob path %q: container name %q is invalid (3-63 lower-case letters, digits and single hyphens)", path, container)
	}
	pat := &Pattern{Container: container, raw: p}
	var re strings.Builder
	re.WriteString("^")
	prefixDone := false
	seen := map[string]bool{}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		switch {
		case c == '{' && i+1 < len(rest) && rest[i+1] == '{', c == '}' && i+1 < len(rest) && rest[i+1] == '}':
			re.WriteString(regexp.QuoteMeta(string(c)))
			if !prefixDone {
				pat.Prefix += string(c)
			}
			i++
		case c == '{':
			end := strings.IndexByte(rest[i:], '}')
			if end < 0 {
				return nil, fmt.Errorf("blob path %q: unclosed '{'", path)
			}
			name := rest[i+1 : i+end]
			if !regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`).MatchString(name) {
				return nil, fmt.Errorf("blob path %q: {%s} is not a valid parameter name", path, name)
			}
			if seen[strings.ToLower(name)] {
				return nil, fmt.Errorf("blob path %q: {%s} appears twice", path, name)
			}
			seen[strings.ToLower(name)] = true
			pat.Names = append(pat.Names, name)
			fmt.Fprintf(&re, "(.*)")
			prefixDone = true
			i += end
		case c == '}':
			return nil, fmt.Errorf("blob path %q: unmatched '}'", path)
		default:
			re.WriteString(regexp.QuoteMeta(string(c)))
			if !prefixDone {
				pat.Prefix += string(c)
			}
		}
	}
	if rest == "" {
		re.WriteString(".*")
	}
	re.WriteString("$")
	var err error
	if pat.re, err = regexp.Compile(re.String()); err != nil {
		return nil, fmt.Errorf("blob path %q: %w", path, err)
	}
	return pat, nil
}

// Match matches a blob name (without the container) and returns the captures.
func (p *Pattern) Match(blobName string) (map[string]string, bool) {
	m := p.re.FindStringSubmatch(blobName)
	if m == nil {
		return nil, false
	}
	out := make(map[string]string, len(p.Names))
	for i, n := range p.Names {
		out[n] = m[i+1]
	}
	return out, true
}

// String returns the path.
func (p *Pattern) String() string { return p.raw }
