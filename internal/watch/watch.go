// Package watch tells when a service's files change, so that recluster
// can reload it: fsnotify on the folders its globs reach, watches added for
// new folders as they appear, what does not count left out (version
// control, dependencies, editors' swap files, what .gitignore ignores,
// and changes made while the service builds, which are the build's own
// output, but for a file whose save reloaded it before: that is saved
// again), and each burst of changes (an editor's write, rename and
// chmod; a git checkout) debounced into one.
package watch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/recluster/recluster/config"
)

// maxBurst is the longest a burst of changes may postpone its reload.
const maxBurst = 2 * time.Second

// maxSources bounds the files a service remembers as its sources.
const maxSources = 4096

// outputSettle is how long after its build a file the build wrote is
// still taken for the build's output: its last events may come a moment
// after the build has ended.
const outputSettle = 500 * time.Millisecond

// Service is what to watch for one service.
type Service struct {
	Name  string
	Dir   string
	Watch config.Watch
}

// Change is one burst of changes to a service's files, debounced.
type Change struct {
	Service string
	// Action is config.WatchReload or config.WatchRestart.
	Action string
	// File is the first file that changed, relative to the service's
	// folder; Files counts those that did.
	File  string
	Files int
}

// Options configure a Watcher; the zero value logs nothing and lets every
// change count.
type Options struct {
	// Busy says whether a service is building now: its changes then are
	// the build's own output, and do not count.
	Busy func(service string) bool
	// Log prints one of recluster's own lines about a service.
	Log func(service, line string)
	// MaxWatches bounds the folders watched in all; default half of the
	// user's inotify limit (fs.inotify.max_user_watches).
	MaxWatches int
	// Own are files recluster itself writes (its output redirected to a
	// file, the `up -d` log): a change to them is never a save, or each
	// reload's own lines would trigger the next, for ever.
	Own []string
}

// Watcher watches services' files. Run it; Set changes what it watches.
type Watcher struct {
	opts  Options
	set   chan []Service
	ready chan struct{} // closed once Run has its first watches in place
	// dropped, set by tests, hears of each change left out while busy.
	dropped func(rel string)
}

// New returns a Watcher.
func New(opts Options) *Watcher {
	if opts.Busy == nil {
		opts.Busy = func(string) bool { return false }
	}
	if opts.Log == nil {
		opts.Log = func(string, string) {}
	}
	if opts.MaxWatches <= 0 {
		opts.MaxWatches = maxUserWatches() / 2
	}
	return &Watcher{opts: opts, set: make(chan []Service), ready: make(chan struct{})}
}

// Ready is closed once Run watches what it was given first.
func (w *Watcher) Ready() <-chan struct{} { return w.ready }

// Set replaces the services watched; it waits for Run to take them, or for
// ctx to end.
func (w *Watcher) Set(ctx context.Context, services []Service) {
	select {
	case w.set <- services:
	case <-ctx.Done():
	}
}

// state is one service being watched, owned by Run.
type state struct {
	Service
	rules   *ignoreRules
	pending Change
	files   map[string]bool      // the files of the burst
	first   time.Time            // when the burst began
	last    time.Time            // its last change
	due     time.Time            // when its timer fires; an earlier fire is stale
	calmAt  time.Time            // in a storm (changes that never settle), no fire before this
	outputs map[string]time.Time // files written while it built, and when last
	// sources are files whose saves reloaded it: one that changes while
	// it builds is saved again, not the build's output (maxSources).
	sources map[string]bool
	timer   *time.Timer
	full    bool // said that its tree is too big to watch whole
}

// run is what Run owns.
type run struct {
	w        *Watcher
	fs       *fsnotify.Watcher
	services map[string]*state
	watched  map[string]bool // folders with an inotify watch
	fire     chan struct{}   // signalled when fired gains a service
	firedMu  sync.Mutex
	fired    map[string]bool // services whose burst is over, for Run to send
	changes  chan<- Change
}

