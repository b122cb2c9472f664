package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/recluster/recluster/config"
	"github.com/recluster/recluster/internal/watch"
	"github.com/recluster/recluster/logmux"
	"github.com/recluster/recluster/runner"
)

// configWatch is the watch name of the config file itself: no service can
// have it.
const configWatch = "recluster"

// watchList is what `up` watches: every service that has watch, and the
// config file itself when any has.
func watchList(cfg *config.Config) []watch.Service {
	var out []watch.Service
	for _, s := range cfg.Services {
		if s.Watch != nil {
			out = append(out, watch.Service{Name: s.Name, Dir: s.Dir, Watch: *s.Watch})
		}
	}
	if len(out) > 0 && !cfg.Procfile {
		out = append(out, watch.Service{Name: configWatch, Dir: filepath.Dir(cfg.Path),
			Watch: config.Watch{Paths: []string{filepath.Base(cfg.Path)}, Debounce: config.DefaultWatchDebounce, Action: config.WatchReload}})
	}
	return out
}

// watchFiles runs the watcher and acts on what it sees until ctx ends:
// a service's changed files reload (or restart) it, with zero downtime;
// a saved config file reloads the services whose settings changed. A
// failure is said once, by the runner, with the failing output; the old
// generation serves on and the next save tries again. Each change is
// handled on a goroutine of its own, so that a newer save supersedes a
// reload under way; all are joined before it returns. It closes watching
// once its first watches are in place (or once it knows there will be
// none), so that `up` says it is ready only when a save counts.
func watchFiles(ctx context.Context, cfg *config.Config, m *runner.Manager, mux *logmux.Mux, watching chan<- struct{}, own []string) {
	services := watchList(cfg)
	if len(services) == 0 {
		close(watching)
		<-ctx.Done()
		return
	}
	w := watch.New(watch.Options{Busy: m.Building, Log: mux.System, Own: own})
	changes := make(chan watch.Change)
	var running sync.WaitGroup
	defer running.Wait()
	watched := make(chan struct{})
	running.Add(1)
	// Owned by watchFiles; ends when ctx does.
	go func() {
		defer running.Done()
		defer close(watched)
		if err := w.Run(ctx, services, changes); err != nil {
			mux.System("", fmt.Sprintf("%v; files are not watched", err))
		}
	}()
	inPlace := w.Ready()
	loops := newReloadLoops(mux)
	for {
		select {
		case <-inPlace:
			close(watching)
			inPlace = nil
		case ch := <-changes:
			delay := loops.began(ch)
			running.Add(1)
			// Owned by watchFiles, which joins it; ctx bounds it.
			go func() {
				defer running.Done()
				if ch.Service == configWatch {
					reloadConfig(ctx, m, w, mux)
					return
				}
				if !loops.wait(ctx, ch.Service, delay) {
					return
				}
				defer loops.ended(ch.Service)
				act(ctx, ch, m, mux)
			}()
		case <-watched:
			if inPlace != nil { // the watcher could not start
				close(watching)
			}
			<-ctx.Done()
			return
		case <-ctx.Done():
			return
		}
	}
}

func act(ctx context.Context, ch watch.Change, m *runner.Manager, mux *logmux.Mux) {
	what := ch.File
	if ch.Files > 1 {
		what = fmt.Sprintf("%s and %d more", ch.File, ch.Files-1)
	}
	if ch.Action == config.WatchRestart {
		mux.System(ch.Service, fmt.Sprintf("%s: restarting: %s changed", ch.Service, what))
		err := m.Restart(ctx, []string{ch.Service})
		switch {
		case err == nil:
			mux.System(ch.Service, fmt.Sprintf("%s: restarted", ch.Service))
		case ctx.Err() == nil && !errors.Is(err, runner.ErrStopped):
			mux.System(ch.Service, fmt.Sprintf("%s: restart failed: %v", ch.Service, err))
		}
		return
	}
	mux.System(ch.Service, fmt.Sprintf("%s: reloading: %s changed", ch.Service, what))
	m.Reload(runner.WithTrigger(ctx, "watch: "+what), []string{ch.Service}) // the runner says how it ended
}

