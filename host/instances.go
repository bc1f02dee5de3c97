package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/stratus-dev/stratus/bindings/azstorage"
	"github.com/stratus-dev/stratus/durable"
	"github.com/stratus-dev/stratus/durable/extension"
	"github.com/stratus-dev/stratus/durable/httpapi"
	"github.com/stratus-dev/stratus/functions"
	"github.com/stratus-dev/stratus/host/cli"
	"github.com/stratus-dev/stratus/host/config"
	"github.com/stratus-dev/stratus/host/registry"
)

// runInstances is `host [--script-root DIR] instances ...`: the operator CLI
// over the task hub named by the script root's host.json, talking to storage
// directly (no running host is needed).
func runInstances(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("host instances", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("script-root", ".", "directory holding host.json and local.settings.json")
	// Flags before the subcommand are ours; parsing stops at the subcommand.
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	open := func(ctx context.Context) (httpapi.Client, error) {
		cfg, err := config.Load(*root)
		if err != nil {
			return nil, err
		}
		cs, err := cfg.Settings.Connection(extension.ConnectionName(&cfg.Host))
		if err != nil {
			return nil, err
		}
		clients, err := azstorage.Open(cs)
		if err != nil {
			return nil, err
		}
		b, err := extension.OpenBackend(clients, &cfg.Host, slog.New(slog.DiscardHandler))
		if err != nil {
			return nil, err
		}
		// Creates the hub when no host has run yet, and adopts the partition
		// count an existing hub records, so that messages reach the control
		// queues the hosts read whatever host.json says.
		if err := b.CreateResources(ctx); err != nil {
			return nil, fmt.Errorf("open task hub %s: %w", b.HubName(), err)
		}
		reg := registry.New()
		if err := functions.Register(reg); err != nil {
			return nil, fmt.Errorf("register functions: %w", err)
		}
		return extension.NewAPIClient(durable.NewClient(b), reg), nil
	}
	return cli.Run(ctx, rest, stdout, stderr, open)
}
