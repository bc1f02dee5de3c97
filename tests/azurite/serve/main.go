// Command serve starts the pinned Azurite on free loopback ports, writes its
// connection string to the file named by its first argument, and stops
// Azurite when it receives SIGINT or SIGTERM. `make test` uses it to give all
// test packages one Azurite that is stopped even when tests fail.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/stratus-dev/stratus/tests/azurite"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: serve CONNECTION-STRING-FILE")
		os.Exit(2)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	inst, err := azurite.Launch()
	if err != nil {
		fmt.Fprintln(os.Stderr, "azurite:", err)
		os.Exit(1)
	}
	defer inst.Stop()
	tmp := os.Args[1] + ".tmp"
	if err := os.WriteFile(tmp, []byte(inst.ConnectionString), 0o600); err == nil {
		err = os.Rename(tmp, os.Args[1])
	}
	<-sig
}
