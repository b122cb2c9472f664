package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/recluster/recluster/config"
	"github.com/recluster/recluster/internal/control"
	"github.com/recluster/recluster/logmux"
	"github.com/recluster/recluster/runner"
)

// The actors of a running `up` (upRun.run starts them): what ends it,
// the control socket, signals, reload requests, the ready message and
// the watch for a failed service.

// endWhenDone ends `up` by itself: once nothing is left to run (every
// service completed, failed or blocked), with exit 0 if every one
// completed and 1 naming the others; or, with --exit-on-failure, at the
// first failure, with its exit code. Its return stops every service.
func endWhenDone(ctx context.Context, m *runner.Manager, failures <-chan runner.Event, mux *logmux.Mux, failFast string, watched bool) error {
	select {
	case <-ctx.Done():
		return nil
	case e := <-failures:
		what := fmt.Sprintf("%s failed", e.Service)
		if e.Kind == runner.EventFailed && e.Detail != "" {
			what += ": " + e.Detail
		}
		switch e.Kind {
		case runner.EventCrashed:
			what = fmt.Sprintf("%s.%d (pid %d) ended: %s", e.Service, e.Worker, e.Pid, e.Detail)
		case runner.EventBlocked:
			what = fmt.Sprintf("%s is blocked: %s", e.Service, e.Detail)
			e.Code = 1
		}
		mux.System("", fmt.Sprintf("%s; stopping every service (%s)", what, failFast))
		if e.Kind == runner.EventCrashed {
			ref := logmux.Source{Service: e.Service, ID: e.Worker, Generation: e.Generation}
			if tail := mux.Tail(ref, 10); len(tail) > 0 {
				what += "; its last lines:"
				for _, l := range tail {
					what += "\n  " + printable(string(l.Text))
				}
			}
		}
		return &exitError{code: max(e.Code, 1), msg: what}
	case <-m.Settled():
	}
	sts, err := m.Status(ctx)
	if err != nil {
		return nil // stopping already
	}
	var failed []string
	for _, s := range sts {
		if s.State == "failed" || s.State == "blocked" {
			failed = append(failed, s.Name+" "+s.State)
		}
	}
	if len(failed) == 0 {
		mux.System("", "nothing is left to run: every service completed")
		return nil
	}
	what := strings.Join(failed, ", ")
	if watched {
		// A dev loop survives any save: the next one tries again.
		mux.System("", fmt.Sprintf("nothing is left to run: %s; waiting for a save to try again (Ctrl-C stops)", what))
		<-ctx.Done()
		return nil
	}
	mux.System("", fmt.Sprintf("nothing is left to run: %s", what))
	return &exitError{code: ExitFailed, msg: what}
}

// serveControl serves the control API until ctx ends, on ln and on every
// socket made anew after something deleted the last: a cleaner of /tmp (or
// a user) removing it would otherwise leave `up` unreachable. The watcher
// is stopped before the server unlinks its socket, so that the shutdown
// is not taken for a deletion.
func serveControl(ctx context.Context, srv *control.Server, ln net.Listener, path string, mux *logmux.Mux) error {
	var serving sync.WaitGroup
	serve := func(ln net.Listener) {
		serving.Add(1)
		// Owned by serveControl; ends when srv.Shutdown is called below.
		go func() {
			defer serving.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				mux.System("", fmt.Sprintf("control socket: %v", err))
			}
		}()
	}
	serve(ln)
	stopWatch := make(chan struct{})
	watchDone := make(chan struct{})
	// Owned by serveControl; ends when stopWatch closes.
	go func() {
		defer close(watchDone)
		watchRemoval(path, stopWatch, func() {
			if ln, err := control.Listen(path); err == nil {
				mux.System("", "the control socket was removed; made it anew")
				serve(ln)
			}
		})
	}()
	<-ctx.Done()
	close(stopWatch)
	<-watchDone
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(shutdownCtx)
	serving.Wait()
	return nil
}

// handleSignals turns signals into actions until ctx ends: the first
// SIGINT, SIGTERM or SIGHUP stops every service, a second SIGINT kills
// them, SIGUSR2 asks for a reload of all.
func handleSignals(ctx context.Context, sigs <-chan os.Signal, reloads chan<- struct{}, mux *logmux.Mux, stop, kill func()) {
	stopping := false
	for {
		select {
		case sig := <-sigs:
			switch {
			case sig == syscall.SIGUSR2:
				select {
				case reloads <- struct{}{}:
				default: // one is already asked for
				}
			case !stopping:
				stopping = true
				mux.System("", fmt.Sprintf("%s: stopping every service (again to kill them)", signalName(sig)))
				stop()
			case sig == syscall.SIGINT:
				mux.System("", "second interrupt: killing every worker")
				kill()
			}
		case <-ctx.Done():
			return
		}
	}
}

// reloadOnRequest reloads every service for each request (SIGUSR2),
// through the same path as `recluster reload`. Each reload runs on its
// own goroutine, so that a newer one supersedes it as the control API's
// would; all are joined before it returns, when ctx ends.
func reloadOnRequest(ctx context.Context, reloads <-chan struct{}, ctl control.Controller, mux *logmux.Mux) {
	var running sync.WaitGroup
	defer running.Wait()
	for {
		select {
		case <-reloads:
			running.Add(1)
			// Owned by reloadOnRequest; ends when the reload does, which
			// ctx bounds.
			go func() {
				defer running.Done()
				mux.System("", "SIGUSR2: reloading every service")
				if _, err := ctl.Reload(withTrigger(ctx, "SIGUSR2"), nil); err != nil && ctx.Err() == nil {
					mux.System("", "reload (SIGUSR2) failed: "+err.Error())
				}
			}()
		case <-ctx.Done():
			return
		}
	}
}

// announceReady says "every service is ready" once every service is and
// saves count (watching is closed), tells `up -d`'s parent, and returns
// startup's garbage; then it waits for ctx to end.
func announceReady(ctx context.Context, m *runner.Manager, watching <-chan struct{}, mux *logmux.Mux, child *detachedChild, cfg *config.Config) {
	select {
	case <-m.Ready():
		select {
		case <-watching:
		case <-ctx.Done():
			return
		}
		mux.System("", "every service is ready")
		child.ready()
		freeStartupGarbage(cfg)
	case <-ctx.Done():
	}
	<-ctx.Done()
}

// failureWatch is what ends `up` at a failure: with --exit-on-failure,
// and for the background instance of `up -d` until it is ready. It
// returns where the first failure goes, the observer of the runner's
// events that sends it there (nil when nothing ends on a failure), and
// how the end is to be named.
func failureWatch(exitOnFailure bool, child *detachedChild) (chan runner.Event, func(runner.Event), string) {
	failures := make(chan runner.Event, 1)
	failFast := "--exit-on-failure"
	if child != nil && !exitOnFailure {
		failFast = "up -d: not every service was ready"
	}
	if !exitOnFailure && child == nil {
		return failures, nil, failFast
	}
	onEvent := func(e runner.Event) {
		if !exitOnFailure && !child.failingFast() {
			return
		}
		switch e.Kind {
		case runner.EventCrashed, runner.EventFailed, runner.EventBlocked:
			select {
			case failures <- e:
			default: // the first is what counts
			}
		}
	}
	return failures, onEvent, failFast
}
