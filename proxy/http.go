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
	"time"
)

// httpMode keeps client connections with recluster and sends each request
// to a ready backend (net/http/httputil does the HTTP), so a keep-alive
// client is never left on a worker that is stopping: between two of its
// requests the worker can go, and the next request goes to another.
type httpMode struct {
	p      *Proxy
	server *http.Server
}

func newHTTPMode(p *Proxy) *httpMode {
	h := &httpMode{p: p}
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetXForwarded()
			// Each backend's transport dials its own address: the URL's
			// host only names the connection pool.
			r.Out.URL.Scheme, r.Out.URL.Host = "http", "worker"
			r.Out.Host = r.In.Host
		},
		Transport:     h,
		FlushInterval: -1, // stream: each write of the backend goes out at once
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if !errors.Is(err, context.Canceled) {
				p.opts.Log(fmt.Sprintf("proxy: %s %s: %v", r.Method, r.URL.Path, err))
			}
			w.WriteHeader(http.StatusBadGateway)
		},
	}
	// A proxy carries both directions at once: without full duplex, Go's
	// HTTP/1 server swallows and closes the rest of a request body when
	// the answer begins, and the transport, still sending that body to
	// the worker, fails and cuts the answer off (golang/go#40747).
	fullDuplex := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).EnableFullDuplex() // HTTP/2 always is
		rp.ServeHTTP(w, r)
	})
	h.server = &http.Server{Handler: fullDuplex, ReadHeaderTimeout: time.Minute, IdleTimeout: 2 * time.Minute}
	return h
}

func (h *httpMode) serve(ln net.Listener) error {
	if err := h.server.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// close stops accepting and closes idle client connections; requests in
// flight finish on their own.
func (h *httpMode) close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Shutdown closes listeners and idle connections, then returns
	h.server.Shutdown(ctx)
	return nil
}

// transport is one backend's connections; closing its idle ones after a
// drain leaves nothing open to a worker that is gone.
type transport = http.Transport

func (h *httpMode) newTransport(addr string) *transport {
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
// connection). A backend that refuses the connection is skipped.
func (h *httpMode) RoundTrip(r *http.Request) (*http.Response, error) {
	var skip map[string]bool // made on the first refusal
	for {
		b, err := h.p.pick(r.Context(), skip)
		if err != nil {
			return nil, err
		}
		resp, err := b.tr.RoundTrip(r)
		var de *dialError
		if errors.As(err, &de) {
			if skip == nil {
				skip = map[string]bool{}
			}
			skip[b.key] = true
			h.p.done(b)
			continue
		}
		if err != nil {
			h.p.done(b)
			return nil, err
		}
		resp.Body = &countedBody{ReadCloser: resp.Body, done: func() { h.p.done(b) }}
		return resp, nil
	}
}

// countedBody ends a request's time in flight when its body is closed.
type countedBody struct {
	io.ReadCloser
	once sync.Once
	done func()
}

func (b *countedBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.done)
	return err
}

// Write passes through for upgraded connections (WebSocket), whose body
// is the connection itself.
func (b *countedBody) Write(p []byte) (int, error) {
	if w, ok := b.ReadCloser.(io.Writer); ok {
		return w.Write(p)
	}
	return 0, errors.New("not an upgraded connection")
}
