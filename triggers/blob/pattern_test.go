package blob

import (
	"fmt"
	"strings"
	"testing"
)

func TestPattern(t *testing.T) {
	t.Parallel()
	cases := []struct {
		path, blob string
		match      bool
		captures   string // fmt of the map
		prefix     string
	}{
		{"uploads/{name}", "a.txt", true, "map[name:a.txt]", ""},
		{"uploads/{name}", "dir/a.txt", true, "map[name:dir/a.txt]", ""},
		{"uploads/{name}.{ext}", "a.b.txt", true, "map[ext:txt name:a.b]", ""},
		{"uploads/{name}.{ext}", "noext", false, "", ""},
		{"uploads/{name}.txt", "report.txt", true, "map[name:report]", ""},
		{"uploads/{name}.txt", "report.json", false, "", ""},
		{"cc1/in/{name}.json", "in/x.json", true, "map[name:x]", "in/"},
		{"cc1/in/{name}.json", "out/x.json", false, "", "in/"},
		{"cc1/in/{name}.json", "in/sub/x.json", true, "map[name:sub/x]", "in/"},
		{"cc1", "anything/at/all", true, "map[]", ""},
		{"cc1/fixed.txt", "fixed.txt", true, "map[]", "fixed.txt"},
		{"cc1/fixed.txt", "fixedXtxt", false, "", "fixed.txt"},
		{"cc1/{{lit}}-{id}", "{lit}-7", true, "map[id:7]", "{lit}-"},
		{"/cc1/{name}", "x", true, "map[name:x]", ""},
	}
	for _, tc := range cases {
		t.Run(tc.path+" "+tc.blob, func(t *testing.T) {
			p, err := ParsePattern(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			caps, ok := p.Match(tc.blob)
			if ok != tc.match || (ok && fmt.Sprint(caps) != tc.captures) || p.Prefix != tc.prefix {
				t.Fatalf("Match(%q) = %v, %v (prefix %q); want %v, %s (prefix %q)", tc.blob, caps, ok, p.Prefix, tc.match, tc.captures, tc.prefix)
			}
		})
	}
}

func TestPatternErrors(t *testing.T) {
	t.Parallel()
	cases := []struct{ path, want string }{
		{"{c}/x", "container name cannot"},
		{"UPPER/x", "invalid"},
		{"ab/x", "invalid"},
		{"cc1/{name", "unclosed"},
		{"cc1/name}", "unmatched"},
		{"cc1/{}", "not a valid parameter"},
		{"cc1/{a}-{a}", "twice"},
		{"cc1/{a b}", "not a valid parameter"},
	}
	for _, tc := range cases {
		if _, err := ParsePattern(tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParsePattern(%q) err = %v, want %q", tc.path, err, tc.want)
		}
	}
}

func FuzzPattern(f *testing.F) {
	for _, s := range []string{"uploads/{name}.{ext}", "cc1/in/{name}.json", "cc1/{{x}}{y}"} {
		f.Add(s, "in/a.json")
	}
	f.Fuzz(func(t *testing.T, path, blob string) {
		p, err := ParsePattern(path)
		if err != nil {
			return
		}
		caps, ok := p.Match(blob)
		if ok && len(caps) != len(p.Names) {
			t.Fatalf("%q on %q: %d captures for %d names", path, blob, len(caps), len(p.Names))
		}
		if ok && !strings.HasPrefix(blob, p.Prefix) {
			t.Fatalf("%q matched %q without its literal prefix %q", path, blob, p.Prefix)
		}
	})
}