// reloadConfig applies a saved config file: only what changed is
// reloaded; an invalid edit is reported with its problems and changes
// nothing.
func reloadConfig(ctx context.Context, m *runner.Manager, w *watch.Watcher, mux *logmux.Mux) {
	cfg, err := m.ReloadConfig(runner.WithTrigger(ctx, "config saved"))
	if problems := config.Problems(err); problems != nil {
		lines := make([]string, len(problems))
		for i, p := range problems {
			lines[i] = p.Error()
		}
		mux.System("", "the config file was saved with problems; nothing changed:\n"+strings.Join(lines, "\n"))
		return
	}
	if err != nil {
		if ctx.Err() == nil {
			mux.System("", fmt.Sprintf("the config file was saved; reloading it: %v", err))
		}
		return
	}
	mux.System("", "the config file was saved; what changed in it is in force")
	w.Set(ctx, watchList(cfg))
}

// ownOutputFiles are the regular files recluster's stdout and stderr go
// to (`up > out.txt`, the `up -d` log), by their path now.
func ownOutputFiles() []string {
	var out []string
	for _, f := range []*os.File{os.Stdout, os.Stderr} {
		st, err := f.Stat()
		if err != nil || !st.Mode().IsRegular() {
			continue
		}
		if p, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", f.Fd())); err == nil && filepath.IsAbs(p) {
			out = append(out, p)
		}
	}
	return out
}

// A service whose own reload changes the files it watches (an app that
// writes a file at start, a build that writes into its sources) would
// reload for ever: after retriggerStreak reloads in a row that each came
// while the one before ran, or within retriggerWindow of its end, it is
// said once, and each further reload waits, twice as long each time up
// to maxRetriggerDelay, until a change comes after a quiet spell.
const (
	retriggerWindow   = time.Second
	retriggerStreak   = 5
	maxRetriggerDelay = time.Minute
)

// reloadLoops keeps, per service, how its watch reloads follow one
// another. began runs on the watch loop; ended on the reloads' own
// goroutines; mu guards the map.
type reloadLoops struct {
	mux *logmux.Mux
	mu  sync.Mutex
	by  map[string]*reloadLoop
}

type reloadLoop struct {
	running int       // watch reloads under way
	endedAt time.Time // when the last ended
	streak  int       // reloads in a row that came too soon
	delay   time.Duration
	said    bool
}

func newReloadLoops(mux *logmux.Mux) *reloadLoops {
	return &reloadLoops{mux: mux, by: map[string]*reloadLoop{}}
}

// began counts a change of ch's service and returns how long its reload
// is to wait.
func (l *reloadLoops) began(ch watch.Change) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.by[ch.Service]
	if r == nil {
		r = &reloadLoop{}
		l.by[ch.Service] = r
	}
	if r.running > 0 || time.Since(r.endedAt) < retriggerWindow {
		r.streak++
	} else {
		r.streak, r.delay, r.said = 0, 0, false
	}
	r.running++
	if r.streak < retriggerStreak {
		return 0
	}
	r.delay = min(max(2*r.delay, 2*time.Second), maxRetriggerDelay)
	if !r.said {
		r.said = true
		l.mux.System(ch.Service, fmt.Sprintf("%s: its watched files changed during or right after each of its last %d reloads (%s): if the service writes them itself, add them to watch.ignore; reloads now wait, longer each time up to %s, until its files are quiet",
			ch.Service, r.streak, ch.File, maxRetriggerDelay))
	}
	return r.delay
}

// wait holds a reload back for delay; false if ctx ended first.
func (l *reloadLoops) wait(ctx context.Context, service string, delay time.Duration) bool {
	if delay <= 0 {
		return true
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		l.ended(service)
		return false
	}
}

// ended records the end of one of service's watch reloads.
func (l *reloadLoops) ended(service string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if r := l.by[service]; r != nil {
		r.running--
		r.endedAt = time.Now()
	}
}
