// Command host runs the Stratus function host: it loads host.json and
// local.settings.json from the script root, registers the app's functions
// and serves them until SIGINT or SIGTERM.
//
//	go run ./host [--port N] [--script-root DIR] [--log-format text|json] [--no-auth]
//	go run ./host instances list|show|start|raise|terminate|suspend|resume|rewind|purge ...
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/stratus-dev/stratus/functions"
	"github.com/stratus-dev/stratus/host/app"
	"github.com/stratus-dev/stratus/host/config"
)

func main() {
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		// --help printed the usage: not a failure.
	default:
		fmt.Fprintln(os.Stderr, "stratus:", oneLine(err))
		os.Exit(1)
	}
}

// oneLine renders err on a single line: start-up problems (several bad
// fields, several functions missing one setting) are joined with "; " so
// that the host always fails with one clear line, never a stack trace.
func oneLine(err error) string {
	var parts []string
	for _, l := range strings.Split(err.Error(), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "instances" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return runInstances(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("host", flag.ContinueOnError)
	fs.SetOutput(stderr)
	port := fs.Int("port", 0, "HTTP port (default: Host.LocalHttpPort from local.settings.json, else 7071)")
	root := fs.String("script-root", "", "directory holding host.json and local.settings.json (default: the current directory)")
	bind := fs.String("bind", "127.0.0.1", "address to listen on (use 0.0.0.0 in a container)")
	logFormat := fs.String("log-format", "text", "log format: text (human-readable) or json")
	noAuth := fs.Bool("no-auth", false, "turn off key checks for HTTP functions, admin and durable APIs (local development only)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: host [flags]\n\nRuns the Stratus function host: loads host.json and local.settings.json from\nthe script root, registers the app's functions and serves them until SIGINT or\nSIGTERM. A configuration problem stops it with one line naming the file and\nthe field, and exit status 1.\n\n       host instances <command> ...\n\nManages durable orchestration instances in the task hub from the terminal\n(list, show, start, raise, terminate, suspend, resume, rewind, purge); run\n`host instances help` for its commands.\n\nFlags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *logFormat != "text" && *logFormat != "json" {
		return fmt.Errorf("--log-format must be text or json, not %q", *logFormat)
	}
	if *root == "" {
		*root = "."
	}
	cfg, err := config.Load(*root)
	if err != nil {
		return err
	}
	log := app.NewLogger(stdout, *logFormat, cfg.Host.Logging.LogLevel)
	opts := app.Options{
		Config:   cfg,
		NoAuth:   *noAuth,
		Logger:   log,
		Register: functions.Register,
	}
	plugins(&opts)
	h, err := app.New(opts)
	if err != nil {
		return err
	}
	if h.Keys.Generated && !*noAuth {
		log.Info("no master key configured: generated one for this run (set FUNCTIONS_MASTER_KEY to choose it)", "master_key", h.Keys.Master())
	}
	addr := app.ListenAddr(*bind, *port, cfg)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return h.Run(ctx, ln)
}
