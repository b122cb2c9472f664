package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"
)

// httpHandler keeps client connections with recluster and sends each
// request to a ready backend (net/http/httputil does the HTTP), so a
// keep-alive client is never left on a worker that is stopping: between
// two of its requests the worker can go, and the next request goes to
// another. Every http server of the proxy shares it.
type httpHandler struct {
	p       *Proxy
	handler http.Handler
	stats   stats
}

func newHTTPHandler(p *Proxy) *httpHandler {
	h := &httpHandler{p: p}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetXForwarded()
			// Each backend's transport dials its own address: the URL's
			// host only names the connection pool.
			r.Out.URL.Scheme, r.Out.URL.Host = "http", "worker"
			r.Out.Host = r.In.Host
			if r.Out.Host == "" {
				// HTTP/1.0 may leave Host out, and the worker would see
				// the pool's name: it gets the address the client
				// reached instead, as nginx gives its server's.
				if a, ok := r.In.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
					r.Out.Host = a.String()
				}
			}
		},
		Transport: h,
		// An answer of known length goes out as the server's buffer
		// fills, its header with its start: one write to the client
		// for a small answer, as nginx and HAProxy make, not one per
		// write of the backend (-1 flushed each: three write syscalls a
		// request, the most of the http proxy's CPU). One of unknown
		// length (chunked), or an event stream, is still flushed at
		// once, write by write (ReverseProxy does so by itself).
		FlushInterval: 0,
		// Without a pool each answer's copy allocated 32 KiB: the most
		// of what the http proxy left to the garbage collector.
		BufferPool: bodyBufs{},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			switch {
			case errors.Is(err, context.Canceled):
				// The client went away; nobody is there to answer.
			case errors.Is(err, errNoBackend), errors.Is(err, errClosed):
				p.log(fmt.Sprintf("proxy: %s %s: %v", r.Method, r.URL.Path, err))
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			default:
				p.log(fmt.Sprintf("proxy: %s %s: %v", r.Method, r.URL.Path, err))
			}
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	// A proxy carries both directions at once: without full duplex, Go's
	// HTTP/1 server swallows and closes the rest of a request body when
	// the answer begins, and the transport, still sending that body to
	// the worker, fails and cuts the answer off (golang/go#40747).
	h.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).EnableFullDuplex() // HTTP/2 always is
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		rp.ServeHTTP(sw, r)
		h.stats.observe(sw.code, time.Since(start))
	})
	return h
}

// bodyBufs lends ReverseProxy the buffers answers are copied through.
type bodyBufs struct{}

var bodyBufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bodyBufs) Get() []byte  { return *bodyBufPool.Get().(*[]byte) }
func (bodyBufs) Put(b []byte) { bodyBufPool.Put(&b) }

// httpServer is one set of the http proxy's bounds, with the http.Server
// that serves what the proxy's own loop (h1conn) hands over. Configure
// makes a new one when the bounds or the protocol change; the old one
// takes no new connections and serves those it has until they end, so a
// keep-alive client is never cut by a reload.
type httpServer struct {
	opts      Options
	bodyGrace time.Duration // bodyGrace when it was made
	server    *http.Server
	retired   atomic.Bool

	shuttingDown atomic.Bool
	mu           sync.Mutex
	conns        map[*h1conn]struct{} // served by the proxy's loop, for shutdown
}

// newHTTPServer makes a server with opts' bounds; the caller holds mu.
func (p *Proxy) newHTTPServer(opts Options) *httpServer {
	hs := &httpServer{opts: opts, bodyGrace: bodyGrace, conns: map[*h1conn]struct{}{}}
	hs.server = &http.Server{
		Handler: p.handler.handler,
		// Go adds 4 KiB of slack to MaxHeaderBytes; the bound said is
		// the one kept.
		MaxHeaderBytes:    max(opts.MaxHeaderBytes-4096, 1),
		ReadHeaderTimeout: opts.HeaderTimeout,
		IdleTimeout:       opts.IdleTimeout,
	}
	p.httpAll = append(p.httpAll, hs)
	return hs
}

// serve takes a connection; false once the server takes no more.
func (hs *httpServer) serve(p *Proxy, c net.Conn) bool {
	if hs.retired.Load() {
		return false
	}
	// Owned by the server, which closes it at shutdown when idle; ends
	// with the connection, or when net/http takes it.
	go hs.serveConn(p, c)
	return true
}

