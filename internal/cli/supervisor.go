package cli

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/recluster/recluster/internal/sdnotify"
	"github.com/recluster/recluster/logmux"
	"github.com/recluster/recluster/runner"
)

// supervisor tells recluster's own supervisor (systemd with Type=notify,
// through NOTIFY_SOCKET) what the stack does: READY=1 once every service
// is ready, RELOADING=1 then READY=1 around reloads, STOPPING=1 when it
// stops, and WATCHDOG=1 while the manager answers. It is one actor of
// up's group, ended by its context; the manager's events only poke it.
type supervisor struct {
	n    *sdnotify.Notifier
	m    *runner.Manager
	mux  *logmux.Mux
	poke chan struct{}
	// reloadBegan is set by the event that starts a reload, so that a
	// reload over before the actor looks is still told.
	reloadBegan atomic.Bool
	failing     bool // said that a send failed; said once
}

func newSupervisor(n *sdnotify.Notifier, mux *logmux.Mux) *supervisor {
	return &supervisor{n: n, mux: mux, poke: make(chan struct{}, 1)}
}

// onEvent is called from the clusters' loops: it never blocks. Only what
// can begin or end a reload pokes the actor: a reload ends by its own
// event, or, stopped or superseded, with its workers' exits.
func (s *supervisor) onEvent(e runner.Event) {
	switch e.Kind {
	case runner.EventReloading:
		s.reloadBegan.Store(true)
	case runner.EventReloaded, runner.EventReloadFailed, runner.EventExited:
	default:
		return
	}
	select {
	case s.poke <- struct{}{}:
	default:
	}
}

// run is the actor. stopping is closed when the services begin to stop.
func (s *supervisor) run(ctx context.Context, stopping <-chan struct{}) {
	var watchdog <-chan time.Time
	if every := s.n.Watchdog(); every > 0 {
		t := time.NewTicker(every)
		defer t.Stop()
		watchdog = t.C
	}
	ready, reloading, stopped := false, false, false
	readyCh := s.m.Ready() // nil once seen: a closed channel is always ready
	for {
		select {
		case <-ctx.Done():
			if !stopped {
				s.send(s.n.Stopping("stopping"))
			}
			return
		case <-stopping:
			stopping = nil
			stopped = true
			s.send(s.n.Stopping("stopping every service"))
		case <-readyCh:
			readyCh = nil
			if !stopped {
				ready = true
				s.send(s.n.Ready(s.summary(ctx)))
			}
		case <-s.poke:
			if !ready || stopped {
				s.reloadBegan.Store(false)
				continue
			}
			began := s.reloadBegan.Swap(false)
			busy, summary := s.reloads(ctx)
			if (began || busy) && !reloading {
				reloading = true
				s.send(s.n.Reloading("reloading"))
			}
			if reloading && !busy {
				reloading = false
				s.send(s.n.Ready(summary))
			}
		case <-watchdog:
			// A manager that no longer answers within the interval is
			// stuck: no ping, and systemd restarts it.
			wctx, cancel := context.WithTimeout(ctx, s.n.Watchdog())
			_, err := s.m.Status(wctx)
			cancel()
			if err == nil {
				s.send(s.n.Send("WATCHDOG=1"))
			}
		}
	}
}

// reloads says whether any service is reloading, and the status line.
func (s *supervisor) reloads(ctx context.Context) (bool, string) {
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := s.m.Status(sctx)
	if err != nil {
		return false, "status unknown: " + err.Error()
	}
	busy := false
	for _, svc := range st {
		busy = busy || svc.Reloading
	}
	return busy, summarize(st)
}

func (s *supervisor) summary(ctx context.Context) string {
	_, line := s.reloads(ctx)
	return line
}

// summarize is systemctl status's one line: services and ready workers.
func summarize(st []runner.ServiceStatus) string {
	workers, ready := 0, 0
	var notRunning []string
	for _, svc := range st {
		for _, w := range svc.Workers {
			workers++
			if w.State == runner.Ready {
				ready++
			}
		}
		if svc.State != "running" {
			notRunning = append(notRunning, svc.Name+" "+svc.State)
		}
	}
	line := fmt.Sprintf("%d services, %d of %d workers ready", len(st), ready, workers)
	if len(notRunning) > 0 {
		line += "; " + strings.Join(notRunning, ", ")
	}
	return line
}

func (s *supervisor) send(err error) {
	if err != nil && !s.failing {
		s.mux.System("", fmt.Sprintf("telling the supervisor (NOTIFY_SOCKET): %v; this is said once", err))
	}
	s.failing = err != nil
}