// Run watches services until ctx ends, sending each burst of changes on
// changes (it waits for the receiver). It returns once it has stopped
// watching; every goroutine it started has ended by then.
func (w *Watcher) Run(ctx context.Context, services []Service, changes chan<- Change) error {
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching files: %w", err)
	}
	defer fsw.Close()
	r := &run{w: w, fs: fsw, services: map[string]*state{}, watched: map[string]bool{}, fire: make(chan struct{}, 1), fired: map[string]bool{}, changes: changes}
	defer r.stopTimers()
	r.reset(services)
	close(w.ready)
	for {
		select {
		case ev, ok := <-fsw.Events:
			if !ok {
				return nil
			}
			r.event(ev)
		case err, ok := <-fsw.Errors:
			if !ok {
				return nil
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				// Changes were lost: take it that every service changed.
				for _, s := range r.services {
					r.changed(s, "(more changes than the kernel could report)")
				}
			} else {
				w.opts.Log("", fmt.Sprintf("watching files: %v", err))
			}
		case <-r.fire:
			// Every service whose burst is over, however many: a
			// queue of fixed size dropped some when dozens saved at
			// once (a git pull in a monorepo).
			r.firedMu.Lock()
			var names []string
			for name := range r.fired {
				names = append(names, name)
			}
			clear(r.fired)
			r.firedMu.Unlock()
			sort.Strings(names)
			for _, name := range names {
				if !r.send(ctx, name) {
					return nil
				}
			}
		case services := <-w.set:
			r.reset(services)
		case <-ctx.Done():
			return nil
		}
	}
}

// send sends the burst of the named service, if it is over; false once ctx
// has ended.
func (r *run) send(ctx context.Context, name string) bool {
	s := r.services[name]
	if s == nil || s.pending.Files == 0 || time.Now().Before(s.due) {
		return true // gone, sent, or a newer change moved its time
	}
	// A burst cut short by maxBurst, its changes still coming, is a
	// storm: the next fires maxBurst after this one at the soonest,
	// however it goes on.
	if now := time.Now(); now.Sub(s.last) < s.Watch.Debounce {
		s.calmAt = now.Add(maxBurst)
	}
	change := s.pending
	change.File = s.namedFile(change.File)
	if s.sources == nil {
		s.sources = map[string]bool{}
	}
	for f := range s.files {
		if len(s.sources) < maxSources {
			s.sources[f] = true
		}
	}
	s.pending, s.timer = Change{}, nil
	select {
	case r.changes <- change:
		return true
	case <-ctx.Done():
		return false
	}
}

// namedFile is the file a burst is named by in the log: its first, unless
// that is gone (an editor's or sed's temporary file, renamed over the one
// saved), then the first in order of those that still exist.
func (s *state) namedFile(first string) string {
	if _, err := os.Lstat(filepath.Join(s.Dir, first)); err == nil {
		return first
	}
	var names []string
	for f := range s.files {
		names = append(names, f)
	}
	sort.Strings(names)
	for _, f := range names {
		if _, err := os.Lstat(filepath.Join(s.Dir, f)); err == nil {
			return f
		}
	}
	return first
}

func (r *run) stopTimers() {
	for _, s := range r.services {
		if s.timer != nil {
			s.timer.Stop()
		}
	}
}

// reset watches exactly the given services.
func (r *run) reset(services []Service) {
	r.stopTimers()
	for d := range r.watched {
		r.fs.Remove(d)
	}
	r.watched = map[string]bool{}
	r.services = map[string]*state{}
	for _, svc := range services {
		s := &state{Service: svc, rules: newIgnoreRules(svc.Dir, svc.Watch.Ignore)}
		r.services[svc.Name] = s
		for _, g := range svc.Watch.Paths {
			r.addRoot(s, filepath.Join(svc.Dir, filepath.FromSlash(root(g))))
		}
	}
}

// addRoot watches what a glob can match below dir: the folder and what is
// below it, or, for a file, its folder alone, or, for what does not exist
// yet, the nearest folder above it in the service's, whose new folders are
// watched as they appear.
func (r *run) addRoot(s *state, dir string) {
	st, err := os.Stat(dir)
	switch {
	case err == nil && st.IsDir():
		r.addTree(s, dir)
		return
	case err == nil:
		r.addOne(s, filepath.Dir(dir))
		return
	}
	for dir != s.Dir && filepath.Dir(dir) != dir {
		dir = filepath.Dir(dir)
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			r.addOne(s, dir)
			return
		}
	}
}

// addOne watches one folder, not what is below it.
func (r *run) addOne(s *state, dir string) {
	if r.watched[dir] || len(r.watched) >= r.w.opts.MaxWatches {
		return
	}
	if r.fs.Add(dir) == nil {
		r.watched[dir] = true
		s.rules.load(dir)
	}
}

