// Command recluster runs a stack of services, each a cluster of worker
// processes, reloaded with zero downtime. See README.md.
package main

import (
	"os"

	"github.com/recluster/recluster/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], cli.Stdio()))
}
