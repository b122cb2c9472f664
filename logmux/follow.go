package logmux

import (
	"context"
	"errors"
	"io"
	"sync"
)

// ErrCutOff ends a follower that fell behind by more than its budget.
var ErrCutOff = errors.New("cut off for falling behind")

// lineOverhead is what a queued line costs beyond its text, so that a
// flood of empty lines is bounded too.
const lineOverhead = 64

// Follower receives new lines as they are written, for `recluster logs -f`.
// What it has not taken yet is bounded in bytes: a follower that falls
// that far behind is cut off at once, rather than slowing the stack or
// growing memory. Its methods are safe from any goroutine.
type Follower struct {
	m        *Mux
	services []string
	budget   int

	mu     sync.Mutex
	lines  []Line
	bytes  int
	cut    bool
	closed bool
	ready  chan struct{} // capacity 1: lines are waiting
	ended  chan struct{} // closed when cut off or closed
}

// Follow returns a follower of the named services (all when empty) that
// may fall behind by up to budget bytes (DefaultFollowBytes when ≤ 0).
func (m *Mux) Follow(services []string, budget int) *Follower {
	if budget <= 0 {
		budget = DefaultFollowBytes
	}
	f := &Follower{m: m, services: services, budget: budget, ready: make(chan struct{}, 1), ended: make(chan struct{})}
	m.fmu.Lock()
	m.followers[f] = true
	m.following.Store(true)
	m.fmu.Unlock()
	return f
}

// Next returns the lines that came since the last call, waiting for one if
// there are none. It returns ErrCutOff once the follower was cut off (after
// the lines it had taken in before), io.EOF once it is closed, and ctx's
// error when ctx ends first.
func (f *Follower) Next(ctx context.Context) ([]Line, error) {
	for {
		f.mu.Lock()
		if len(f.lines) > 0 {
			lines := f.lines
			f.lines, f.bytes = nil, 0
			f.mu.Unlock()
			return lines, nil
		}
		cut, closed := f.cut, f.closed
		f.mu.Unlock()
		switch {
		case cut:
			return nil, ErrCutOff
		case closed:
			return nil, io.EOF
		}
		select {
		case <-f.ready:
		case <-f.ended:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Close stops the follower.
func (f *Follower) Close() {
	f.m.fmu.Lock()
	defer f.m.fmu.Unlock()
	f.m.dropLocked(f, false)
}

func (m *Mux) dropLocked(f *Follower, cut bool) {
	if !m.followers[f] {
		return
	}
	delete(m.followers, f)
	m.following.Store(len(m.followers) > 0)
	f.mu.Lock()
	f.cut, f.closed = cut, true
	if cut {
		f.lines, f.bytes = nil, 0 // free what it will never take
	}
	f.mu.Unlock()
	close(f.ended)
}

// publish offers lines to every follower without ever waiting.
func (m *Mux) publish(lines []Line) {
	if !m.following.Load() {
		return
	}
	m.fmu.Lock()
	defer m.fmu.Unlock()
	for f := range m.followers {
		if !f.offer(lines) {
			m.dropLocked(f, true)
		}
	}
}

// offer queues the lines the follower wants; it reports false when they
// would put it over its budget.
func (f *Follower) offer(lines []Line) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	added := false
	for i := range lines {
		l := &lines[i]
		if len(f.services) > 0 && !contains(f.services, l.Source.Service) {
			continue
		}
		if f.bytes += len(l.Text) + lineOverhead; f.bytes > f.budget {
			return false
		}
		f.lines = append(f.lines, *l)
		added = true
	}
	if added {
		select {
		case f.ready <- struct{}{}:
		default:
		}
	}
	return true
}
