package proxy

import (
	"context"
	"errors"
	"time"
)

// The backends: which take new work, what is in flight to each, and the
// drain and release of one whose worker goes.

// SetBackends makes backends (key → address) the ones new work goes to.
// A backend left out stops taking work; one that has nothing in flight and
// was not asked to drain is forgotten.
func (p *Proxy) SetBackends(backends map[string]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.order = p.order[:0]
	for key, b := range p.backends {
		if _, keep := backends[key]; !keep {
			b.usable = false
			p.forgetIfIdle(b)
		}
	}
	for key, addr := range backends {
		b := p.backends[key]
		if b == nil || b.addr != addr {
			b = &backend{key: key, addr: addr, tr: p.handler.newTransport(addr), fast: newFastConns(addr)}
			p.backends[key] = b
		}
		if b.drained == nil && !b.wasReleased {
			b.usable = true
			p.order = append(p.order, key)
		}
	}
	close(p.changed)
	p.changed = make(chan struct{})
}

// Drain stops sending work to the backend and calls done once it has
// nothing in flight but upgraded connections (WebSocket): those last as
// long as the worker keeps them, and its stop signal is what lets an app
// close them cleanly. done is called at once when the backend has
// nothing, or is unknown.
func (p *Proxy) Drain(key string, done func()) {
	p.mu.Lock()
	b := p.backends[key]
	if b == nil {
		p.mu.Unlock()
		done()
		return
	}
	p.unlist(b)
	b.drained = done
	p.forgetIfIdle(b)
	p.mu.Unlock()
}

// Release says the backend's worker is gone, and calls done with what was
// cut on it: in tcp mode the connections still open to it, in http mode
// the requests that failed after reaching it (answered 502, or whose
// answer broke off), once the requests still in flight have ended.
func (p *Proxy) Release(key string, done func(cut int)) {
	p.mu.Lock()
	b := p.backends[key]
	if b == nil {
		cut := p.cuts[key]
		delete(p.cuts, key)
		p.mu.Unlock()
		done(cut)
		return
	}
	p.unlist(b)
	b.drained = nil
	b.wasReleased = true
	// A tcp connection open now was open when the worker went; an http
	// request in flight now fails (or ends) in a moment, and is counted
	// then.
	b.cut += b.tcp
	b.released = done
	p.forgetIfIdle(b)
	pending := b.released != nil
	p.mu.Unlock()
	if !pending {
		return // nothing was in flight: done is called already
	}
	// Owned by no one: ends after releaseCap, a no-op once done was called.
	time.AfterFunc(releaseCap, func() {
		p.mu.Lock()
		f, cut := b.released, b.cut
		b.released = nil
		p.mu.Unlock()
		if f != nil {
			f(cut)
		}
	})
}

// unlist takes b out of the usable set; the caller holds mu.
func (p *Proxy) unlist(b *backend) {
	b.usable = false
	for i, k := range p.order {
		if k == b.key {
			p.order = append(p.order[:i], p.order[i+1:]...)
			break
		}
	}
}

// InFlight says how many connections (tcp) or requests and upgraded
// connections (http) are in flight to the backend.
func (p *Proxy) InFlight(key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b := p.backends[key]; b != nil {
		return b.inFlight
	}
	return 0
}

// forgetIfIdle calls an unusable backend's drain callback once only
// upgraded connections remain, and drops it (calling its release
// callback) once nothing does; the caller holds mu.
func (p *Proxy) forgetIfIdle(b *backend) {
	if b.usable {
		return
	}
	if b.drained != nil && b.inFlight-b.upgraded <= 0 {
		done := b.drained
		b.drained = nil
		// Called without mu: done may call back into the proxy.
		go done()
	}
	if b.released != nil && b.inFlight-b.tcp-b.upgraded <= 0 {
		// Only tcp and upgraded connections remain: their worker is
		// gone, so its side of them is over (tcp ones were counted at
		// Release), and a client may keep its own side open for long.
		f, cut := b.released, b.cut
		b.released = nil
		go f(cut)
	}
	if b.inFlight > 0 {
		return
	}
	if p.backends[b.key] == b {
		delete(p.backends, b.key)
	}
	b.tr.CloseIdleConnections()
	b.fast.closeIdle()
	if b.cut > 0 && b.released == nil && !b.wasReleased {
		p.cuts[b.key] += b.cut // for the Release to come
	}
}

// pick takes a usable backend for one piece of work, counting it in
// flight, and waits for one while there is none, until ctx ends or the
// proxy's Wait passes. skip lists backends that just failed to connect.
func (p *Proxy) pick(ctx context.Context, skip map[string]bool) (*backend, error) {
	var deadline <-chan time.Time // made only once there is a wait
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, errClosed
		}
		if b := p.leastLoaded(skip); b != nil {
			b.inFlight++
			p.mu.Unlock()
			return b, nil
		}
		changed, wait := p.changed, p.opts.Wait
		// Every usable backend refused just now (one marked ready before
		// it listens, or one that just died): try them again shortly.
		var retry <-chan time.Time
		if len(skip) > 0 && len(p.order) > 0 {
			retry = time.After(retryPause)
		}
		p.waiting++
		p.mu.Unlock()
		if deadline == nil {
			t := time.NewTimer(wait)
			defer t.Stop()
			deadline = t.C
		}
		err := p.awaitChange(ctx, changed, retry, deadline)
		p.mu.Lock()
		p.waiting--
		p.mu.Unlock()
		if err != nil {
			return nil, err
		}
		clear(skip) // a new set, or a pause: try every one again
	}
}

// tryPick is pick without the wait: nil when no backend is usable now.
func (p *Proxy) tryPick(skip map[string]bool) *backend {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	b := p.leastLoaded(skip)
	if b != nil {
		b.inFlight++
	}
	return b
}

// awaitChange waits for the usable set to change or for a retry, until the
// deadline or ctx.
func (p *Proxy) awaitChange(ctx context.Context, changed <-chan struct{}, retry, deadline <-chan time.Time) error {
	select {
	case <-changed:
	case <-retry:
	case <-deadline:
		return errNoBackend
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// retryPause is the wait before trying again backends that all refused.
const retryPause = 20 * time.Millisecond

// leastLoaded returns the usable backend with the least in flight, taking
// turns among equals; the caller holds mu.
func (p *Proxy) leastLoaded(skip map[string]bool) *backend {
	var best *backend
	n := len(p.order)
	for i := 0; i < n; i++ {
		b := p.backends[p.order[(p.next+i)%n]]
		if b == nil || !b.usable || skip[b.key] {
			continue
		}
		if best == nil || b.inFlight < best.inFlight {
			best = b
		}
	}
	if best != nil {
		p.next++
	}
	return best
}

// done ends one piece of work on b; cut says the backend failed it.
func (p *Proxy) done(b *backend, cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b.inFlight--
	if cut {
		b.cut++
	}
	p.forgetIfIdle(b)
}

// upgrade marks one piece of work on b as an upgraded connection.
func (p *Proxy) upgrade(b *backend, by int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b.upgraded += by
	p.forgetIfIdle(b)
}

var (
	errClosed    = errors.New("the proxy is closed")
	errNoBackend = errors.New("no worker was ready in time")
)