// addTree watches dir and every folder below it that counts, within the
// bound on watches.
func (r *run) addTree(s *state, dir string) {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if p != s.Dir && s.rules.ignored(p, true) {
			return filepath.SkipDir
		}
		if r.watched[p] {
			return nil
		}
		if len(r.watched) >= r.w.opts.MaxWatches {
			if !s.full {
				s.full = true
				r.w.opts.Log(s.Name, fmt.Sprintf("%s: %s has more folders than recluster may watch (%d, half of fs.inotify.max_user_watches): changes below the rest are not seen; leave big folders out with watch.ignore or .gitignore, or raise fs.inotify.max_user_watches", s.Name, dir, r.w.opts.MaxWatches))
			}
			return filepath.SkipAll
		}
		if err := r.fs.Add(p); err != nil {
			if !s.full {
				s.full = true
				r.w.opts.Log(s.Name, fmt.Sprintf("%s: cannot watch %s: %v", s.Name, p, err))
			}
			return filepath.SkipAll
		}
		r.watched[p] = true
		s.rules.load(p) // its .gitignore, if any, as it is now
		return nil
	})
}

func (r *run) event(ev fsnotify.Event) {
	if ev.Op == fsnotify.Chmod {
		return // a mode change alone changes no code
	}
	if ev.Op&(fsnotify.Remove|fsnotify.Rename) != 0 {
		// A watched folder that went (rm -rf dist, a git checkout)
		// lost its watch with it: forget it, so that a folder made
		// again at its path is watched again.
		r.forget(ev.Name)
	}
	st, err := os.Lstat(ev.Name)
	isDir := err == nil && st.IsDir()
	names := make([]string, 0, len(r.services))
	for name := range r.services {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		s := r.services[name]
		rel, err := filepath.Rel(s.Dir, ev.Name)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue
		}
		if filepath.Base(ev.Name) == ".gitignore" {
			s.rules.load(filepath.Dir(ev.Name))
		}
		if s.rules.ignored(ev.Name, isDir) {
			continue
		}
		if isDir && ev.Op&fsnotify.Create != 0 {
			// A new folder: watch it, and take what was made in it
			// before its watch for changes too.
			r.addTree(s, ev.Name)
			filepath.WalkDir(ev.Name, func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					r.consider(s, p)
				}
				return nil
			})
			continue
		}
		r.consider(s, ev.Name)
	}
}

// forget drops the watches of dir and of every folder below it.
func (r *run) forget(dir string) {
	for d := range r.watched {
		if d == dir || strings.HasPrefix(d, dir+string(filepath.Separator)) {
			r.fs.Remove(d) // the kernel may have dropped it already
			delete(r.watched, d)
		}
	}
}

// consider counts a changed file for s, if its globs name it, it is not
// ignored, and s is not building (its build's own output).
func (r *run) consider(s *state, abs string) {
	rel, err := filepath.Rel(s.Dir, abs)
	if err != nil {
		return
	}
	rel = filepath.ToSlash(rel)
	if s.rules.ignored(abs, false) || !matches(s.Watch.Paths, rel) || slices.Contains(r.w.opts.Own, abs) {
		return
	}
	now := time.Now()
	last, wrote := s.outputs[rel]
	if (r.w.opts.Busy(s.Name) || (wrote && now.Sub(last) < outputSettle)) && !s.sources[rel] {
		if s.outputs == nil {
			s.outputs = map[string]time.Time{}
		}
		for p, t := range s.outputs {
			if now.Sub(t) >= outputSettle {
				delete(s.outputs, p)
			}
		}
		s.outputs[rel] = now
		if r.w.dropped != nil {
			r.w.dropped(rel)
		}
		return
	}
	r.changed(s, rel)
}

func matches(globs []string, rel string) bool {
	for _, g := range globs {
		if matchGlob(g, rel) {
			return true
		}
	}
	return false
}

// changed adds a file to the service's burst and waits for the burst to
// be quiet for its debounce, but never longer than maxBurst in all.
func (r *run) changed(s *state, rel string) {
	now := time.Now()
	if s.pending.Files == 0 {
		s.pending = Change{Service: s.Name, Action: s.Watch.Action, File: rel}
		s.files = map[string]bool{}
		s.first = now
	}
	if !s.files[rel] {
		s.files[rel] = true
		s.pending.Files++
	}
	s.last = now
	wait := s.Watch.Debounce
	if left := maxBurst - now.Sub(s.first); wait > left {
		wait = max(left, 0)
	}
	if calm := s.calmAt.Sub(now); wait < calm {
		wait = calm
	}
	s.due = now.Add(wait)
	if s.timer != nil {
		s.timer.Stop()
	}
	name := s.Name
	s.timer = time.AfterFunc(wait, func() {
		r.firedMu.Lock()
		r.fired[name] = true
		r.firedMu.Unlock()
		select {
		case r.fire <- struct{}{}:
		default: // Run is told already
		}
	})
}

// maxUserWatches reads the user's inotify watch limit.
func maxUserWatches() int {
	data, err := os.ReadFile("/proc/sys/fs/inotify/max_user_watches")
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && n > 0 {
			return n
		}
	}
	return 8192
}
