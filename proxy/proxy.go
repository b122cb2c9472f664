// Package proxy puts recluster between clients and the workers of a
// service that bind their own port ($PORT), as most apps do: it owns the
// public address, sends each new connection (tcp) or request (http) to a
// ready worker of the serving generation, and says when a worker it no
// longer uses has nothing in flight, so that the worker can be stopped
// without losing anything, whether or not the app handles signals.
//
// It knows nothing of processes: the runner gives it backends by key and
// address (SetBackends), asks it to drain one (Drain) and tells it when
// one is gone (Release). One Proxy serves an address for as long as the
// service has it, whatever its settings: Configure changes how new
// connections are handled (tcp or http, the bounds), and connections
// already accepted finish as they began, so that no reload, restart or
// change of protocol fails what a client already sent.
//
// Every resource a client can make the proxy hold is bounded: connections
// (MaxConns; past it, new ones wait in the kernel's listen backlog),
// header bytes and header time (http), idle keep-alive time, and the time
// a connection may stay half-closed (tcp). Each bound has a default that
// normal work never meets.
package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"sync"
	"time"

	"github.com/recluster/recluster/config"
)

// Defaults of Options.
const (
	// DefaultWait is how long a connection or request waits for a ready
	// backend (while none is, as during a restart) before it is refused.
	DefaultWait = 30 * time.Second
	// DefaultMaxHeaderBytes bounds an http request's header: nginx's
	// large_client_header_buffers (4 × 8k) and HAProxy's 16k buffers are
	// smaller; Go's own default (1 MiB) let a thousand clients hold
	// gigabytes.
	DefaultMaxHeaderBytes = 64 << 10
	// DefaultHeaderTimeout bounds the time to read an http request's
	// header once its first byte came (HAProxy's `timeout http-request`
	// as commonly set).
	DefaultHeaderTimeout = 10 * time.Second
	// DefaultHTTPIdleTimeout closes a keep-alive client connection that
	// has sent no request for this long.
	DefaultHTTPIdleTimeout = 2 * time.Minute
	// DefaultFinTimeout closes a tcp connection one side of which has
	// ended (half-closed) once no byte has moved for this long, so that a
	// worker that never closes its side of a connection whose client has
	// gone does not hold its descriptors forever (HAProxy's
	// `timeout client-fin` and `server-fin`).
	DefaultFinTimeout = time.Minute
	// dialTimeout bounds one connect to a backend.
	dialTimeout = 5 * time.Second
	// releaseCap bounds how long Release waits for the requests in flight
	// to a worker that is gone to end (they fail at once: its sockets are
	// closed).
	releaseCap = 5 * time.Second
)

// backendDialer connects to workers, which are on this machine: TCP
// keep-alive probes could find no lost peer there (a worker that dies is
// reset by the kernel), and setting them up is four system calls of the
// thirty-odd a proxied connection costs.
var backendDialer = &net.Dialer{Timeout: dialTimeout, KeepAlive: -1}

// Options configure a Proxy; the zero value proxies tcp, with no PROXY
// protocol header, the default bounds and no bound on connections, and
// logs nothing.
type Options struct {
	// Protocol is "tcp" (the default: connections move whole) or "http"
	// (each request goes to a backend; client connections stay here).
	Protocol string
	// ProxyProtocol, in tcp mode, is the version of the PROXY protocol
	// header (1 or 2) sent to the backend first; 0 sends none.
	ProxyProtocol int
	// Wait bounds the wait for a ready backend; default DefaultWait.
	Wait time.Duration
	// MaxConns bounds the client connections open at once; at the bound
	// the proxy stops accepting, so new ones wait in the listen backlog.
	// 0 is no bound.
	MaxConns int
	// MaxHeaderBytes bounds an http request's header; a longer one is
	// answered 431 and its connection closed. Default
	// DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// HeaderTimeout bounds the time to read an http request's header;
	// default DefaultHeaderTimeout.
	HeaderTimeout time.Duration
	// IdleTimeout closes a client connection idle this long: in http mode
	// a keep-alive connection between requests (default
	// DefaultHTTPIdleTimeout); in tcp mode one on which no byte moved
	// either way (0, the default for tcp, never).
	IdleTimeout time.Duration
	// FinTimeout closes a tcp connection half-closed and idle this long;
	// default DefaultFinTimeout.
	FinTimeout time.Duration
	// Log receives the proxy's own lines (a refused client, say).
	Log func(string)
}

