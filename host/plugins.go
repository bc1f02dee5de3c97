package main

import (
	"github.com/stratus-dev/stratus/durable/extension"
	"github.com/stratus-dev/stratus/host/app"
	"github.com/stratus-dev/stratus/triggers"
	"github.com/stratus-dev/stratus/triggers/blob"
	"github.com/stratus-dev/stratus/triggers/queue"
	"github.com/stratus-dev/stratus/triggers/timer"
)

// plugins adds the trigger plugins and extensions beyond HTTP: one line each.
func plugins(opts *app.Options) {
	opts.Triggers = append(opts.Triggers,
		func(r *triggers.Registry) { timer.Register(r) },
		func(r *triggers.Registry) { queue.Register(r) },
		func(r *triggers.Registry) { blob.Register(r) },
	)
	opts.Extensions = append(opts.Extensions, extension.New())
}
