package proxy

import (
	"sync/atomic"
	"time"
)

// goPool runs functions on goroutines that outlive them. A proxied
// connection runs on two goroutines (one per direction) whose calls go
// deep (io.Copy, splice, the poller): on new goroutines, each connection
// paid for their start and for growing their stacks, about a tenth of the
// tcp proxy's CPU under perf. A goroutine of the pool keeps its stack
// between connections.
type goPool struct {
	idle  time.Duration // how long a goroutine waits for more work before it ends
	tasks chan func()   // unbuffered: a send succeeds only if a goroutine waits

	started atomic.Int64 // goroutines the pool has started
	running atomic.Int64 // of those, the ones not yet ended
}

// poolIdle is how long a goroutine of a proxy's pool waits for its next
// connection. It bounds how long a burst's goroutines outlive it.
const poolIdle = 5 * time.Second

func newGoPool(idle time.Duration) *goPool {
	return &goPool{idle: idle, tasks: make(chan func())}
}

// Go runs f on a waiting goroutine of the pool, or on a new one when none
// waits. It never blocks.
func (p *goPool) Go(f func()) {
	select {
	case p.tasks <- f:
	default:
		p.started.Add(1)
		p.running.Add(1)
		// Owned by the pool; ends once it has waited idle for work.
		go p.loop(f)
	}
}

func (p *goPool) loop(f func()) {
	defer p.running.Add(-1)
	t := time.NewTimer(p.idle)
	defer t.Stop()
	for {
		f()
		f = nil // what it held (a closed connection) need not wait with us
		t.Reset(p.idle)
		select {
		case f = <-p.tasks:
		case <-t.C:
			return
		}
	}
}
