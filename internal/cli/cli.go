// Package cli is recluster's command line: a run function per verb, over
// injected IO (in, out, err and the environment), so that main stays a
// line long. The verbs parse their own flags. The tests run a verb that
// starts nothing (check, help, completion) in their own process through
// Main; everything else through the real binary, as users do.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/recluster/recluster/config"
)

// Exit codes.
const (
	ExitOK     = 0
	ExitFailed = 1 // the verb ran and what it asked for failed
	ExitUsage  = 2 // the command line itself was wrong
	// ExitCut: a reload succeeded, but stopping the old workers cut
	// requests or connections (the answer names each).
	ExitCut = 3
)

// IO is where a verb reads and writes; Stdio is the real one.
type IO struct {
	In       io.Reader
	Out, Err io.Writer
	// Getenv and Getwd stand in for the process's own, for tests.
	Getenv func(string) string
	Getwd  func() (string, error)
}

// Stdio is the process's own streams and environment.
func Stdio() IO {
	return IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr, Getenv: os.Getenv, Getwd: os.Getwd}
}

// usageError marks a wrong command line: it prints usage and exits 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// exitError ends a verb with an exit code of its own: `up
// --exit-on-failure` passes on the code of what failed, `run` its
// command's. msg, when set, is printed as any error is.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

// silentError is a failure the verb already reported in full.
var errReported = errors.New("reported")

type verb struct {
	name    string
	aliases []string
	args    string
	summary string
	// run parses args with the verb's own flag set (common holds -f) and
	// does the work.
	run func(io IO, c *common, args []string) error
	// followFlag: -f means follow for this verb (logs, as in tail -f);
	// its config file is --file, or -f FILE when FILE exists.
	followFlag bool
	// services: the verb's arguments are service names, for completion.
	services bool
	// hidden verbs are for recluster's own use (completion scripts).
	hidden bool
}

var verbs []*verb

func register(v *verb) { verbs = append(verbs, v) }

func lookup(name string) *verb {
	for _, v := range verbs {
		if v.name == name {
			return v
		}
		for _, a := range v.aliases {
			if a == name {
				return v
			}
		}
	}
	return nil
}

// common holds the flags every verb takes.
type common struct {
	file string
	fs   *flag.FlagSet
	v    *verb
}

func newCommon(io IO, v *verb) *common {
	c := &common{v: v}
	c.fs = flag.NewFlagSet("recluster "+v.name, flag.ContinueOnError)
	c.fs.SetOutput(io.Err)
	const fileUsage = "the config `FILE` (default: recluster.yml or recluster.yaml here or in a parent, else ./Procfile)"
	c.fs.StringVar(&c.file, "file", "", fileUsage)
	if !v.followFlag {
		c.fs.StringVar(&c.file, "f", "", fileUsage)
	}
	c.fs.Usage = func() {
		fmt.Fprintf(io.Err, "usage: recluster %s [-f FILE] [flags] %s\n\n%s\n\nflags:\n", v.name, v.args, v.summary)
		c.fs.PrintDefaults()
	}
	return c
}

// parse accepts flags before and after positional arguments, so that
// `recluster logs api -f x.yml` works as users type it.
func (c *common) parse(args []string) ([]string, error) {
	var positional []string
	for {
		if err := c.fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, flag.ErrHelp
			}
			return nil, &usageError{err.Error()}
		}
		rest := c.fs.Args()
		// flag stops at "--" and drops it: all after it is positional,
		// flags of a command to run included.
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(positional, rest...), nil
		}
		args = rest
		if len(args) == 0 {
			return positional, nil
		}
		if args[0] == "--" {
			return append(positional, args[1:]...), nil
		}
		positional = append(positional, args[0])
		args = args[1:]
	}
}

// noArgs parses args for a verb that takes flags only.
func (c *common) noArgs(args []string, hint string) error {
	rest, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return usagef("%s takes no arguments%s, got %q", c.v.name, hint, strings.Join(rest, " "))
	}
	return nil
}

// configPath is -f, else what config.Find finds from the working folder.
func (c *common) configPath(io IO) (string, error) {
	if c.file != "" {
		return c.file, nil
	}
	wd, err := io.Getwd()
	if err != nil {
		return "", err
	}
	return config.Find(wd)
}

// Main runs one command line and returns its exit code.
func Main(args []string, io IO) int {
	if len(args) == 0 {
		printUsage(io.Err)
		return ExitUsage
	}
	name, rest := args[0], args[1:]
	// `recluster -f x.yml up`: a leading -f belongs to the verb that follows.
	var lead []string
	for len(rest) > 0 && (name == "-f" || strings.HasPrefix(name, "-f=")) {
		if name == "-f" {
			lead = append(lead, "-f", rest[0])
			rest = rest[1:]
		} else {
			lead = append(lead, name)
		}
		if len(rest) == 0 {
			name = ""
			break
		}
		name, rest = rest[0], rest[1:]
	}
	switch name {
	case "help", "-h", "-help", "--help":
		if len(rest) > 0 {
			v := lookup(rest[0])
			if v == nil {
				return unknownCommand(io, rest[0])
			}
			// The verb's own flags, as `CMD --help` shows them: its run
			// function defines them and stops at --help.
			helpIO := io
			helpIO.Err = io.Out
			v.run(helpIO, newCommon(helpIO, v), []string{"--help"})
			return ExitOK
		}
		printUsage(io.Out)
		return ExitOK
	case "-v", "--version":
		name = "version"
	}
	v := lookup(name)
	if v == nil {
		return unknownCommand(io, name)
	}
	if wantsHelp(rest) {
		io.Err = io.Out // asked for, help is output, not an error
	}
	c := newCommon(io, v)
	err := v.run(io, c, append(lead, rest...))
	var ue *usageError
	var ee *exitError
	switch {
	case err == nil:
		return ExitOK
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintf(io.Err, "recluster %s: %s\n", v.name, ee.msg)
		}
		return ee.code
	case errors.Is(err, flag.ErrHelp):
		return ExitOK
	case errors.As(err, &ue):
		fmt.Fprintf(io.Err, "recluster %s: %s\n\n", v.name, ue.msg)
		c.fs.Usage()
		return ExitUsage
	case errors.Is(err, errReported):
		return ExitFailed
	default:
		fmt.Fprintf(io.Err, "recluster %s: %v\n", v.name, err)
		return ExitFailed
	}
}

func unknownCommand(io IO, name string) int {
	fmt.Fprintf(io.Err, "recluster: unknown command %q", name)
	if guess := config.Closest(name, commandNames()); guess != "" {
		fmt.Fprintf(io.Err, " (did you mean %q?)", guess)
	}
	fmt.Fprint(io.Err, "\n\n")
	printUsage(io.Err)
	return ExitUsage
}

// commandNames lists every verb and alias users may type.
func commandNames() []string {
	names := []string{"help"}
	for _, v := range verbs {
		if !v.hidden {
			names = append(names, v.name)
			names = append(names, v.aliases...)
		}
	}
	return names
}

func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "-h", "-help", "--help":
			return true
		case "--":
			return false
		}
	}
	return false
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "recluster runs a stack of services, each a cluster of workers, reloaded with zero downtime.")
	fmt.Fprintln(w, "\nusage: recluster COMMAND [-f FILE] [flags] [args]\n\ncommands:")
	sorted := append([]*verb(nil), verbs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	for _, v := range sorted {
		if !v.hidden {
			fmt.Fprintf(w, "  %-10s %s\n", v.name, firstLine(v.summary))
		}
	}
	fmt.Fprintln(w, "\nEvery command takes -f FILE; `recluster help COMMAND` tells more.")
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
