package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is set at build time with -ldflags "-X github.com/recluster/recluster/cli.Version=v1.2.3";
// otherwise the module version that `go install` recorded is used.
var Version = ""

func init() {
	register(&verb{
		name:    "version",
		summary: "Print recluster's version.",
		run: func(io IO, c *common, args []string) error {
			if _, err := c.parse(args); err != nil {
				return err
			}
			fmt.Fprintf(io.Out, "recluster %s (%s %s/%s)\n", version(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		},
	})
}

func version() string {
	if Version != "" {
		return Version
	}
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" && info.Main.Version != "(devel)" {
		return info.Main.Version
	}
	return "devel"
}
