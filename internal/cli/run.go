package cli

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/recluster/recluster/config"
	"github.com/recluster/recluster/runner"
	"golang.org/x/sys/unix"
)

func init() {
	register(&verb{
		name:     "run",
		services: true,
		args:     "SERVICE [-- COMMAND ARGS…]",
		summary: "Run a one-off command with SERVICE's environment (env, env files, dir, RECLUSTER_SERVICE; PORT in Procfile mode),\n" +
			"attached to this terminal, and exit with its code (128+n when signal n ended it). With no COMMAND, run the\n" +
			"service's own command. Works with or without a running `up`; signals sent to recluster go to the command.",
		run: runRun,
	})
}

// forwarded are the signals recluster passes on to the command it runs.
var forwarded = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT, syscall.SIGUSR1, syscall.SIGUSR2}

func runRun(io IO, c *common, args []string) error {
	port := c.fs.Int("port", config.DefaultProcfilePortBase, "the first PORT in Procfile mode, as `up --port` takes it")
	rest, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		return usagef("name the service whose environment to run in")
	}
	cfg, err := readConfig(io, c, *port, nil)
	if err != nil {
		return err
	}
	svc := cfg.Service(rest[0])
	if svc == nil {
		msg := fmt.Sprintf("no service %q in %s", rest[0], cfg.Path)
		if guess := config.Closest(rest[0], cfg.Names()); guess != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", guess)
		}
		return fmt.Errorf("%s; services: %v", msg, cfg.Names())
	}
	one, err := runner.NewOneOff(svc, os.Environ(), rest[1:])
	if err != nil {
		return err
	}
	code, err := runOneOff(io, one)
	if err != nil {
		return err
	}
	if code != 0 {
		return &exitError{code: code}
	}
	return nil
}

// runOneOff runs the command attached to io and returns its exit code as
// a shell gives it. At a terminal where recluster is in the foreground,
// the command's process group takes the foreground, so that the terminal's
// Ctrl-C, Ctrl-\ and window changes go to it alone, and it may read the
// terminal; recluster takes the foreground back after. Either way the
// command has a process group of its own, to which recluster passes on
// the signals it is sent itself: each reaches the command once.
func runOneOff(io IO, one *runner.OneOff) (int, error) {
	cmd := &exec.Cmd{Path: one.Path, Args: one.Argv, Dir: one.Dir, Env: one.Env,
		Stdin: io.In, Stdout: io.Out, Stderr: io.Err, SysProcAttr: &syscall.SysProcAttr{Setpgid: true}}
	dieWithParent(cmd.SysProcAttr)
	tty, foreground := terminalForeground(io)
	if foreground {
		cmd.SysProcAttr.Foreground, cmd.SysProcAttr.Ctty = true, tty
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwarded...)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	if foreground {
		defer takeForeground(tty)
	}
	waited := make(chan error, 1)
	// Owned by runOneOff; ends when the command does.
	go func() { waited <- cmd.Wait() }()
	for {
		select {
		case sig := <-sigs:
			unix.Kill(-cmd.Process.Pid, sig.(syscall.Signal))
		case err := <-waited:
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				return 0, err
			}
			ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if ws.Signaled() {
				return 128 + int(ws.Signal()), nil
			}
			return ws.ExitStatus(), nil
		}
	}
}

// terminalForeground returns the terminal on io's input, and whether
// recluster's process group is the one in its foreground.
func terminalForeground(io IO) (int, bool) {
	f, ok := io.In.(*os.File)
	if !ok {
		return 0, false
	}
	fd := int(f.Fd())
	pgrp, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	return fd, err == nil && pgrp == unix.Getpgrp()
}

// takeForeground gives the terminal's foreground back to recluster once
// its command has ended. A background group that does so is sent SIGTTOU,
// which is ignored for the moment.
func takeForeground(tty int) {
	signal.Ignore(syscall.SIGTTOU)
	defer signal.Reset(syscall.SIGTTOU)
	unix.IoctlSetPointerInt(tty, unix.TIOCSPGRP, unix.Getpgrp())
}
