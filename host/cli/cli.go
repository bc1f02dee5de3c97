// Package cli owns the operator command line over the durable client:
// `host instances list|show|start|raise|terminate|suspend|resume|rewind|purge`.
// It talks to the task hub in storage directly (no running host needed),
// reading the same host.json and local.settings.json as the host.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/stratus-dev/stratus/durable/backend"
	"github.com/stratus-dev/stratus/durable/history"
	"github.com/stratus-dev/stratus/durable/httpapi"
)

// Opener opens the durable client for the script root's task hub.
type Opener func(ctx context.Context) (httpapi.Client, error)

const usage = `Usage: host instances <command> [flags] [args]

Commands:
  list      [--status S1,S2] [--prefix P] [--from T] [--to T] [--top N] [--all]
  show      ID [--history]
  start     NAME [--id ID] [--input JSON]
  raise     ID EVENT [JSON]
  terminate ID [--reason R]
  suspend   ID [--reason R]
  resume    ID [--reason R]
  rewind    ID [--reason R]
  purge     ID | --from T [--to T] [--status S1,S2]

Times are ISO-8601 (2026-01-02T03:04:05Z). Storage and hub come from
host.json and local.settings.json in --script-root (default ".") and
AzureWebJobsStorage in the environment.`

// Run runs `instances` with args (after the word "instances").
func Run(ctx context.Context, args []string, stdout, stderr io.Writer, open Opener) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprintln(stderr, usage)
		if len(args) == 0 {
			return errors.New("missing command")
		}
		return nil
	}
	cmd, rest := args[0], args[1:]
	fs := flag.NewFlagSet("instances "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	status := fs.String("status", "", "comma-separated runtime statuses")
	prefix := fs.String("prefix", "", "instance id prefix")
	from := fs.String("from", "", "created at or after (ISO-8601)")
	to := fs.String("to", "", "created at or before (ISO-8601)")
	top := fs.Int("top", 50, "page size")
	all := fs.Bool("all", false, "follow continuation tokens to the last page")
	withHistory := fs.Bool("history", false, "include history")
	id := fs.String("id", "", "instance id")
	input := fs.String("input", "", "JSON input")
	reason := fs.String("reason", "", "reason")
	// Flags may come after positional arguments.
	var pos []string
	for len(rest) > 0 {
		if err := fs.Parse(rest); err != nil {
			return err
		}
		rest = fs.Args()
		if len(rest) > 0 {
			pos = append(pos, rest[0])
			rest = rest[1:]
		}
	}
	need := func(n int, what string) error {
		if len(pos) < n {
			return fmt.Errorf("instances %s: missing %s", cmd, what)
		}
		return nil
	}
	c, err := open(ctx)
	if err != nil {
		return err
	}
	switch cmd {
	case "list":
		q := backend.InstanceQuery{InstanceIDPrefix: *prefix, PageSize: *top}
		if q.RuntimeStatus, err = statuses(*status); err != nil {
			return err
		}
		if q.CreatedFrom, err = parseTime(*from); err != nil {
			return err
		}
		if q.CreatedTo, err = parseTime(*to); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "INSTANCE ID\tNAME\tSTATUS\tCREATED\tUPDATED")
		for {
			page, err := c.Query(ctx, q)
			if err != nil {
				return err
			}
			for _, st := range page.Instances {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", st.InstanceID, st.Name, st.RuntimeStatus, st.CreatedTime.UTC().Format(time.RFC3339), st.LastUpdatedTime.UTC().Format(time.RFC3339))
			}
			if page.ContinuationToken == "" || !*all {
				if page.ContinuationToken != "" {
					fmt.Fprintln(tw, "(more: use --all)")
				}
				break
			}
			q.ContinuationToken = page.ContinuationToken
		}
		return tw.Flush()
	case "show":
		if err := need(1, "ID"); err != nil {
			return err
		}
		st, err := c.GetInstance(ctx, pos[0], true)
		if err != nil {
			return fmt.Errorf("show %s: %w", pos[0], err)
		}
		out := map[string]any{
			"instanceId": st.InstanceID, "name": st.Name, "runtimeStatus": st.RuntimeStatus,
			"input": rawJSON(st.Input), "output": rawJSON(st.Output), "customStatus": rawJSON(st.CustomStatus),
			"createdTime": st.CreatedTime.UTC(), "lastUpdatedTime": st.LastUpdatedTime.UTC(),
		}
		if *withHistory {
			h, err := c.GetHistory(ctx, pos[0])
			if err != nil {
				return err
			}
			out["historyEvents"] = httpapi.HistoryJSON(h, true)
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	case "start":
		if err := need(1, "NAME"); err != nil {
			return err
		}
		if *input != "" && !json.Valid([]byte(*input)) {
			return fmt.Errorf("--input is not valid JSON")
		}
		got, err := c.ScheduleNew(ctx, pos[0], *input, *id, time.Time{})
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, got)
		return nil
	case "raise":
		if err := need(2, "ID and EVENT"); err != nil {
			return err
		}
		data := ""
		if len(pos) > 2 {
			data = pos[2]
			if !json.Valid([]byte(data)) {
				return fmt.Errorf("event data is not valid JSON")
			}
		}
		if err := c.RaiseEvent(ctx, pos[0], pos[1], data); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "raised %s on %s\n", pos[1], pos[0])
		return nil
	case "terminate", "suspend", "resume", "rewind":
		if err := need(1, "ID"); err != nil {
			return err
		}
		if _, err := c.GetInstance(ctx, pos[0], false); err != nil {
			return fmt.Errorf("%s %s: %w", cmd, pos[0], err)
		}
		switch cmd {
		case "terminate":
			err = c.Terminate(ctx, pos[0], *reason)
		case "suspend":
			err = c.Suspend(ctx, pos[0], *reason)
		case "resume":
			err = c.Resume(ctx, pos[0], *reason)
		default:
			err = c.Rewind(ctx, pos[0], *reason)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s requested for %s\n", cmd, pos[0])
		return nil
	case "purge":
		if len(pos) > 0 {
			if err := c.Purge(ctx, pos[0]); err != nil {
				return fmt.Errorf("purge %s: %w", pos[0], err)
			}
			fmt.Fprintln(stdout, "purged 1 instance")
			return nil
		}
		if *from == "" {
			return errors.New("purge: give an instance id, or --from to purge by filter")
		}
		var f backend.PurgeFilter
		if f.CreatedFrom, err = parseTime(*from); err != nil {
			return err
		}
		if f.CreatedTo, err = parseTime(*to); err != nil {
			return err
		}
		if f.CreatedTo.IsZero() {
			f.CreatedTo = time.Now().UTC()
		}
		if f.RuntimeStatus, err = statuses(*status); err != nil {
			return err
		}
		n, err := c.PurgeBy(ctx, f)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "purged %d instances\n", n)
		return nil
	}
	fmt.Fprintln(stderr, usage)
	return fmt.Errorf("unknown command %q", cmd)
}

func statuses(s string) ([]history.Status, error) {
	var out []history.Status
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		st, err := history.ParseStatus(p)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not an ISO-8601 time like 2026-01-02T03:04:05Z", s)
	}
	return t, nil
}

func rawJSON(s string) json.RawMessage {
	if s == "" || !json.Valid([]byte(s)) {
		return json.RawMessage("null")
	}
	return json.RawMessage(s)
}
