package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/recluster/recluster/internal/netlimit"
)

// h1conn is one client connection in http mode, served by the proxy's own
// HTTP/1.1 loop rather than by net/http: a clean request head (see
// h1parse.go) is read as bytes, passed to a worker on a kept connection
// with its lines as they came (less the hop-by-hop ones, plus the
// X-Forwarded ones ReverseProxy sets), and the answer passed back as it
// comes, a chunked one chunk by chunk. net/http's server and ReverseProxy
// cost about 35 µs of CPU a keep-alive request here (a background read
// started and stopped, header maps built and copied, a context and a
// goroutine switch or two), HAProxy's whole request about 26.
//
// What is not plainly clean goes to net/http with the bytes read so far
// (handOff), and the connection stays there: an unusual request, a head
// past the buffer, a body that does not follow its head within bodyGrace
// (it may stream while the answer does), or no worker ready at once
// (net/http's path waits for one, bounded by Wait).
//
// Its goroutine is started by dispatch and owned by its httpServer, which
// closes it when idle at shutdown; it ends when the client or the server
// closes the connection, or at handOff.
type h1conn struct {
	hs       *httpServer
	p        *Proxy
	c        net.Conn      // as the proxy accepted it (a netlimit.Conn)
	rw       io.ReadWriter // c's raw side (polledsock_linux.go)
	raw      syscall.RawConn
	clientIP string

	buf  []byte // what the client sent not yet passed on
	r, w int

	state atomic.Int32 // h1Idle, h1Active, h1Closed (by shutdown)

	// out is the exchange's buffer toward the client: a head, a small
	// body, or the next piece of a large one.
	out []byte
	// watchDone is set while a goroutine watches the client for its
	// leaving (an exchange that takes longer than watchAfter).
	watchDone  chan struct{}
	watchFile  *os.File // the duplicate of c's descriptor it reads
	clientGone atomic.Bool
	peek       [1]byte

	head reqHead    // the request under way, and its exchange: here, not
	op   h1exchange // one of each made a request

	// The loop's state between calls of step (serve).
	phase, end    int
	first         bool // the connection's first request
	waiting       bool // idle, its wait begun
	mustRead      bool // the socket may hold what no report will tell of: read before waiting
	timed, graced bool // the header's time is running; the body's grace is
	// idleUntil is the read deadline last set for the wait between
	// requests; it is set anew only once a second has gone from it.
	idleUntil time.Time
}

const (
	h1Active int32 = iota
	h1Idle
	h1Closed
)

// h1BufSize is the buffer a request head and body must fit in to be
// served here; larger ones go to net/http, which bounds them.
const h1BufSize = 4 << 10

// watchAfter is how long an exchange waits on its worker before the
// client is watched, so that a client that leaves ends a long request as
// net/http's would (the worker's connection is closed, and the request is
// not counted as cut). Shorter exchanges, nearly all, need no watch.
const watchAfter = 100 * time.Millisecond

var h1BufPool = sync.Pool{New: func() any { b := make([]byte, h1BufSize); return &b }}

// serveConn serves c with the proxy's own loop, or hands it to net/http
// when it is not a TCP connection (the watch needs a socket).
func (hs *httpServer) serveConn(p *Proxy, c net.Conn) {
	lc, _ := c.(*netlimit.Conn)
	var tc *net.TCPConn
	if lc != nil {
		tc, _ = lc.Conn.(*net.TCPConn)
	}
	if tc == nil {
		hs.handOff(c)
		return
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		hs.handOff(c)
		return
	}
	x := &h1conn{hs: hs, p: p, c: c, rw: rawOr(tc), raw: raw}
	// What ReverseProxy's SetXForwarded sends, from the same address.
	if ip, _, err := net.SplitHostPort(tc.RemoteAddr().String()); err == nil {
		x.clientIP = ip
	}
	if !hs.track(x) {
		c.Close()
		return
	}
	bp := h1BufPool.Get().(*[]byte)
	x.buf = *bp
	handed := x.serve()
	hs.untrack(x)
	if !handed {
		c.Close()
	}
	h1BufPool.Put(bp)
}

// serve runs the connection's requests; true when it was handed to
// net/http.
//
// All of them run inside one RawConn Read of the client's socket (step),
// which waits in Go's poller only when step returns false. The poller
// forgets what it knew of a socket when such a Read begins, and only
// then: inside one, whatever the client sends after a read that emptied
// its socket wakes the next wait, even if it came during an exchange. So
// once an answer is written the loop waits for the next request without
// the read that would find nothing, which a Read of its own would need
// first (a client may send its next request before that Read begins):
// 0.9 reads a keep-alive request, 2 µs of CPU here, which HAProxy does
// not make. While step runs an exchange the read lock is held, so the
// watch for a client that leaves reads a duplicate of the descriptor
// (startWatch).
func (x *h1conn) serve() (handed bool) {
	x.first, x.mustRead, x.phase = true, true, phaseIdle
	err := x.raw.Read(x.step)
	switch {
	case x.end == endHandOff:
		x.handOff()
		return true
	case x.end == endHanded:
		return true
	case err != nil && x.phase == phaseHead && x.graced && timedOut(err):
		// The body did not follow its head at once: net/http
		// takes the connection, and waits for it as long as it may.
		x.handOff()
		return true
	}
	return false
}

