package httptrigger

import (
	"maps"
	"testing"
)

func TestRouteMatch(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, tmpl, path string
		ok               bool
		want             map[string]string
	}{
		{"literal", "hello", "hello", true, map[string]string{}},
		{"literal case-insensitive", "hello", "HELLO", true, map[string]string{}},
		{"literal mismatch", "hello", "bye", false, nil},
		{"param", "products/{category}/{id}", "products/books/7", true, map[string]string{"category": "books", "id": "7"}},
		{"too long", "products/{id}", "products/1/2", false, nil},
		{"int ok", "items/{id:int}", "items/42", true, map[string]string{"id": "42"}},
		{"int rejects text", "items/{id:int}", "items/abc", false, nil},
		{"int rejects overflow", "items/{id:int}", "items/99999999999", false, nil},
		{"long accepts big", "items/{id:long}", "items/99999999999", true, map[string]string{"id": "99999999999"}},
		{"alpha", "x/{s:alpha}", "x/abcXYZ", true, map[string]string{"s": "abcXYZ"}},
		{"alpha rejects digits", "x/{s:alpha}", "x/ab1", false, nil},
		{"regex", "api/{ver:regex(^v[[0-9]]+$)}", "api/v2", false, nil},
		{"regex plain", "docs/{ver:regex(^v[0-9]+$)}", "docs/v12", true, map[string]string{"ver": "v12"}},
		{"regex rejects", "docs/{ver:regex(^v[0-9]+$)}", "docs/x12", false, nil},
		{"optional present", "users/{id?}", "users/5", true, map[string]string{"id": "5"}},
		{"optional absent", "users/{id?}", "users", true, map[string]string{}},
		{"optional constrained absent", "users/{id:int?}", "users", true, map[string]string{}},
		{"optional constrained bad", "users/{id:int?}", "users/x", false, nil},
		{"default", "page/{n=1}", "page", true, map[string]string{"n": "1"}},
		{"catch-all", "files/{*rest}", "files/a/b/c.txt", true, map[string]string{"rest": "a/b/c.txt"}},
		{"catch-all empty", "files/{*rest}", "files", true, map[string]string{}},
		{"complex segment", "img/{name}.{ext}", "img/cat.png", true, map[string]string{"name": "cat", "ext": "png"}},
		{"range", "r/{n:range(1,10)}", "r/11", false, nil},
		{"min", "r/{n:min(3)}", "r/3", true, map[string]string{"n": "3"}},
		{"length", "c/{code:length(3)}", "c/abc", true, map[string]string{"code": "abc"}},
		{"guid", "g/{id:guid}", "g/6f9619ff-8b86-d011-b42d-00cf4fc964ff", true, map[string]string{"id": "6f9619ff-8b86-d011-b42d-00cf4fc964ff"}},
		{"bool", "b/{f:bool}", "b/TRUE", true, map[string]string{"f": "TRUE"}},
		{"multiple constraints", "m/{n:int:min(10)}", "m/9", false, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := ParseRoute(tc.tmpl)
			if err != nil {
				t.Fatalf("ParseRoute(%q): %v", tc.tmpl, err)
			}
			got, ok := r.Match(tc.path)
			if ok != tc.ok || (ok && !maps.Equal(got, tc.want)) {
				t.Fatalf("Match(%q) = %v, %v; want %v, %v", tc.path, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestParseRouteErrors(t *testing.T) {
	t.Parallel()
	for _, tmpl := range []string{
		"a/{id", "a/{id}}", "a/{*rest}/b", "a/{id?}/b", "a/{x}/{x}", "a/{n:bogus}", "a/{n:regex(()}", "a/{x}{y}", "a//b",
	} {
		if _, err := ParseRoute(tmpl); err == nil {
			t.Errorf("ParseRoute(%q) succeeded, want error", tmpl)
		}
	}
}

func FuzzParseRoute(f *testing.F) {
	for _, s := range []string{"a/{b:int}", "{*x}", "x/{y?}", "{a}.{b}", "r/{v:regex(^a{{2}}$)}"} {
		f.Add(s, "a/1")
	}
	f.Fuzz(func(t *testing.T, tmpl, path string) {
		r, err := ParseRoute(tmpl)
		if err != nil {
			return
		}
		r.Match(path)
	})
}
