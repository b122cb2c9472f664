// Package proxy puts recluster between clients and the workers of a
// service that bind their own port ($PORT), as most apps do: it owns the
// public address, sends each new connection (tcp) or request (http) to a
// ready worker of the serving generation, and says when a worker it no
// longer uses has nothing in flight, so that the worker can be stopped
// without losing anything, whether or not the app handles signals.
//
// It knows nothing of processes: the runner gives it backends by key and
// address (SetBackends) and asks it to drain one (Drain).
package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Defaults of Options.
const (
	// DefaultWait is how long a connection or request waits for a ready
	// backend (while none is, as during a restart) before it is refused.
	DefaultWait = 30 * time.Second
	// dialTimeout bounds one connect to a backend.
	dialTimeout = 5 * time.Second
)

// backendDialer connects to workers, which are on this machine: TCP
// keep-alive probes could find no lost peer there (a worker that dies is
// reset by the kernel), and setting them up is four system calls of the
// thirty-odd a proxied connection costs.
var backendDialer = &net.Dialer{Timeout: dialTimeout, KeepAlive: -1}

// Options configure a Proxy; the zero value proxies tcp, with no PROXY
// protocol header, and logs nothing.
type Options struct {
	// Protocol is "tcp" (the default: connections move whole) or "http"
	// (each request goes to a backend; client connections stay here).
	Protocol string
	// ProxyProtocol, in tcp mode, is the version of the PROXY protocol
	// header (1 or 2) sent to the backend first; 0 sends none.
	ProxyProtocol int
	// Wait bounds the wait for a ready backend; default DefaultWait.
	Wait time.Duration
	// Log receives the proxy's own lines (a refused client, say).
	Log func(string)
}

// Proxy serves one public address. Create it with New; Serve runs it
// until Close. It cannot be reused.
type Proxy struct {
	ln   net.Listener
	opts Options
	http *httpMode // set in http mode

	mu       sync.Mutex
	backends map[string]*backend // every backend not yet drained: usable or draining
	order    []string            // usable backends' keys, for round robin
	next     int
	changed  chan struct{} // closed and replaced when the usable set changes
	closed   bool

	conns sync.WaitGroup // tcp connections being proxied
	pool  *goPool        // tcp: the goroutines that carry connections
}

// backend is one worker's address and what is in flight to it.
type backend struct {
	key      string
	addr     string
	inFlight int
	usable   bool   // may take new work
	drained  func() // set by Drain; called once inFlight is 0
	tr       *transport
}

// New returns a proxy that will serve ln.
func New(ln net.Listener, opts Options) *Proxy {
	if opts.Wait <= 0 {
		opts.Wait = DefaultWait
	}
	if opts.Protocol == "" {
		opts.Protocol = "tcp"
	}
	if opts.Log == nil {
		opts.Log = func(string) {}
	}
	p := &Proxy{ln: ln, opts: opts, backends: map[string]*backend{}, changed: make(chan struct{})}
	if opts.Protocol == "http" {
		p.http = newHTTPMode(p)
	} else {
		p.pool = newGoPool(poolIdle)
	}
	return p
}

// Serve accepts until Close and returns once every connection it accepted
// has ended (tcp), or once its server has (http).
func (p *Proxy) Serve() error {
	if p.http != nil {
		return p.http.serve(p.ln)
	}
	defer p.conns.Wait()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if p.isClosed() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// Out of fds and the like: pause rather than spin.
			p.opts.Log(fmt.Sprintf("proxy: accept: %v", err))
			time.Sleep(100 * time.Millisecond)
			continue
		}
		p.conns.Add(1)
		// Run by the pool for Serve, which waits for it; ends when both
		// directions of the connection have.
		p.pool.Go(func() {
			defer p.conns.Done()
			p.proxyTCP(c)
		})
	}
}

// Close stops accepting; connections and requests in flight go on until
// they end. Serve then returns.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	if p.http != nil {
		return p.http.close()
	}
	return p.ln.Close()
}

func (p *Proxy) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

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
			b = &backend{key: key, addr: addr}
			if p.http != nil {
				b.tr = p.http.newTransport(addr)
			}
			p.backends[key] = b
		}
		if b.drained == nil {
			b.usable = true
			p.order = append(p.order, key)
		}
	}
	close(p.changed)
	p.changed = make(chan struct{})
}

// Drain stops sending work to the backend and calls done once it has
// nothing in flight: at once when it has nothing, or is unknown.
func (p *Proxy) Drain(key string, done func()) {
	p.mu.Lock()
	b := p.backends[key]
	if b == nil {
		p.mu.Unlock()
		done()
		return
	}
	b.usable = false
	b.drained = done
	for i, k := range p.order {
		if k == key {
			p.order = append(p.order[:i], p.order[i+1:]...)
			break
		}
	}
	p.forgetIfIdle(b)
	p.mu.Unlock()
}

// InFlight says how many connections (tcp) or requests (http) are in
// flight to the backend.
func (p *Proxy) InFlight(key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if b := p.backends[key]; b != nil {
		return b.inFlight
	}
	return 0
}

// forgetIfIdle drops an unusable backend with nothing in flight, calling
// its drain callback; the caller holds mu.
func (p *Proxy) forgetIfIdle(b *backend) {
	if b.usable || b.inFlight > 0 {
		return
	}
	delete(p.backends, b.key)
	if b.tr != nil {
		b.tr.CloseIdleConnections()
	}
	if b.drained != nil {
		done := b.drained
		b.drained = nil
		// Called without mu: done may call back into the proxy.
		go done()
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
		changed := p.changed
		// Every usable backend refused just now (one marked ready before
		// it listens, or one that just died): try them again shortly.
		var retry <-chan time.Time
		if len(skip) > 0 && len(p.order) > 0 {
			retry = time.After(retryPause)
		}
		p.mu.Unlock()
		if deadline == nil {
			t := time.NewTimer(p.opts.Wait)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case <-changed:
			clear(skip) // a new set: try every one again
		case <-retry:
			clear(skip)
		case <-deadline:
			return nil, errNoBackend
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
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

// done ends one piece of work on b.
func (p *Proxy) done(b *backend) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b.inFlight--
	p.forgetIfIdle(b)
}

var (
	errClosed    = errors.New("the proxy is closed")
	errNoBackend = errors.New("no worker was ready in time")
)
