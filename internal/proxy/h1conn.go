package proxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
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
// past the buffer, a body not whole in the bytes that brought its head end
// (it may have to stream while the answer does), or no worker ready at
// once (net/http's path waits for one, bounded by Wait).
//
// Its goroutine is started by dispatch and owned by its httpServer, which
// closes it when idle at shutdown; it ends when the client or the server
// closes the connection, or at handOff.
type h1conn struct {
	hs       *httpServer
	p        *Proxy
	c        net.Conn      // the limitedConn the proxy accepted
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
	clientGone atomic.Bool
	peek       [1]byte

	op h1exchange // the exchange under way (here, not one made a request)
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
	lc, _ := c.(*limitedConn)
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
func (x *h1conn) serve() (handed bool) {
	first := true
	for {
		if x.r == x.w {
			x.r, x.w = 0, 0
			x.awaitIdle(first)
			x.state.Store(h1Idle)
			if x.hs.shuttingDown.Load() {
				return false
			}
			n, err := x.rw.Read(x.buf)
			if !x.state.CompareAndSwap(h1Idle, h1Active) || err != nil {
				return false // shutdown closed it, or the client left
			}
			x.w = n
		}
		h, st, err := x.readHead(first)
		if err != nil {
			return false
		}
		if st == headUnusual {
			x.handOff()
			return true
		}
		keep, handed := x.exchange(&h)
		if handed || !keep {
			return handed
		}
		first = false
	}
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
// first byte as net/http bounds it.
func (x *h1conn) readHead(first bool) (reqHead, headStatus, error) {
	timed := first
	for {
		h, st := parseRequestHead(x.buf[x.r:x.w])
		if st == headOK && h.end+h.length > x.w-x.r {
			// A body still coming may have to go on while the answer
			// does (a worker may answer first): net/http's full duplex
			// carries it.
			return h, headUnusual, nil
		}
		if st != headIncomplete {
			return h, st, nil
		}
		if x.w == len(x.buf) {
			if x.r == 0 {
				return h, headUnusual, nil // net/http bounds it (431)
			}
			x.w = copy(x.buf, x.buf[x.r:x.w])
			x.r = 0
		}
		if !timed {
			x.c.SetReadDeadline(time.Now().Add(x.hs.opts.HeaderTimeout))
			x.idleUntil = time.Time{}
			timed = true
		}
		n, err := x.rw.Read(x.buf[x.w:])
		if err != nil {
			return h, st, err
		}
		x.w += n
	}
}

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
		k, reused, err := b.fast.take()
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

// h1exchange is one request's trip to a worker and back.
type h1exchange struct {
	x        *h1conn
	h        *reqHead
	b        *backend
	k        *keptConn
	start    time.Time
	code     int
	answered int  // bytes written to the client
	retry    bool // failed before any answer on a kept connection: may go again
}

// run sends req and passes the answer on; keep says the client
// connection goes on. The worker's connection goes back to its pool when
// the answer came whole and it stays open.
func (op *h1exchange) run(req []byte, reused bool) (keep bool, err error) {
	x, k := op.x, op.k
	bufp := bodyBufPool.Get().(*[]byte)
	x.out = (*bufp)[:0]
	keepWorker := false
	defer func() {
		// The watch ends before the connection goes back: it may
		// still set the connection's deadline.
		x.stopWatch()
		if keepWorker && err == nil && !x.clientGone.Load() {
			op.b.fast.put(k)
		} else {
			k.c.Close()
		}
		x.out = nil
		bodyBufPool.Put(bufp)
	}()
	x.out = op.appendRequest(x.out, req)
	k.c.SetReadDeadline(op.start.Add(watchAfter))
	if _, err := k.rw.Write(x.out); err != nil {
		op.retry = reused && op.h.replayable
		return false, errWorker{err}
	}
	x.out = x.out[:0]
	rh, err := op.readAnswerHead()
	if err != nil {
		op.retry = reused && op.h.replayable && op.answered == 0 && k.br.Buffered() == 0 && !x.clientGone.Load()
		return false, err
	}
	if rh == nil {
		keep, keepWorker, err = op.relayUnusual()
		return keep, err
	}
	op.code = rh.code
	noBody := string(op.h.method) == "HEAD" || rh.code == http.StatusNoContent || rh.code == http.StatusNotModified
	delimitedByClose := !noBody && !rh.chunked && rh.length < 0
	closeClient := op.h.close || delimitedByClose || x.hs.shuttingDown.Load()
	x.out = appendAnswerHead(x.out, k.br, rh, closeClient)
	k.br.Discard(rh.end)
	switch {
	case noBody:
	case rh.chunked:
		err = op.relayChunked()
	case rh.length >= 0:
		err = op.relayLength(rh.length)
	default:
		err = op.relayUntilClose()
	}
	if err == nil {
		err = op.flush()
	}
	keepWorker = !rh.close && !delimitedByClose
	return !closeClient, err
}

// appendRequest is the request as the worker gets it.
func (op *h1exchange) appendRequest(out, req []byte) []byte {
	h := op.h
	at := 0
	for _, d := range h.drop[:h.ndrop] {
		out = append(out, req[at:d.from]...)
		at = d.to
	}
	out = append(out, req[at:h.end-2]...)
	if op.x.clientIP != "" {
		out = append(out, "X-Forwarded-For: "...)
		out = append(out, op.x.clientIP...)
		out = append(out, "\r\n"...)
	}
	out = append(out, "X-Forwarded-Host: "...)
	out = append(out, h.host...)
	out = append(out, "\r\nX-Forwarded-Proto: http\r\n\r\n"...)
	return append(out, req[h.end:]...)
}

// readAnswerHead reads the final answer's head, passing interim ones
// (103 Early Hints) on; nil, nil for a head to be read by net/http.
func (op *h1exchange) readAnswerHead() (*respHead, error) {
	k := op.k
	for {
		buf, _ := k.br.Peek(k.br.Buffered())
		rh, st := parseResponseHead(buf)
		switch {
		case st == headUnusual:
			return nil, nil
		case st == headIncomplete:
			if len(buf) == k.br.Size() {
				return nil, nil
			}
			if err := op.more(); err != nil {
				return nil, err
			}
			continue
		case rh.code == http.StatusSwitchingProtocols:
			return nil, errWorker{errors.New("the worker switched protocols unasked")}
		case rh.code >= 200:
			return &rh, nil
		}
		op.x.out = appendAnswerHead(op.x.out, k.br, &rh, false)
		k.br.Discard(rh.end)
		if err := op.flush(); err != nil {
			return nil, err
		}
	}
}

// appendAnswerHead is the head the client gets: the worker's, less the
// hop-by-hop lines, with a Date when it had none (net/http's server adds
// one) and Connection: close when the client connection ends after it.
func appendAnswerHead(out []byte, br interface{ Peek(int) ([]byte, error) }, rh *respHead, closeClient bool) []byte {
	head, _ := br.Peek(rh.end)
	at := 0
	for _, d := range rh.drop[:rh.ndrop] {
		out = append(out, head[at:d.from]...)
		at = d.to
	}
	out = append(out, head[at:rh.end-2]...)
	if !rh.hasDate && rh.code >= 200 {
		out = appendDate(out, time.Now())
	}
	if closeClient {
		out = append(out, "Connection: close\r\n"...)
	}
	return append(out, "\r\n"...)
}

// more waits for more of the answer, first passing on what is ready; a
// long wait starts the watch on the client.
func (op *h1exchange) more() error {
	if err := op.flush(); err != nil {
		return err
	}
	k := op.k
	for {
		_, err := k.br.Peek(k.br.Buffered() + 1)
		if err == nil {
			return nil
		}
		if errors.Is(err, io.ErrNoProgress) || !timedOut(err) || op.x.watchDone != nil {
			if op.x.clientGone.Load() {
				return errClientGone
			}
			return errWorker{err}
		}
		op.x.startWatch(k)
	}
}

// flush writes what is ready to the client.
func (op *h1exchange) flush() error {
	x := op.x
	if len(x.out) == 0 {
		return nil
	}
	n, err := x.rw.Write(x.out)
	op.answered += n
	x.out = x.out[:0]
	if err != nil {
		return errClientGone
	}
	return nil
}

// relayLength passes n bytes of body on.
func (op *h1exchange) relayLength(n int) error {
	k, x := op.k, op.x
	for n > 0 {
		if k.br.Buffered() == 0 {
			if n >= k.br.Size() {
				// A large body is read past the small buffer, in
				// pieces as large as the answer's.
				if err := op.flush(); err != nil {
					return err
				}
				m, err := op.readDirect(x.out[:min(n, cap(x.out))])
				if m > 0 {
					x.out = x.out[:m]
					n -= m
					if err := op.flush(); err != nil {
						return err
					}
				}
				if err != nil {
					return err
				}
				continue
			}
			if err := op.more(); err != nil {
				return err
			}
		}
		chunk, _ := k.br.Peek(min(n, k.br.Buffered()))
		if len(x.out)+len(chunk) > cap(x.out) {
			if err := op.flush(); err != nil {
				return err
			}
		}
		x.out = append(x.out, chunk...)
		k.br.Discard(len(chunk))
		n -= len(chunk)
	}
	return nil
}

// readDirect reads from the worker into p past the empty buffer; a long
// wait starts the watch, as more does.
func (op *h1exchange) readDirect(p []byte) (int, error) {
	for {
		m, err := op.k.br.Read(p)
		if m > 0 || err == nil {
			return m, nil
		}
		if !timedOut(err) || op.x.watchDone != nil {
			if op.x.clientGone.Load() {
				return 0, errClientGone
			}
			return 0, errWorker{err}
		}
		op.x.startWatch(op.k)
	}
}

// maxChunkLine and maxTrailers bound what a chunked answer's framing may
// hold besides its data.
const (
	maxChunkLine = 1 << 10
	maxTrailers  = 16 << 10
)

// relayChunked passes a chunked body on as it came, chunk by chunk as
// they come, having checked its framing.
func (op *h1exchange) relayChunked() error {
	for {
		line, err := op.line(maxChunkLine)
		if err != nil {
			return err
		}
		size, ok := chunkSize(line)
		if !ok {
			return errWorker{fmt.Errorf("bad chunk size line %q", line)}
		}
		if size == 0 {
			trailers := 0
			for {
				line, err := op.line(maxChunkLine)
				if err != nil {
					return err
				}
				if trailers += len(line); trailers > maxTrailers {
					return errWorker{errors.New("trailers too long")}
				}
				if len(line) == 2 {
					return nil
				}
			}
		}
		if err := op.relayLength(size); err != nil {
			return err
		}
		line, err = op.line(2)
		if err != nil {
			return err
		}
		if len(line) != 2 {
			return errWorker{errors.New("a chunk longer than its size")}
		}
	}
}

// line passes on the next line of the answer (its CRLF included), at most
// limit bytes, and returns it.
func (op *h1exchange) line(limit int) ([]byte, error) {
	k, x := op.k, op.x
	for {
		buf, _ := k.br.Peek(k.br.Buffered())
		for i, c := range buf {
			if c != '\n' {
				if i+1 >= limit {
					return nil, errWorker{errors.New("a chunk line too long")}
				}
				continue
			}
			if i == 0 || buf[i-1] != '\r' {
				return nil, errWorker{errors.New("a chunk line without CRLF")}
			}
			if len(x.out)+i+1 > cap(x.out) {
				if err := op.flush(); err != nil {
					return nil, err
				}
			}
			start := len(x.out)
			x.out = append(x.out, buf[:i+1]...)
			k.br.Discard(i + 1)
			return x.out[start:], nil
		}
		if err := op.more(); err != nil {
			return nil, err
		}
	}
}

// chunkSize reads a chunk-size line: hex digits, then an extension or
// nothing, then CRLF.
func chunkSize(line []byte) (int, bool) {
	line = line[:len(line)-2]
	n, digits := 0, 0
	for i, c := range line {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		case (c == ';' || c == ' ' || c == '\t') && digits > 0:
			// net/http's reader allows whitespace after the size.
			rest := line[i:]
			for len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
				rest = rest[1:]
			}
			return n, len(rest) == 0 || rest[0] == ';'

		default:
			return 0, false
		}
		if digits++; digits > 12 {
			return 0, false
		}
		n = n<<4 | int(d)
	}
	return n, digits > 0
}

