package timer

import (
	"strings"
	"testing"
	"time"
)

func TestParseSchedule(t *testing.T) {
	t.Parallel()
	from := time.Date(2024, 3, 10, 10, 0, 30, 0, time.UTC)
	cases := []struct {
		name, expr string
		want       []string // next occurrences after from, RFC 3339 in UTC
	}{
		{"every second", "* * * * * *", []string{"2024-03-10T10:00:31Z", "2024-03-10T10:00:32Z"}},
		{"every 30 s", "*/30 * * * * *", []string{"2024-03-10T10:01:00Z", "2024-03-10T10:01:30Z"}},
		{"list of seconds", "0,30 * * * * *", []string{"2024-03-10T10:01:00Z", "2024-03-10T10:01:30Z"}},
		{"daily 01:00", "0 0 1 * * *", []string{"2024-03-11T01:00:00Z", "2024-03-12T01:00:00Z"}},
		{"five fields", "*/5 * * * *", []string{"2024-03-10T10:05:00Z", "2024-03-10T10:10:00Z"}},
		{"weekdays 9:30", "0 30 9 * * 1-5", []string{"2024-03-11T09:30:00Z", "2024-03-12T09:30:00Z"}},
		{"day names", "0 0 12 * * MON", []string{"2024-03-11T12:00:00Z", "2024-03-18T12:00:00Z"}},
		{"time span", "00:05:00", []string{"2024-03-10T10:05:30Z", "2024-03-10T10:10:30Z"}},
		{"time span with days", "1.00:00:00", []string{"2024-03-11T10:00:30Z", "2024-03-12T10:00:30Z"}},
		{"spaces trimmed", "  0 0 * * * *  ", []string{"2024-03-10T11:00:00Z", "2024-03-10T12:00:00Z"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseSchedule(tc.expr, nil)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			at := from
			for range tc.want {
				at = s.Next(at)
				got = append(got, at.UTC().Format(time.RFC3339))
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Fatalf("occurrences = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestParseScheduleErrors(t *testing.T) {
	t.Parallel()
	cases := []struct{ expr, want string }{
		{"", "empty"},
		{"* * *", "got 3 fields"},
		{"* * * * * * *", "got 7 fields"},
		{"61 * * * * *", "schedule"},
		{"@every 5s", "descriptors"},
		{"CRON_TZ=UTC 0 * * * * *", "time zone"},
		{"00:61:00", "invalid time span"},
		{"00:00:00", "positive"},
	}
	for _, tc := range cases {
		if _, err := ParseSchedule(tc.expr, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseSchedule(%q) err = %v, want it to contain %q", tc.expr, err, tc.want)
		}
	}
}

func TestScheduleTimeZone(t *testing.T) {
	t.Parallel()
	loc, err := Location("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	s, err := ParseSchedule("0 0 1 * * *", loc)
	if err != nil {
		t.Fatal(err)
	}
	// 01:00 in Paris in winter is 00:00 UTC.
	got := s.Next(time.Date(2024, 1, 10, 12, 0, 0, 0, time.UTC)).UTC()
	if want := time.Date(2024, 1, 11, 0, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Fatalf("next = %s, want %s", got, want)
	}
	if _, err := Location("Eastern Standard Time"); err == nil {
		t.Fatal("a Windows zone name was accepted")
	}
	if l, err := Location(""); err != nil || l != time.UTC {
		t.Fatalf("default zone = %v, %v", l, err)
	}
}

func TestMinGap(t *testing.T) {
	t.Parallel()
	cases := []struct {
		expr    string
		monitor bool
	}{
		{"* * * * * *", false},
		{"*/30 * * * * *", false},
		{"0 * * * * *", true},
		{"0 0 1 * * *", true},
		{"00:00:30", false},
		{"00:01:00", true},
	}
	for _, tc := range cases {
		s, err := ParseSchedule(tc.expr, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := MinGap(s, time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)) >= time.Minute; got != tc.monitor {
			t.Errorf("%q: monitor = %v, want %v", tc.expr, got, tc.monitor)
		}
	}
}

func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{"0 */5 * * * *", "*/5 * * * *", "00:05:00", "1-5 0 0 * * MON-FRI", "0 0 1 1 * *"} {
		f.Add(s)
	}
	from := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, expr string) {
		s, err := ParseSchedule(expr, nil)
		if err != nil {
			return
		}
		if n := s.Next(from); !n.IsZero() && !n.After(from) {
			t.Fatalf("%q: next %s is not after %s", expr, n, from)
		}
	})
}
