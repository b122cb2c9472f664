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
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"github.com/recluster/recluster/config"
	"github.com/recluster/recluster/internal/netlimit"
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

	served sync.WaitGroup // tcp connections
	// engine carries tcp connections on raw descriptors (Linux); made by
	// Serve at its first such connection, nil before and elsewhere.
	engine *tcpEngine
	// modeChanged is closed and replaced when new connections change
	// from tcp to http or back, for Serve to hand accepting over.
	modeChanged chan struct{}
	tcp         tcpConns
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
	fast        *fastConns // for the requests that need nothing of tr's
}

// New returns a proxy that will serve ln.
func New(ln net.Listener, opts Options) *Proxy {
	opts = opts.withDefaults()
	p := &Proxy{ln: ln, log: opts.Log, opts: opts, backends: map[string]*backend{}, cuts: map[string]int{},
		changed: make(chan struct{}), closing: make(chan struct{}), epoch: time.Now(), pool: newGoPool(poolIdle)}
	p.limit = newConnLimit(opts.MaxConns, p.log)
	p.modeChanged = make(chan struct{})
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
	if (opts.Protocol == "http") != (old.Protocol == "http") {
		close(p.modeChanged)
		p.modeChanged = make(chan struct{})
	}
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
	var lnFile *os.File // a duplicate of ln's descriptor, for the engine
	defer func() {
		if p.engine != nil {
			p.engine.stop() // after the connections, which use it
		}
		if lnFile != nil {
			lnFile.Close()
		}
	}()
	defer p.served.Wait()
	p.served.Add(1)
	// Owned by Serve, which waits for it; ends at Close.
	go func() {
		defer p.served.Done()
		p.sweep()
	}()
	var lnfd int
	lnFile, lnfd = rawListener(p.ln)
	if lnFile != nil {
		p.engine = newTCPEngine(p)
	}
	var pause time.Duration
	for {
		p.mu.Lock()
		tcp, changed := p.httpCur == nil, p.modeChanged
		p.mu.Unlock()
		if tcp && p.engine != nil && p.engine.startAccepting(lnfd) == nil {
			// The engine accepts in its loop until the mode changes.
			select {
			case <-changed:
			case <-p.closing:
			}
			p.engine.stopAccepting()
			if p.isClosed() {
				return nil
			}
			continue
		}
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
		if hs.serve(p, netlimit.NewConn(c, p.limit.release)) {
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

// now is the time since the proxy began, on the monotonic clock, for
// what tcp connections record of their last activity.
func (p *Proxy) now() int64 { return int64(time.Since(p.epoch)) }