// relayUntilClose passes on a body that ends when the worker closes.
func (op *h1exchange) relayUntilClose() error {
	k, x := op.k, op.x
	for {
		if k.br.Buffered() == 0 {
			err := op.more()
			var we errWorker
			if errors.As(err, &we) && errors.Is(we.err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
		}
		chunk, _ := k.br.Peek(k.br.Buffered())
		if len(x.out)+len(chunk) > cap(x.out) {
			if err := op.flush(); err != nil {
				return err
			}
		}
		n := min(len(chunk), cap(x.out)-len(x.out))
		x.out = append(x.out, chunk[:n]...)
		k.br.Discard(n)
	}
}

// relayUnusual passes on an answer whose head only net/http reads (past
// the buffer, HTTP/1.0, a folded line): its head as net/http writes it,
// its body with its length when known, else until the connection closes.
// The watch starts at once, since net/http's body readers keep an error.
func (op *h1exchange) relayUnusual() (keep, keepWorker bool, err error) {
	x, k := op.x, op.k
	if x.watchDone == nil {
		x.startWatch(k)
	}
	for {
		resp, err := http.ReadResponse(k.br, &http.Request{Method: string(op.h.method)})
		if err != nil {
			if x.clientGone.Load() {
				return false, false, errClientGone
			}
			return false, false, errWorker{err}
		}
		if resp.StatusCode == http.StatusSwitchingProtocols {
			return false, false, errWorker{errors.New("the worker switched protocols unasked")}
		}
		final := resp.StatusCode >= 200
		for _, name := range hopHeaders(resp.Header) {
			resp.Header.Del(name)
		}
		known := resp.ContentLength >= 0 || resp.Body == http.NoBody
		closeClient := final && (op.h.close || !known || x.hs.shuttingDown.Load())
		if known && resp.ContentLength >= 0 && final {
			resp.Header.Set("Content-Length", strconv.FormatInt(resp.ContentLength, 10))
		}
		if _, ok := resp.Header["Date"]; !ok && final {
			resp.Header.Set("Date", time.Now().UTC().Format(http.TimeFormat))
		}
		if closeClient {
			resp.Header.Set("Connection", "close")
		}
		x.out = fmt.Appendf(x.out, "HTTP/1.1 %03d %s\r\n", resp.StatusCode, http.StatusText(resp.StatusCode))
		w := appendWriter{&x.out}
		resp.Header.Write(w)
		x.out = append(x.out, "\r\n"...)
		if !final {
			if err := op.flush(); err != nil {
				return false, false, err
			}
			continue
		}
		op.code = resp.StatusCode
		for {
			if err := op.flush(); err != nil {
				resp.Body.Close()
				return false, false, err
			}
			n, rerr := resp.Body.Read(x.out[:cap(x.out)])
			x.out = x.out[:n]
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				resp.Body.Close()
				if x.clientGone.Load() {
					return false, false, errClientGone
				}
				return false, false, errWorker{rerr}
			}
		}
		resp.Body.Close()
		if err := op.flush(); err != nil {
			return false, false, err
		}
		return !closeClient, !resp.Close, nil
	}
}

