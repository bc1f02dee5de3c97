package bindings

import (
	"errors"
	"regexp"
	"testing"
	"time"

	"github.com/stratus-dev/stratus/host/config"
)

func TestExpand(t *testing.T) {
	t.Parallel()
	settings := config.NewSettings(nil, config.LocalSettings{Values: map[string]string{"Container": "out"}})
	now := time.Date(2024, 3, 4, 5, 6, 7, 0, time.FixedZone("CET", 3600))
	data := map[string]any{
		"name":         "report",
		"n":            float64(42),
		"Properties":   map[string]any{"ContentType": "text/plain"},
		"DequeueCount": int64(3),
	}
	cases := []struct {
		name, expr, want string
	}{
		{"trigger value", "processed/{name}.txt", "processed/report.txt"},
		{"case-insensitive name", "{NAME}", "report"},
		{"whole number", "n-{n}", "n-42"},
		{"nested", "{Properties.ContentType}", "text/plain"},
		{"metadata", "try-{DequeueCount}", "try-3"},
		{"setting", "%Container%/{name}", "out/report"},
		{"escaped braces", "{{literal}}-{name}", "{literal}-report"},
		{"DateTime in UTC", "{DateTime}", "2024-03-04T04-06-07Z"},
		{"DateTime with format", "logs/{DateTime:yyyy-MM-dd}/x", "logs/2024-03-04/x"},
		{"sys.utcnow", "{sys.utcnow:HH-mm}", "04-06"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := Expand(tc.expr, data, settings, now)
			if err != nil || got != tc.want {
				t.Fatalf("Expand(%q) = %q, %v; want %q", tc.expr, got, err, tc.want)
			}
		})
	}
}

func TestExpandRandGUID(t *testing.T) {
	t.Parallel()
	dashed := regexp.MustCompile(`^x-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	plain := regexp.MustCompile(`^[0-9a-f]{32}$`)
	a, err := Expand("x-{rand-guid}", nil, nil, time.Now())
	if err != nil || !dashed.MatchString(a) {
		t.Fatalf("{rand-guid} = %q, %v", a, err)
	}
	b, err := Expand("{rand-guid:N}", nil, nil, time.Now())
	if err != nil || !plain.MatchString(b) {
		t.Fatalf("{rand-guid:N} = %q, %v", b, err)
	}
	c, _ := Expand("x-{rand-guid}", nil, nil, time.Now())
	if a == c {
		t.Fatalf("two {rand-guid} expansions are both %q", a)
	}
}

func TestExpandErrors(t *testing.T) {
	t.Parallel()
	settings := config.NewSettings(nil, config.LocalSettings{})
	if _, err := Expand("{missing}.txt", map[string]any{"name": "x"}, settings, time.Now()); err == nil {
		t.Error("a {name} absent from the trigger data was accepted")
	}
	if _, err := Expand("{name", map[string]any{"name": "x"}, settings, time.Now()); err == nil {
		t.Error("an unclosed '{' was accepted")
	}
	var miss *config.MissingSettingError
	if _, err := Expand("%Nope%/x", nil, settings, time.Now()); !errors.As(err, &miss) || miss.Name != "Nope" {
		t.Errorf("unset %%Nope%%: err = %v, want MissingSettingError", err)
	}
}