func (o Options) withDefaults() Options {
	if o.Wait <= 0 {
		o.Wait = DefaultWait
	}
	if o.Protocol == "" {
		o.Protocol = "tcp"
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if o.HeaderTimeout <= 0 {
		o.HeaderTimeout = DefaultHeaderTimeout
	}
	if o.IdleTimeout <= 0 && o.Protocol == "http" {
		o.IdleTimeout = DefaultHTTPIdleTimeout
	}
	if o.FinTimeout <= 0 {
		o.FinTimeout = DefaultFinTimeout
	}
	if o.Log == nil {
		o.Log = func(string) {}
	}
	return o
}

// Proxy serves one public address. Create it with New; Serve runs it
// until Close. It cannot be reused.
type Proxy struct {
	ln      net.Listener
	log     func(string)
	limit   *connLimit
	pool    *goPool      // the goroutines that carry tcp connections
	handler *httpHandler // the http side, shared by every http server
	epoch   time.Time    // tcp activity is counted from here (monotonic)
	closing chan struct{}

	mu         sync.Mutex
	opts       Options
	defaultMax int           // the bound on connections when opts gives none
	httpCur    *httpServer   // takes new connections in http mode; nil in tcp mode
	httpAll    []*httpServer // every one made, for Close and Serve's end
	backends   map[string]*backend
	order      []string // usable backends' keys, for round robin
	next       int
	changed    chan struct{} // closed and replaced when the usable set changes
	closed     bool
	cuts       map[string]int // what was cut on backends already forgotten
	waiting    int            // pieces of work waiting for a backend

	served sync.WaitGroup // tcp connections and http servers
	tcp    tcpConns
}

// backend is one worker's address and what is in flight to it.
type backend struct {
	key         string
	addr        string
	inFlight    int // connections (tcp) and requests (http), upgraded ones too
	tcp         int // of those, tcp connections
	upgraded    int // of those, upgraded http connections (WebSocket)
	cut         int // what was cut: requests failed after reaching it, and tcp connections open when it went
	usable      bool
	drained     func()    // set by Drain; called once only upgraded ones remain
	released    func(int) // set by Release; called once no request remains
	wasReleased bool
	tr          *transport
}

// New returns a proxy that will serve ln.
func New(ln net.Listener, opts Options) *Proxy {
	opts = opts.withDefaults()
	p := &Proxy{ln: ln, log: opts.Log, opts: opts, backends: map[string]*backend{}, cuts: map[string]int{},
		changed: make(chan struct{}), closing: make(chan struct{}), epoch: time.Now(), pool: newGoPool(poolIdle)}
	p.limit = newConnLimit(opts.MaxConns, p.log)
	p.handler = newHTTPHandler(p)
	p.tcp.conns, p.tcp.wake = map[*tcpConn]struct{}{}, make(chan struct{}, 1)
	if opts.Protocol == "http" {
		p.httpCur = p.newHTTPServer(opts)
	}
	return p
}

// OptionsFor is the options of a proxy set up as cfg says, whose work
// waits up to wait for a ready backend. A MaxConnections of 0 leaves
// MaxConns to SetDefaultMaxConns.
func OptionsFor(cfg config.Proxy, wait time.Duration) Options {
	return Options{Protocol: cfg.Protocol, ProxyProtocol: cfg.ProxyProtocol, Wait: wait, MaxConns: cfg.MaxConnections,
		MaxHeaderBytes: cfg.MaxHeaderBytes, HeaderTimeout: cfg.HeaderTimeout, IdleTimeout: cfg.IdleTimeout}
}

// Configure sets what new connections are handled with, as cfg says;
// those already accepted go on as they began.
func (p *Proxy) Configure(cfg config.Proxy, wait time.Duration) {
	p.ConfigureOptions(OptionsFor(cfg, wait))
}

// SetDefaultMaxConns sets the bound on connections that applies when the
// options give none (0 is no bound).
func (p *Proxy) SetDefaultMaxConns(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.defaultMax = n
	if p.opts.MaxConns == 0 {
		p.limit.setMax(n)
	}
}

// ConfigureOptions changes the settings new connections are handled with;
// those already accepted go on as they began. Log is not changed.
func (p *Proxy) ConfigureOptions(opts Options) {
	opts.Log = p.log
	opts = opts.withDefaults()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	old := p.opts
	p.opts = opts
	p.limit.setMax(cmp.Or(opts.MaxConns, p.defaultMax))
	if opts.Protocol != "http" {
		if p.httpCur != nil {
			p.httpCur.retire()
			p.httpCur = nil
		}
		return
	}
	if p.httpCur == nil || old.MaxHeaderBytes != opts.MaxHeaderBytes || old.HeaderTimeout != opts.HeaderTimeout || old.IdleTimeout != opts.IdleTimeout {
		// http.Server reads its limits for every request: a server
		// cannot change them while it runs, so the new ones get a new
		// server and the old one keeps the connections it has.
		if p.httpCur != nil {
			p.httpCur.retire()
		}
		p.httpCur = p.newHTTPServer(opts)
	}
}

func (p *Proxy) settings() Options {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.opts
}

// Serve accepts until Close, and returns once every tcp connection it
// accepted has ended and its http servers have stopped accepting.
func (p *Proxy) Serve() error {
	defer p.served.Wait()
	p.served.Add(1)
	// Owned by Serve, which waits for it; ends at Close.
	go func() {
		defer p.served.Done()
		p.sweep()
	}()
	var pause time.Duration
	for {
		if !p.limit.acquire(p.closing) {
			return nil
		}
		c, err := p.ln.Accept()
		if err != nil {
			p.limit.release()
			if p.isClosed() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// Out of descriptors and the like: the connection waits in
			// the backlog while the proxy backs off, saying so once.
			if pause == 0 {
				p.log(fmt.Sprintf("proxy: accept: %v; new connections wait until it passes", err))
				pause = 5 * time.Millisecond
			}
			select {
			case <-time.After(pause):
			case <-p.closing:
				return nil
			}
			pause = min(2*pause, time.Second)
			continue
		}
		if pause != 0 {
			p.log("proxy: accepting again")
			pause = 0
		}
		p.dispatch(c)
	}
}

// dispatch hands an accepted connection to the mode in force.
func (p *Proxy) dispatch(c net.Conn) {
	for {
		p.mu.Lock()
		hs, opts := p.httpCur, p.opts
		p.mu.Unlock()
		if hs == nil {
			p.served.Add(1)
			// Run by the pool for Serve, which waits for it; ends when
			// both directions of the connection have.
			p.pool.Go(func() {
				defer p.served.Done()
				defer p.limit.release()
				p.proxyTCP(c, opts)
			})
			return
		}
		if hs.offer(&limitedConn{Conn: c, release: p.limit.release}) {
			return
		}
		// That server was retired meanwhile: the next mode takes it.
	}
}

// Close stops accepting and closes idle client connections; connections
// and requests in flight go on until they end. Serve then returns.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.changed)
	p.changed = make(chan struct{})
	servers := p.httpAll
	p.httpCur = nil
	var released []func()
	for _, b := range p.backends {
		if f := b.released; f != nil {
			b.released = nil
			cut := b.cut
			released = append(released, func() { f(cut) })
		}
	}
	p.mu.Unlock()
	close(p.closing)
	err := p.ln.Close()
	for _, hs := range servers {
		hs.shutdown()
	}
	for _, f := range released {
		go f()
	}
	return err
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
			b = &backend{key: key, addr: addr, tr: p.handler.newTransport(addr)}
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
	p.mu.Unlock()
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
	// returned is when memory was last given back to the OS.
	returned time.Time
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
		if l.max <= 0 || l.open < l.max {
			l.open++
			l.peak = max(l.peak, l.open)
			l.mu.Unlock()
			return true
		}
		if !l.atMax {
			// Said once an episode, and episodes closer than a
			// minute are one: a proxy that hovers at its bound does
			// not fill the log.
			l.atMax = true
			if time.Since(l.saidAt) > time.Minute {
				l.saidAt = time.Now()
				l.log(fmt.Sprintf("proxy: %d connections open, the most it takes (maxConnections); new ones wait in the listen backlog", l.open))
			}
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
// the OS once most of them are gone: Go's scavenger would take minutes,
// and under GOGC=400 the heap that served a flood of clients stays
// resident long after. At most once every few seconds; the caller holds
// mu.
func (l *connLimit) returnMemory() {
	const crowd = 256
	if l.peak < crowd || l.open > l.peak/8 || time.Since(l.returned) < 5*time.Second {
		return
	}
	l.peak = l.open
	l.returned = time.Now()
	// Owned by no one: ends when the collection does.
	go debug.FreeOSMemory()
}

// limitedConn gives its place back to the limit when closed, once.
type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// CloseWrite passes a half-close on, as net/http's server uses it before
// it closes a connection it refused.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// now is the time since the proxy began, on the monotonic clock, for
// what tcp connections record of their last activity.
func (p *Proxy) now() int64 { return int64(time.Since(p.epoch)) }
