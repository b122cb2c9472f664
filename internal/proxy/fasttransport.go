package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"sync"
	"time"
)

// fastConns carries the requests that need nothing of http.Transport's
// machinery (a GET, HEAD or OPTIONS without a body, not an upgrade) on
// this backend's kept connections, in the handler's own goroutine: the
// request is written and its answer read where ServeHTTP runs, where the
// Transport hands each over to a writing and a reading goroutine of the
// connection through channels (three goroutine switches and a select a
// request, the most of the http keep-alive path's CPU beyond system
// calls). Every other request goes to the Transport.
type fastConns struct {
	addr string

	mu    sync.Mutex
	idle  []*keptConn // most recently used last
	sweep *time.Timer // set while some are idle
}

// keptConn is one connection to the backend, with its buffers.
type keptConn struct {
	c     net.Conn
	rw    io.ReadWriter // c's raw side (polledsock_linux.go), under the buffers
	br    *bufio.Reader
	bw    *bufio.Writer
	since time.Time // idle since
}

func newKeptConn(c net.Conn) *keptConn {
	rw := rawOr(c)
	return &keptConn{c: c, rw: rw, br: bufio.NewReaderSize(rw, 4<<10), bw: bufio.NewWriterSize(rw, 4<<10)}
}

// fastIdle is how long a kept connection may wait for its next request:
// the Transport's IdleConnTimeout here, shorter than any common server's
// keep-alive, so that recluster and not the app closes it.
const fastIdle = time.Second

func newFastConns(addr string) *fastConns { return &fastConns{addr: addr} }

// fastOK says whether r can take the fast path.
func fastOK(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		return false
	}
	return (r.Body == nil || r.Body == http.NoBody) && r.ContentLength == 0 &&
		r.Header.Get("Upgrade") == "" && r.Header.Get("Expect") == "" && len(r.TransferEncoding) == 0
}

func (f *fastConns) get() *keptConn {
	f.mu.Lock()
	defer f.mu.Unlock()
	for len(f.idle) > 0 {
		k := f.idle[len(f.idle)-1]
		f.idle = f.idle[:len(f.idle)-1]
		if time.Since(k.since) < fastIdle {
			return k
		}
		k.c.Close()
	}
	return nil
}

func (f *fastConns) put(k *keptConn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k.since = time.Now()
	f.idle = append(f.idle, k)
	if f.sweep == nil {
		// Owned by no one: closes what stayed idle too long, and goes
		// on while some are idle.
		f.sweep = time.AfterFunc(fastIdle, f.closeStale)
	}
}

func (f *fastConns) closeStale() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sweep = nil
	kept := f.idle[:0]
	for _, k := range f.idle {
		if time.Since(k.since) >= fastIdle {
			k.c.Close()
		} else {
			kept = append(kept, k)
		}
	}
	clear(f.idle[len(kept):])
	f.idle = kept
	if len(f.idle) > 0 {
		f.sweep = time.AfterFunc(fastIdle, f.closeStale)
	}
}

// closeIdle closes the kept connections, as a drained backend's are.
func (f *fastConns) closeIdle() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range f.idle {
		k.c.Close()
	}
	clear(f.idle)
	f.idle = f.idle[:0]
}

// take returns a kept connection to the backend, or a new one; reused
// says it was kept.
func (f *fastConns) take(ctx context.Context) (k *keptConn, reused bool, err error) {
	if k := f.get(); k != nil {
		return k, true, nil
	}
	c, err := backendDialer.DialContext(ctx, "tcp", f.addr)
	if err != nil {
		return nil, false, &dialError{err}
	}
	return newKeptConn(c), false, nil
}

// roundTrip sends r on a kept connection, or a new one. A kept one the
// backend closed meanwhile fails before any answer: the request (which
// fastOK says may be repeated) goes once more on a new connection.
func (f *fastConns) roundTrip(r *http.Request) (*http.Response, error) {
	for {
		k, reused, err := f.take(r.Context())
		if err != nil {
			return nil, err
		}
		resp, err := f.exchange(k, r)
		if err == nil {
			return resp, nil
		}
		k.c.Close()
		if !reused || r.Context().Err() != nil {
			return nil, err
		}
	}
}

func (f *fastConns) exchange(k *keptConn, r *http.Request) (*http.Response, error) {
	k.c.SetReadDeadline(time.Time{}) // the proxy's own loop may have left one (watchAfter)
	// The client going away ends the exchange: the connection's
	// deadline passes, and it is not kept.
	stop := context.AfterFunc(r.Context(), func() { k.c.SetDeadline(aLongTimeAgo) })
	if err := r.Write(k.bw); err != nil {
		stop()
		return nil, err
	}
	if err := k.bw.Flush(); err != nil {
		stop()
		return nil, err
	}
	for {
		resp, err := http.ReadResponse(k.br, r)
		if err != nil {
			stop()
			return nil, err
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			stop()
			return nil, errors.New("the worker switched protocols unasked")
		}
		if resp.StatusCode >= 200 {
			resp.Body = &keptBody{ReadCloser: resp.Body, f: f, k: k, keep: !resp.Close && !r.Close, stop: stop}
			return resp, nil
		}
		// 1xx (103 Early Hints and the like): passed on as the
		// Transport does, through ReverseProxy's trace; the answer
		// follows.
		if trace := httptrace.ContextClientTrace(r.Context()); trace != nil && trace.Got1xxResponse != nil {
			if err := trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header)); err != nil {
				stop()
				return nil, err
			}
		}
		resp.Body.Close()
	}
}

// keptBody gives its connection back once the answer has been read to
// its end, or closes it when the answer is left before.
type keptBody struct {
	io.ReadCloser
	f    *fastConns
	k    *keptConn
	keep bool
	stop func() bool
	done bool
}

func (b *keptBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.done {
		b.finish(true)
	}
	return n, err
}

func (b *keptBody) Close() error {
	if !b.done {
		b.finish(false)
	}
	return nil
}

func (b *keptBody) finish(whole bool) {
	b.done = true
	// stop reports false once the client's going away has fired it: the
	// connection's deadline has passed, and it cannot be kept.
	if b.stop() && whole && b.keep {
		b.f.put(b.k)
		return
	}
	b.k.c.Close()
}

var aLongTimeAgo = time.Unix(1, 0)
