// Command recluster-top is recluster's live view, which `recluster top`
// and `recluster up --top` run; it is a program of its own so that `up`
// does not carry the view's code (internal/view says why). Run by hand:
//
//	recluster-top -f recluster.yml
//
// Exit codes: 0 when the view was closed, 3 when `up` ended under it, 1
// when it could not reach `up`, 2 for a wrong command line.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/mattn/go-isatty"

	"github.com/recluster/recluster/config"
	"github.com/recluster/recluster/internal/control"
	"github.com/recluster/recluster/internal/view"
)

// exitUpEnded is what internal/cli's viewUpEnded expects.
const exitUpEnded = 3

func main() {
	fs := flag.NewFlagSet("recluster-top", flag.ContinueOnError)
	file := fs.String("f", "", "the stack's config file (default: recluster.yml or Procfile here or above)")
	every := fs.Duration("interval", time.Second, "how often to look again (at least 100ms)")
	colour := fs.String("color", "auto", "colour: auto (a terminal, unless NO_COLOR is set), always, never")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if err := usage(fs, *every, *colour); err != nil {
		fmt.Fprintln(os.Stderr, "recluster top:", err)
		os.Exit(2)
	}
	client, err := clientFor(*file)
	if err != nil {
		fmt.Fprintln(os.Stderr, "recluster top:", err)
		os.Exit(1)
	}
	color := *colour == "always" || *colour == "auto" && os.Getenv("NO_COLOR") == "" && isatty.IsTerminal(os.Stdout.Fd())
	ended, err := view.Run(os.Stdin, os.Stdout, client, color, *every)
	switch {
	case err != nil:
		fmt.Fprintln(os.Stderr, "recluster top:", err)
		os.Exit(1)
	case ended != "":
		fmt.Fprintln(os.Stderr, ended)
		os.Exit(exitUpEnded)
	}
}

func usage(fs *flag.FlagSet, every time.Duration, colour string) error {
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("%q: takes no arguments", fs.Arg(0))
	case every < 100*time.Millisecond:
		return fmt.Errorf("--interval %s: at least 100ms", every)
	case colour != "auto" && colour != "always" && colour != "never":
		return fmt.Errorf("--color %q: use auto, always or never", colour)
	}
	return nil
}

// clientFor reaches the `up` that runs file, found as recluster finds it.
func clientFor(file string) (*control.Client, error) {
	if file == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, err
		}
		if file, err = config.Find(wd); err != nil {
			return nil, err
		}
	}
	return control.ClientFor(file, os.Getenv)
}
