package app

import (
	"context"
	"io"
	"log/slog"
	"strings"

	"github.com/stratus-dev/stratus/host/config"
)

// NewLogger builds the host logger: human-readable text or JSON records, with
// levels per category from host.json logging.logLevel (the longest matching
// category prefix wins; "default" applies otherwise).
func NewLogger(w io.Writer, format string, levels map[string]string) *slog.Logger {
	lv := categoryLevels{def: slog.LevelInfo, by: map[string]slog.Level{}}
	for cat, name := range levels {
		l, err := config.ParseLevel(name)
		if err != nil {
			continue // validated when host.json was loaded
		}
		if strings.EqualFold(cat, "default") {
			lv.def = l
		} else {
			lv.by[strings.ToLower(cat)] = l
		}
	}
	minLevel := lv.def
	for _, l := range lv.by {
		minLevel = min(minLevel, l)
	}
	opts := &slog.HandlerOptions{Level: minLevel}
	var h slog.Handler
	if format == "json" {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(&categoryHandler{next: h, levels: &lv, level: lv.def})
}

type categoryLevels struct {
	def slog.Level
	by  map[string]slog.Level
}

func (c *categoryLevels) forCategory(cat string) slog.Level {
	cat = strings.ToLower(cat)
	best, bestLen := c.def, -1
	for k, l := range c.by {
		if (cat == k || strings.HasPrefix(cat, k+".")) && len(k) > bestLen {
			best, bestLen = l, len(k)
		}
	}
	return best
}

// categoryHandler filters records by the level of the logger's "category"
// attribute.
type categoryHandler struct {
	next   slog.Handler
	levels *categoryLevels
	level  slog.Level
}

func (h *categoryHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level && h.next.Enabled(ctx, l)
}

func (h *categoryHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.next.Handle(ctx, r)
}

func (h *categoryHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	for _, a := range as {
		if a.Key == "category" {
			c.level = h.levels.forCategory(a.Value.String())
		}
	}
	c.next = h.next.WithAttrs(as)
	return &c
}

func (h *categoryHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.next = h.next.WithGroup(name)
	return &c
}