// The loop's phases and ends.
const (
	phaseIdle = iota // between requests
	phaseHead        // a request's head or body is coming
)

const (
	endClose   = iota + 1 // the client left, or the connection is done
	endHandOff            // a request for net/http: hand the connection to it
	endHanded             // an exchange handed it to net/http already
)

// step runs the connection as far as its socket lets it; false waits for
// the client to send (RawConn's Read), true ends the loop with x.end.
func (x *h1conn) step(fd uintptr) bool {
	for {
		if x.phase == phaseIdle {
			if x.r < x.w { // the client sent its next request already
				x.startHead(false)
				continue
			}
			x.r, x.w = 0, 0
			if !x.waiting {
				x.awaitIdle(x.first)
				x.state.Store(h1Idle)
				x.waiting = true
				if x.hs.shuttingDown.Load() {
					x.end = endClose
					return true
				}
			}
			if !x.mustRead {
				x.mustRead = true // after the wait, read
				return false
			}
			n, err := rawRead(int(fd), x.buf)
			if err == syscall.EINTR {
				continue
			}
			if err == syscall.EAGAIN {
				return false
			}
			x.waiting = false
			if !x.state.CompareAndSwap(h1Idle, h1Active) || err != nil || n == 0 {
				x.end = endClose // shutdown closed it, or the client left
				return true
			}
			x.w = n
			x.mustRead = n == len(x.buf)
			x.startHead(x.first)
		}
		done, wait := x.readHead(fd)
		switch {
		case wait:
			return false
		case done:
			return true
		}
		keep, handed := x.exchange(&x.head)
		switch {
		case handed:
			x.end = endHanded
			return true
		case !keep:
			x.end = endClose
			return true
		}
		x.first, x.phase = false, phaseIdle
	}
}

// startHead begins the reading of a request whose first bytes are in.
func (x *h1conn) startHead(first bool) {
	x.phase, x.timed, x.graced = phaseHead, first, false
}

// awaitIdle sets the read deadline for the wait for the next request:
// the header's time for the first, the idle time between later ones. A
// deadline reset is a timer's change in Go's runtime; keep-alive clients
// send thousands of requests a second, so the idle deadline is moved only
// once a second has gone from it (the idle bound is kept within a second).
func (x *h1conn) awaitIdle(first bool) {
	now := time.Now()
	if first {
		x.c.SetReadDeadline(now.Add(x.hs.opts.HeaderTimeout))
		x.idleUntil = time.Time{}
		return
	}
	want := now.Add(x.hs.opts.IdleTimeout)
	if want.Sub(x.idleUntil) < time.Second {
		return
	}
	x.c.SetReadDeadline(want)
	x.idleUntil = want
}

