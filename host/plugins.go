package main

import (
	"github.com/stratus-dev/stratus/host/app"
	"github.com/stratus-dev/stratus/triggers/blob"
	"github.com/stratus-dev/stratus/triggers/queue"
	"github.com/stratus-dev/stratus/triggers/timer"
)

// plugins adds the trigger plugins and extensions beyond HTTP.
func plugins(opts *app.Options) {
	opts.Triggers = append(opts.Triggers, timer.Register, queue.Register, blob.Register)
}