// handOff gives c to net/http's server for the rest of its life.
func (hs *httpServer) handOff(c net.Conn) {
	l := &oneConnListener{c: c}
	// Owned by the server: Serve returns once it has taken its one
	// connection (net/http serves it on a goroutine of its own), or at
	// once if the server was shut down, when the connection is closed.
	go func() {
		hs.server.Serve(l)
		if !l.wasTaken() {
			c.Close()
		}
	}()
}

func (hs *httpServer) track(x *h1conn) bool {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.shuttingDown.Load() {
		return false
	}
	hs.conns[x] = struct{}{}
	return true
}

func (hs *httpServer) untrack(x *h1conn) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	delete(hs.conns, x)
}

// retire stops the server taking connections; those it has go on.
func (hs *httpServer) retire() { hs.retired.Store(true) }

// shutdown retires the server and closes its idle connections; requests
// in flight finish on their own, and their connections close after.
func (hs *httpServer) shutdown() {
	hs.retire()
	hs.shuttingDown.Store(true)
	hs.mu.Lock()
	for x := range hs.conns {
		// A connection whose request has just come is not idle: it
		// finishes that request and then sees shuttingDown.
		if x.state.CompareAndSwap(h1Idle, h1Closed) {
			x.c.Close()
		}
	}
	hs.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Shutdown closes idle connections, then returns
	hs.server.Shutdown(ctx)
}

// transport is one backend's connections; closing its idle ones after a
// drain leaves nothing open to a worker that is gone.
type transport = http.Transport

func (h *httpHandler) newTransport(addr string) *transport {
	return &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := backendDialer.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, &dialError{err}
			}
			return c, nil
		},
		MaxIdleConnsPerHost: 256,
		// Shorter than the keep-alive of any common server (gunicorn 2 s,
		// uvicorn and Node 5 s), so recluster, not the app, closes an idle
		// connection, and a request never meets one the app is closing:
		// a POST written to it could not be retried.
		IdleConnTimeout:       time.Second,
		ResponseHeaderTimeout: 0, // a slow request is the app's business
		DisableCompression:    true,
	}
}

// dialError marks a failure to connect: nothing was sent, so the request
// may go to another backend.
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// RoundTrip sends one request to the least loaded ready backend, counting
// it in flight until its response body is closed (for an upgrade, the
// connection). A backend that refuses the connection is skipped. A
// request the backend fails after it reached it is counted as cut.
func (h *httpHandler) RoundTrip(r *http.Request) (*http.Response, error) {
	p := h.p
	var skip map[string]bool // made on the first refusal
	for {
		b, err := p.pick(r.Context(), skip)
		if err != nil {
			return nil, err
		}
		var resp *http.Response
		if fastOK(r) {
			resp, err = b.fast.roundTrip(r)
		} else {
			resp, err = b.tr.RoundTrip(r)
		}
		var de *dialError
		if errors.As(err, &de) {
			if skip == nil {
				skip = map[string]bool{}
			}
			skip[b.key] = true
			p.done(b, false)
			continue
		}
		if err != nil {
			p.done(b, r.Context().Err() == nil)
			return nil, err
		}
		body := &countedBody{ReadCloser: resp.Body, p: p, b: b, ctx: r.Context()}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			body.upgraded = true
			p.upgrade(b, 1)
		}
		resp.Body = body
		return resp, nil
	}
}

// countedBody ends a request's time in flight when its body is closed, and
// counts an answer that broke off on the backend's side as cut.
type countedBody struct {
	io.ReadCloser
	p        *Proxy
	b        *backend
	ctx      context.Context
	upgraded bool
	once     sync.Once
	broke    bool
}

func (c *countedBody) Read(buf []byte) (int, error) {
	n, err := c.ReadCloser.Read(buf)
	if err != nil && err != io.EOF && c.ctx.Err() == nil && !c.upgraded {
		c.broke = true
	}
	return n, err
}

func (c *countedBody) Close() error {
	err := c.ReadCloser.Close()
	c.once.Do(func() {
		if c.upgraded {
			c.p.upgrade(c.b, -1)
		}
		c.p.done(c.b, c.broke)
	})
	return err
}

// Write passes through for upgraded connections (WebSocket), whose body
// is the connection itself.
func (c *countedBody) Write(p []byte) (int, error) {
	if w, ok := c.ReadCloser.(io.Writer); ok {
		return w.Write(p)
	}
	return 0, errors.New("not an upgraded connection")
}