// readHead reads until a whole request (head and body) is buffered, or
// the request is found unusual; the header's time is bounded from its
// first byte as net/http bounds it. wait: the socket is empty for now;
// done: the loop ends (x.end); neither: x.head is to be exchanged.
func (x *h1conn) readHead(fd uintptr) (done, wait bool) {
	for {
		h, st := parseRequestHead(x.buf[x.r:x.w])
		if st == headOK && h.end+h.length > x.w-x.r {
			// The body is still coming. A client that writes its head
			// and body apart sends the body at once, so it is waited
			// for a moment (bodyGrace). One that waits for the answer
			// to begin before it sends the rest (a stream both ways)
			// needs net/http's full duplex, as does a body past the
			// buffer.
			if h.end+h.length > len(x.buf) {
				x.end = endHandOff
				return true, false
			}
			if !x.graced {
				x.graced = true
				x.c.SetReadDeadline(time.Now().Add(x.hs.bodyGrace))
				x.idleUntil = time.Time{} // the next wait sets its own
			}
			st = headIncomplete
		}
		switch st {
		case headUnusual:
			x.end = endHandOff
			return true, false
		case headOK:
			x.head = h
			return false, false
		}
		if x.w == len(x.buf) {
			if x.r == 0 {
				x.end = endHandOff // net/http bounds it (431)
				return true, false
			}
			x.w = copy(x.buf, x.buf[x.r:x.w])
			x.r = 0
		}
		if !x.timed && !x.graced {
			x.c.SetReadDeadline(time.Now().Add(x.hs.opts.HeaderTimeout))
			x.idleUntil = time.Time{}
			x.timed = true
		}
		if !x.mustRead {
			x.mustRead = true
			return false, true
		}
		n, err := rawRead(int(fd), x.buf[x.w:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return false, true
		case err != nil || n == 0:
			x.end = endClose
			return true, false
		}
		x.mustRead = n == len(x.buf)-x.w
		x.w += n
	}
}

// bodyGrace is how long a clean request's body may take to follow its
// head before the connection goes to net/http. Each server takes it when
// made; tests lengthen it before they make theirs.
var bodyGrace = 5 * time.Millisecond

// handOff gives the connection to net/http with what it sent so far.
func (x *h1conn) handOff() {
	x.c.SetReadDeadline(time.Time{})
	var prefix []byte
	if x.r < x.w {
		prefix = append([]byte(nil), x.buf[x.r:x.w]...)
	}
	x.hs.handOff(&prefixConn{Conn: x.c, prefix: prefix})
}

// errWorker marks a failure of the worker's side of an exchange.
type errWorker struct{ err error }

func (e errWorker) Error() string { return e.err.Error() }

var errClientGone = errors.New("the client went away")

// exchange sends the request h heads to a worker and passes its answer
// back. keep says the client connection goes on; handed that it went to
// net/http.
func (x *h1conn) exchange(h *reqHead) (keep, handed bool) {
	start := time.Now()
	req := x.buf[x.r : x.r+h.end+h.length]
	var skip map[string]bool
	for {
		b := x.p.tryPick(skip)
		if b == nil {
			x.handOff() // net/http's path waits for a worker
			return false, true
		}
		k, reused, err := b.fast.take(context.Background())
		if err != nil {
			if skip == nil {
				skip = map[string]bool{}
			}
			skip[b.key] = true
			x.p.done(b, false)
			continue
		}
		x.op = h1exchange{x: x, h: h, b: b, k: k, start: start}
		op := &x.op
		keep, err = op.run(req, reused)
		if op.retry && err != nil {
			x.p.done(b, false)
			continue // nothing was answered on a kept connection the worker closed
		}
		x.r += len(req)
		if err != nil {
			keep = false // an answer broken off, or none: the client cannot tell where the next begins
		}
		cut := err != nil && !errors.Is(err, errClientGone) && !x.clientGone.Load()
		x.p.done(b, cut)
		if cut && op.answered == 0 {
			x.p.log(fmt.Sprintf("proxy: %s %s: %v", h.method, pathOf(h.target), err))
			op.code = http.StatusBadGateway
			keep = x.answerError() == nil && !h.close
		}
		x.p.handler.stats.observe(op.code, time.Since(start))
		x.clientGone.Store(false)
		return keep && !x.hs.shuttingDown.Load(), false
	}
}

func pathOf(target []byte) []byte {
	for i, c := range target {
		if c == '?' {
			return target[:i]
		}
	}
	return target
}

// answerError answers 502 for a request no worker answered.
func (x *h1conn) answerError() error {
	out := append(x.out[:0], "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n"...)
	out = appendDate(out, time.Now())
	out = append(out, "\r\n"...)
	_, err := x.rw.Write(out)
	return err
}

// startWatch watches the client while the exchange waits on its worker:
// a client that closes or resets ends the exchange (the worker's
// connection is made to fail), as net/http's background read does. It
// peeks, so a next request the client sends meanwhile stays unread. The
// loop holds the client socket's read lock (serve), so the watch reads a
// duplicate of its descriptor, a file of the poller's own.
func (x *h1conn) startWatch(k *keptConn) {
	k.c.SetReadDeadline(time.Time{})
	// The idle deadline, set before the exchange, could pass during a
	// long one and end the wait after it: the next wait sets its own.
	x.c.SetReadDeadline(time.Time{})
	x.idleUntil = time.Time{}
	dup := -1
	x.raw.Control(func(fd uintptr) {
		if d, err := dupCloexec(int(fd)); err == nil {
			dup = d
		}
	})
	if dup < 0 {
		return // out of descriptors: no watch, as for a short exchange
	}
	f := os.NewFile(uintptr(dup), "client") // non-blocking as the socket is: in the poller
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return
	}
	done := make(chan struct{})
	x.watchDone, x.watchFile = done, f
	// Owned by the exchange, which waits for it in stopWatch; ends when
	// the client sends, closes or resets, or when stopWatch's deadline
	// passes.
	go func() {
		defer close(done)
		gone := false
		rc.Read(func(fd uintptr) bool {
			n, _, err := syscall.Recvfrom(int(fd), x.peek[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			if err == syscall.EAGAIN || err == syscall.EINTR {
				return false
			}
			gone = n == 0 || err != nil
			return true
		})
		if gone {
			x.clientGone.Store(true)
			k.c.SetReadDeadline(aLongTimeAgo)
		}
	}()
}

func (x *h1conn) stopWatch() {
	if x.watchDone == nil {
		return
	}
	x.watchFile.SetReadDeadline(aLongTimeAgo)
	<-x.watchDone
	x.watchFile.Close()
	x.watchDone, x.watchFile = nil, nil
}

func timedOut(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// prefixConn is a connection handed to net/http with the bytes already
// read from it.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func (c *prefixConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// oneConnListener gives an http.Server one connection to serve.
type oneConnListener struct {
	mu    sync.Mutex
	c     net.Conn
	taken bool
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.taken {
		return nil, net.ErrClosed
	}
	l.taken = true
	return l.c, nil
}

func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.c.LocalAddr() }

func (l *oneConnListener) wasTaken() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.taken
}
