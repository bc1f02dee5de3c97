package timer

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/stratus-dev/stratus/host/config"
)

// Schedule computes occurrences.
type Schedule interface {
	// Next returns the first occurrence strictly after t.
	Next(t time.Time) time.Time
	// String returns the expression the schedule was parsed from.
	String() string
}

var (
	sixFields  = cron.NewParser(cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)
	fiveFields = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow)
)

// ParseSchedule parses a timerTrigger schedule: an NCRONTAB expression with
// six fields ({second} {minute} {hour} {day} {month} {day-of-week}) or five
// (no seconds), or a TimeSpan "hh:mm:ss" / "d.hh:mm:ss" interval. Cron
// occurrences are computed in loc (UTC when nil).
func ParseSchedule(expr string, loc *time.Location) (Schedule, error) {
	if loc == nil {
		loc = time.UTC
	}
	s := strings.TrimSpace(expr)
	fields := strings.Fields(s)
	switch {
	case s == "":
		return nil, fmt.Errorf("schedule is empty")
	case len(fields) == 1 && strings.Contains(s, ":"):
		d, err := config.ParseTimeSpan(s)
		if err != nil {
			return nil, fmt.Errorf("schedule %q: %w", expr, err)
		}
		if d <= 0 {
			return nil, fmt.Errorf("schedule %q: the interval must be positive", expr)
		}
		return Interval{Every: d, expr: s}, nil
	case strings.ContainsAny(s, "@=") || strings.Contains(s, "TZ"):
		return nil, fmt.Errorf("schedule %q: descriptors and time zone prefixes are not NCRONTAB (set WEBSITE_TIME_ZONE for the zone)", expr)
	}
	var p cron.Parser
	switch len(fields) {
	case 6:
		p = sixFields
	case 5:
		p = fiveFields
	default:
		return nil, fmt.Errorf("schedule %q: want 6 NCRONTAB fields ({second} {minute} {hour} {day} {month} {day-of-week}), 5, or a time span hh:mm:ss; got %d fields", expr, len(fields))
	}
	cs, err := p.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("schedule %q: %w", expr, err)
	}
	spec, ok := cs.(*cron.SpecSchedule)
	if !ok {
		return nil, fmt.Errorf("schedule %q: unsupported form", expr)
	}
	spec.Location = loc
	return &Cron{spec: spec, expr: s}, nil
}

// Cron is an NCRONTAB schedule.
type Cron struct {
	spec *cron.SpecSchedule
	expr string
}

// Next returns the next occurrence after t, in the schedule's time zone.
func (c *Cron) Next(t time.Time) time.Time { return c.spec.Next(t) }

// String returns the expression.
func (c *Cron) String() string { return c.expr }

// Interval is a TimeSpan schedule: every occurrence is the previous plus Every.
type Interval struct {
	Every time.Duration
	expr  string
}

// Next returns t + Every.
func (i Interval) Next(t time.Time) time.Time { return t.Add(i.Every) }

// String returns the expression.
func (i Interval) String() string {
	if i.expr != "" {
		return i.expr
	}
	return config.FormatTimeSpan(i.Every)
}

// MinGap returns the shortest time between consecutive occurrences among the
// next few after from (used to turn useMonitor off for schedules that fire
// more than once a minute).
func MinGap(s Schedule, from time.Time) time.Duration {
	gap := time.Duration(1<<63 - 1)
	t := s.Next(from)
	for range 8 {
		n := s.Next(t)
		if n.IsZero() {
			break
		}
		gap = min(gap, n.Sub(t))
		t = n
	}
	return gap
}

// Location loads the WEBSITE_TIME_ZONE setting (an IANA name); "" is UTC.
func Location(name string) (*time.Location, error) {
	if name == "" {
		return time.UTC, nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("WEBSITE_TIME_ZONE %q: not an IANA time zone name (e.g. Europe/Paris): %w", name, err)
	}
	return loc, nil
}

// scheduleJSON is how the handler's TimerInfo spells the schedule.
func scheduleJSON() json.RawMessage { return json.RawMessage(`{"AdjustForDST":true}`) }
