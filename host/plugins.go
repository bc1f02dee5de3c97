package main

import "github.com/stratus-dev/stratus/host/app"

// plugins adds the trigger plugins and extensions beyond HTTP.
func plugins(opts *app.Options) {}
