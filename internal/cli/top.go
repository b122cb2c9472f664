package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/recluster/recluster/config"
	"github.com/recluster/recluster/internal/control"
)

func init() {
	register(&verb{name: "top", summary: "A live view of the running stack: services, workers, reloads as they happen, the selected service's log; keys reload, restart, scale, stop and start.", run: runTop})
}

// runTop attaches to a running `up` (foreground or -d) and shows it live
// until q, Ctrl-C, or the end of `up`.
func runTop(io IO, c *common, args []string) error {
	color := &colorFlag{value: "auto"}
	c.fs.Var(color, "color", "colour: auto (a terminal, unless NO_COLOR is set), always, never")
	every := c.fs.Duration("interval", time.Second, "how often to look again (at least 100ms)")
	if err := c.noArgs(args, ""); err != nil {
		return err
	}
	if *every < 100*time.Millisecond {
		return usagef("--interval %s: at least 100ms", *every)
	}
	config, err := configFor(io, c)
	if err != nil {
		return err
	}
	_, err = showTop(io, config, color, *every)
	return err
}

// upWithTop is `up --top`: the stack runs as with -d (its log stream in
// the log file), the view in the foreground; leaving the view with q or
// Ctrl-C stops the stack, as leaving a foreground `up` does.
func upWithTop(io IO, c *common, cfg *config.Config, paths control.Paths, args []string, color *colorFlag) error {
	if _, err := viewBinary(); err != nil {
		return err // before the stack starts, not after
	}
	if err := startDetached(io, cfg, paths, args); err != nil {
		return err
	}
	client, err := clientFor(io, c)
	if err != nil {
		return err
	}
	upEnded, err := showTop(io, cfg.Path, color, time.Second)
	if upEnded {
		return err
	}
	fmt.Fprintln(io.Err, "recluster: the view was closed; stopping every service")
	if downErr := client.Down(context.Background()); downErr != nil && !errors.Is(downErr, control.ErrNotRunning) {
		return downErr
	}
	return err
}

// showTop runs the view, recluster-top, on this terminal until it is
// closed, or `up` ends (upEnded).
func showTop(io IO, config string, color *colorFlag, every time.Duration) (upEnded bool, err error) {
	bin, err := viewBinary()
	if err != nil {
		return false, err
	}
	colour := "never"
	if color.enabled(io, io.Out) {
		colour = "always"
	}
	cmd := exec.Command(bin, "-f", config, "--interval", every.String(), "--color", colour)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = io.In, io.Out, io.Err
	// The terminal's Ctrl-C reaches the view too (the view reads it as a
	// key once the terminal is raw); a stop sent to this process alone is
	// passed on, and this one waits for the view to end either way.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return false, fmt.Errorf("starting the view (%s): %w", bin, err)
	}
	done := make(chan struct{})
	defer close(done)
	// Owned by showTop; ends when the view has ended.
	go func() {
		for {
			select {
			case s := <-sigs:
				if s != os.Interrupt {
					cmd.Process.Signal(s)
				}
			case <-done:
				return
			}
		}
	}()
	err = cmd.Wait()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return false, nil
	case errors.As(err, &exit) && exit.ExitCode() == viewUpEnded:
		return true, nil
	case errors.As(err, &exit) && exit.ExitCode() > 0:
		return false, &exitError{code: exit.ExitCode()} // the view said why
	}
	return false, fmt.Errorf("the view (%s): %w", bin, err)
}

// viewUpEnded is recluster-top's exit code when `up` ended under it
// (cmd/recluster-top).
const viewUpEnded = 3

// viewBinary is recluster-top: beside this executable, as `go install
// ./cmd/...` puts it, or else on PATH.
func viewBinary() (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "recluster-top")
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath("recluster-top"); err == nil {
		return p, nil
	}
	return "", errors.New("the live view is the program recluster-top, found neither beside recluster nor on PATH; " +
		"install both with `CGO_ENABLED=0 go install github.com/recluster/recluster/cmd/...@latest` " +
		"(from a checkout: `go install ./cmd/...`)")
}
