// Command recluster runs a stack of services, each a cluster of worker
// processes, reloaded with zero downtime. See README.md.
package main

import (
	"os"

	"github.com/recluster/recluster/cli"
	"github.com/recluster/recluster/runner"
)

func main() {
	// recluster re-executes itself to start workers that inherit sockets;
	// in that role it never returns from here.
	runner.RunShimIfRequested()
	os.Exit(cli.Main(os.Args[1:], cli.Stdio()))
}
