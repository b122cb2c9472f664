package proxy

import (
	"fmt"
	"runtime/debug"
	"sync"
	"time"
)

// connLimit bounds the client connections open at once. At the bound the
// accept loop waits, so new connections queue in the kernel's backlog
// (as HAProxy's maxconn does) instead of costing descriptors and memory.
type connLimit struct {
	log func(string)

	mu      sync.Mutex
	open    int
	max     int           // 0: no bound
	freed   chan struct{} // closed when a connection ends while one waits
	waiting bool
	atMax   bool      // an episode at the bound
	saidAt  time.Time // when reaching the bound was last said
	peak    int       // the most open since memory was last returned
	// returned is when memory was last given back to the OS; tail says
	// most of a crowd has gone and its last connections have not.
	returned time.Time
	tail     bool
}

func newConnLimit(max int, log func(string)) *connLimit {
	return &connLimit{max: max, log: log, freed: make(chan struct{})}
}

func (l *connLimit) setMax(n int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.max = n
	l.wake()
}

// acquire takes a place for one connection, waiting while there is none;
// it reports false once done is closed.
func (l *connLimit) acquire(done <-chan struct{}) bool {
	for {
		l.mu.Lock()
		if l.takeLocked() {
			l.mu.Unlock()
			return true
		}
		l.waiting = true
		freed := l.freed
		l.mu.Unlock()
		select {
		case <-freed:
		case <-done:
			return false
		}
	}
}

// tryAcquire takes a place if there is one, for an accept loop that
// cannot wait (the tcp engine's, which tries again at the next release).
func (l *connLimit) tryAcquire() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.takeLocked()
}

// takeLocked takes a place, or says once an episode that there is none;
// the caller holds mu.
func (l *connLimit) takeLocked() bool {
	if l.max <= 0 || l.open < l.max {
		l.open++
		l.peak = max(l.peak, l.open)
		return true
	}
	if !l.atMax {
		// Said once an episode, and episodes closer than a minute are
		// one: a proxy that hovers at its bound does not fill the log.
		l.atMax = true
		if time.Since(l.saidAt) > time.Minute {
			l.saidAt = time.Now()
			l.log(fmt.Sprintf("proxy: %d connections open, the most it takes (maxConnections); new ones wait in the listen backlog", l.open))
		}
	}
	return false
}

// release gives back one connection's place.
func (l *connLimit) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.atMax && l.open <= l.max*3/4 {
		l.atMax = false
	}
	l.wake()
	l.returnMemory()
}

// wake lets a waiting acquire look again; the caller holds mu.
func (l *connLimit) wake() {
	if l.waiting {
		l.waiting = false
		close(l.freed)
		l.freed = make(chan struct{})
	}
}

// returnMemory gives the heap that a crowd of connections needed back to
// the OS once most of them are gone (at most once every few seconds),
// and once more when the last of them is: Go's scavenger would take
// minutes, and under GOGC=400 the heap that served a flood of clients
// stays resident long after. Without the second, what the crowd's last
// connections held stayed (a flood of 1,000 left 45 MiB where 13 had
// been). The caller holds mu.
func (l *connLimit) returnMemory() {
	const crowd = 256
	switch {
	case l.peak >= crowd && l.open <= l.peak/8 && time.Since(l.returned) >= 5*time.Second:
		l.peak, l.tail = l.open, l.open > 0
	case l.tail && l.open == 0:
		l.tail = false
	default:
		return
	}
	l.returned = time.Now()
	// Owned by no one: ends when the collection does.
	go debug.FreeOSMemory()
}
