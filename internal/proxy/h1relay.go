package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// The passing of one request to a worker and of its answer back, for the
// proxy's own loop (h1conn.go): the request as the worker gets it, the
// answer's head as the client gets it, and its body by its framing.

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
	if err := sendAwaiting(k.rw, x.out); err != nil {
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
	for _, d := range h.dropped.all() {
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
	for _, d := range rh.dropped.all() {
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
			if bytes.IndexByte(buf[:i-1], '\r') >= 0 {
				// net/http's reader refuses it too (RFC 9112: CRLF
				// only), and a reader that took it could frame
				// differently.
				return nil, errWorker{errors.New("a bare CR in a chunk line")}
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

// chunkSize reads a chunk-size line as net/http's reader does: its
// trailing whitespace dropped, then an extension after ';', then hex
// digits and nothing else.
func chunkSize(line []byte) (int, bool) {
	line = bytes.TrimRight(line[:len(line)-2], " \t")
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	if len(line) == 0 || len(line) > 12 {
		return 0, false
	}
	n := 0
	for _, c := range line {
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, false
		}
		n = n<<4 | int(d)
	}
	return n, true
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
		bodyAllowed := resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusNotModified
		if known && resp.ContentLength >= 0 && final && bodyAllowed {
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
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				names = append(names, http.CanonicalHeaderKey(f))
			}
		}
	}
	return names
}

type appendWriter struct{ b *[]byte }

func (w appendWriter) Write(p []byte) (int, error) { *w.b = append(*w.b, p...); return len(p), nil }

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
