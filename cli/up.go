package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/recluster/recluster/config"
	"github.com/recluster/recluster/control"
	"github.com/recluster/recluster/logmux"
	"github.com/recluster/recluster/runner"
)

func init() {
	register(&verb{
		name:    "up",
		args:    "[SERVICE…]",
		summary: "Run the services (all, or the named ones and what they need) in the foreground.\nCtrl-C stops them gracefully; a second Ctrl-C kills them. SIGUSR2 reloads every service.",
		run:     runUp,
	})
}

// colorFlag is --color=auto|always|never.
type colorFlag struct{ value string }

func (c *colorFlag) String() string { return c.value }
func (c *colorFlag) Set(v string) error {
	switch v {
	case "auto", "always", "never":
		c.value = v
		return nil
	}
	return fmt.Errorf("%q: use auto, always or never", v)
}

// enabled decides colour once, at the edge: NO_COLOR wins over auto, and
// auto means a terminal.
func (c *colorFlag) enabled(io IO, out io.Writer) bool {
	switch c.value {
	case "always":
		return true
	case "never":
		return false
	}
	if io.Getenv("NO_COLOR") != "" {
		return false
	}
	f, ok := out.(*os.File)
	return ok && isatty.IsTerminal(f.Fd())
}

func runUp(io IO, c *common, args []string) error {
	color := &colorFlag{value: "auto"}
	c.fs.Var(color, "color", "colour the output: auto, always or never")
	timestamps := c.fs.Bool("timestamps", false, "start each line with the time")
	port := c.fs.Int("port", config.DefaultProcfilePortBase, "the first PORT in Procfile mode")
	names, err := c.parse(args)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(io, c, *port)
	if err != nil {
		return err
	}
	for _, n := range names {
		if cfg.Service(n) == nil {
			return fmt.Errorf("%w %q; %s has: %s", runner.ErrUnknownService, n, cfg.Path, strings.Join(cfg.Names(), ", "))
		}
	}
	paths, err := control.PathsFor(cfg.Path, io.Getenv)
	if err != nil {
		return err
	}
	if err := paths.Ensure(); err != nil {
		return err
	}
	lock, err := paths.TakeLock()
	if err != nil {
		var re *control.RunningError
		if errors.As(err, &re) {
			return fmt.Errorf("%s: %w; use `recluster reload`, `recluster status` or `recluster down`", cfg.Path, re)
		}
		return err
	}
	defer lock.Unlock()

	maxWorkers := 1
	for _, s := range cfg.Services {
		maxWorkers = max(maxWorkers, s.Workers)
	}
	mux := logmux.New(io.Out, logmux.Options{
		Color: color.enabled(io, io.Out), Timestamps: *timestamps,
		Services: cfg.Names(), MaxWorkers: maxWorkers,
	})
	// A closed stdout must not kill recluster with SIGPIPE: the workers and
	// the log ring go on, and `recluster logs` still reads them.
	signal.Ignore(syscall.SIGPIPE)

	if ended, err := runner.EndLeftoverGroups(paths.Groups); err != nil {
		mux.System("", fmt.Sprintf("reading %s: %v", paths.Groups, err))
	} else if len(ended) > 0 {
		mux.System("", fmt.Sprintf("ended %d process group(s) left by a recluster that did not stop cleanly", len(ended)))
	}
	groups, err := runner.OpenGroupLog(paths.Groups)
	if err != nil {
		return err
	}
	defer groups.Close()

	opts := config.Options{Getenv: io.Getenv, PortBase: *port}
	starter := runner.NewOSStarter(paths.Dir, groups)
	m, err := runner.New(cfg, runner.Options{
		Starter: starter,
		Output:  runner.MuxOutput(mux),
		Load:    func() (*config.Config, error) { return opts.Load(cfg.Path) },
	})
	if err != nil {
		return err
	}

	ln, err := control.Listen(paths.Socket)
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	stopped := make(chan struct{})
	srv := control.NewServer(m, mux, control.Info{Pid: os.Getpid(), Config: cfg.Path, Version: version()},
		func(ctx context.Context) error {
			mux.System("", "down requested; stopping every service")
			stop()
			select {
			case <-stopped:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	// The serving goroutines are owned by runUp; each ends when
	// srv.Shutdown is called below.
	var serving sync.WaitGroup
	serve := func(ln net.Listener) {
		serving.Add(1)
		go func() {
			defer serving.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				mux.System("", fmt.Sprintf("control socket: %v", err))
			}
		}()
	}
	serve(ln)
	// Owned by runUp; ends when stopWatch closes. A deleted control socket
	// is made anew, so the other commands can still reach this instance.
	stopWatch := make(chan struct{})
	serving.Add(1)
	go func() {
		defer serving.Done()
		watchRemoval(paths.Socket, stopWatch, func() {
			if ln, err := control.Listen(paths.Socket); err == nil {
				mux.System("", "the control socket was removed; made it anew")
				serve(ln)
			}
		})
	}()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR2)
	defer signal.Stop(sigs)
	// Owned by runUp; ends when the manager has stopped.
	signalsDone := make(chan struct{})
	go func() {
		defer close(signalsDone)
		stopping := false
		for {
			select {
			case sig := <-sigs:
				switch {
				case sig == syscall.SIGUSR2:
					go func() {
						if err := m.Reload(runCtx, nil); err != nil {
							mux.System("", "reload (SIGUSR2) failed: "+err.Error())
						}
					}()
				case !stopping:
					stopping = true
					mux.System("", fmt.Sprintf("%s: stopping every service (again to kill them)", signalName(sig)))
					stop()
				case sig == syscall.SIGINT:
					mux.System("", "second interrupt: killing every worker")
					m.Kill()
				}
			case <-stopped:
				return
			}
		}
	}()

	rel, _ := filepath.Rel(mustGetwd(io), cfg.Path)
	if rel == "" || strings.HasPrefix(rel, "..") {
		rel = cfg.Path
	}
	mux.System("", fmt.Sprintf("recluster %s (pid %d) running %s", version(), os.Getpid(), rel))
	// Owned by runUp; ends at the first of ready or stop.
	go func() {
		select {
		case <-m.Ready():
			mux.System("", "every service is ready")
		case <-stopped:
		}
	}()
	err = m.Run(runCtx, names)
	close(stopped)
	<-signalsDone
	mux.System("", "every service stopped")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	close(stopWatch)
	srv.Shutdown(shutdownCtx)
	serving.Wait()
	return err
}

func mustGetwd(io IO) string {
	wd, _ := io.Getwd()
	return wd
}

func signalName(sig os.Signal) string {
	if s, ok := sig.(syscall.Signal); ok {
		switch s {
		case syscall.SIGINT:
			return "SIGINT"
		case syscall.SIGTERM:
			return "SIGTERM"
		case syscall.SIGHUP:
			return "SIGHUP"
		}
	}
	return sig.String()
}