// hopHeaders names the hop-by-hop headers of h (ReverseProxy's list and
// the ones its Connection names).
func hopHeaders(h http.Header) []string {
	names := []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade"}
	for _, v := range h["Connection"] {
		for _, f := range splitComma(v) {
			names = append(names, http.CanonicalHeaderKey(f))
		}
	}
	return names
}

func splitComma(v string) []string {
	var out []string
	for v != "" {
		f := v
		if i := indexByteString(v, ','); i >= 0 {
			f, v = v[:i], v[i+1:]
		} else {
			v = ""
		}
		for len(f) > 0 && (f[0] == ' ' || f[0] == '\t') {
			f = f[1:]
		}
		for len(f) > 0 && (f[len(f)-1] == ' ' || f[len(f)-1] == '\t') {
			f = f[:len(f)-1]
		}
		if f != "" {
			out = append(out, f)
		}
	}
	return out
}

func indexByteString(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

type appendWriter struct{ b *[]byte }

func (w appendWriter) Write(p []byte) (int, error) { *w.b = append(*w.b, p...); return len(p), nil }

// startWatch watches the client while the exchange waits on its worker:
// a client that closes or resets ends the exchange (the worker's
// connection is made to fail), as net/http's background read does. It
// peeks, so a next request the client sends meanwhile stays unread.
func (x *h1conn) startWatch(k *keptConn) {
	k.c.SetReadDeadline(time.Time{})
	x.c.SetReadDeadline(time.Time{}) // the idle deadline would end the watch
	x.idleUntil = time.Time{}
	done := make(chan struct{})
	x.watchDone = done
	// Owned by the exchange, which waits for it in stopWatch; ends when
	// the client sends, closes or resets, or when stopWatch's deadline
	// passes.
	go func() {
		defer close(done)
		gone := false
		x.raw.Read(func(fd uintptr) bool {
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
	x.c.SetReadDeadline(aLongTimeAgo)
	<-x.watchDone
	x.watchDone = nil
	x.c.SetReadDeadline(time.Time{})
	x.idleUntil = time.Time{}
}

func timedOut(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// take returns a kept connection to the backend, or a new one; reused
// says it was kept.
func (f *fastConns) take() (k *keptConn, reused bool, err error) {
	if k := f.get(); k != nil {
		return k, true, nil
	}
	c, err := backendDialer.Dial("tcp", f.addr)
	if err != nil {
		return nil, false, &dialError{err}
	}
	return newKeptConn(c), false, nil
}

// dateCache is the Date line of the current second.
var dateCache atomic.Pointer[dateLine]

type dateLine struct {
	sec  int64
	line []byte
}

func appendDate(out []byte, now time.Time) []byte {
	sec := now.Unix()
	d := dateCache.Load()
	if d == nil || d.sec != sec {
		d = &dateLine{sec: sec, line: now.UTC().AppendFormat([]byte("Date: "), http.TimeFormat)}
		d.line = append(d.line, "\r\n"...)
		dateCache.Store(d)
	}
	return append(out, d.line...)
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
