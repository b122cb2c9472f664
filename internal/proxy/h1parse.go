package proxy

import "bytes"

// The http proxy's own HTTP/1.1 heads. A request or answer is taken here
// only when it is plainly clean: CRLF line ends, token names, no obs-fold,
// one Host and at most one Content-Length, no Transfer-Encoding on a
// request, a target whose bytes net/url would send on unchanged. Anything
// else is "unusual" and goes to net/http as it did before this file
// existed, so every rule of RFC 9112 that net/http enforces (conflicting
// lengths, bare CR, chunked requests, upgrades, HTTP/1.0) still holds by
// construction. FuzzRequestHead and FuzzResponseHead check that what is
// taken here is read as net/http reads it.

// headStatus says what a parse found.
type headStatus int

const (
	headIncomplete headStatus = iota // no blank line yet: read more
	headOK                           // clean: forward it here
	headUnusual                      // leave it to net/http
)

// span is a header line's place in the head, its CRLF included.
type span struct{ from, to int }

// maxDropped bounds the header lines a head may have that are not passed
// on; a head with more is unusual.
const maxDropped = 4

// reqHead is a clean request head: slices of the buffer it was read from.
type reqHead struct {
	end        int // bytes of the head, its blank line included
	lineEnd    int // bytes of the request line, its CRLF included
	method     []byte
	target     []byte
	host       []byte
	length     int   // Content-Length; 0 without one
	close      bool  // Connection: close
	replayable bool  // may go again on a new connection if a kept one failed
	dropped    spans // header lines not passed on
}

// respHead is a clean answer head from a worker.
type respHead struct {
	end     int
	code    int
	length  int // Content-Length; -1 without one
	chunked bool
	close   bool // the worker closes the connection after it
	hasDate bool
	dropped spans
}

// spans are the header lines of a head not passed on: at most maxDropped.
type spans struct {
	s [maxDropped]span
	n int
}

func (d *spans) add(sp span) bool {
	if d.n == maxDropped {
		return false
	}
	d.s[d.n] = sp
	d.n++
	return true
}

func (d *spans) all() []span { return d.s[:d.n] }

// fields walks the header lines from at to the blank line, giving each
// its name, value and place; it returns the index after the blank line,
// or what stopped it (a line not plainly clean, or one each refused).
func fields(buf []byte, at int, each func(name, value []byte, sp span) bool) (int, headStatus) {
	for {
		line, next, ok, bad := nextLine(buf, at)
		switch {
		case bad:
			return 0, headUnusual
		case !ok:
			return 0, headIncomplete
		case len(line) == 0:
			return next, headOK
		}
		name, value, ok := field(line)
		if !ok || !each(name, value, span{at, next}) {
			return 0, headUnusual
		}
		at = next
	}
}

var crlf = []byte("\r\n")

// nextLine returns the line at buf[at:] without its CRLF and the index
// after it; ok false means no complete line yet, bad a line that does not
// end in CRLF or holds a bare CR.
func nextLine(buf []byte, at int) (line []byte, next int, ok, bad bool) {
	i := bytes.IndexByte(buf[at:], '\n')
	if i < 0 {
		return nil, 0, false, false
	}
	if i == 0 || buf[at+i-1] != '\r' {
		return nil, 0, false, true
	}
	line = buf[at : at+i-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return nil, 0, false, true
	}
	return line, at + i + 1, true, false
}

// field splits a header line into its name and its value without the
// whitespace around it; ok false for anything not plainly clean.
func field(line []byte) (name, value []byte, ok bool) {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return nil, nil, false
	}
	name = line[:colon]
	for _, c := range name {
		if !isTokenByte(c) {
			return nil, nil, false
		}
	}
	value = line[colon+1:]
	for len(value) > 0 && (value[0] == ' ' || value[0] == '\t') {
		value = value[1:]
	}
	for len(value) > 0 && (value[len(value)-1] == ' ' || value[len(value)-1] == '\t') {
		value = value[:len(value)-1]
	}
	for _, c := range value {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return nil, nil, false
		}
	}
	return name, value, true
}

func isTokenByte(c byte) bool { return c < 0x80 && tokenTable[c] }

var tokenTable = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// targetTable is what a target may hold, besides a percent escape: bytes
// net/url leaves as they are in a path and a query. ';' is not among them
// (ReverseProxy rewrites a query that has one), nor '#'.
var targetTable = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "-._~!$&'()*+,=:@/?" {
		t[c] = true
	}
	return t
}()

func cleanTarget(t []byte) bool {
	if len(t) == 0 || t[0] != '/' {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if c == '%' {
			if i+2 >= len(t) || !isHex(t[i+1]) || !isHex(t[i+2]) {
				return false
			}
			i += 2
			continue
		}
		if c >= 0x80 || !targetTable[c] {
			return false
		}
	}
	return true
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

func cleanHost(h []byte) bool {
	if len(h) == 0 {
		return false
	}
	for _, c := range h {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '-' || c == '.' || c == ':' || c == '[' || c == ']' || c == '_') {
			return false
		}
	}
	return true
}

// parseLength reads a Content-Length of at most 15 digits.
func parseLength(v []byte) (int, bool) {
	if len(v) == 0 || len(v) > 15 {
		return 0, false
	}
	n := 0
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// connectionTokens reads a Connection value made of close and keep-alive
// only; ok false for any other token (it would name a hop-by-hop header).
func connectionTokens(v []byte) (close, ok bool) {
	for len(v) > 0 {
		var tok []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			tok, v = v[:i], v[i+1:]
		} else {
			tok, v = v, nil
		}
		tok = bytes.Trim(tok, " \t")
		switch {
		case bytes.EqualFold(tok, []byte("close")):
			close = true
		case bytes.EqualFold(tok, []byte("keep-alive")), len(tok) == 0:
		default:
			return false, false
		}
	}
	return close, true
}

var replayableMethods = map[string]bool{"GET": true, "HEAD": true, "OPTIONS": true}

// cleanMethods are the methods taken here: those net/http gives no
// meaning of its own (CONNECT and PRI it does).
var cleanMethods = map[string]bool{"GET": true, "HEAD": true, "OPTIONS": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true}

// parseRequestHead reads the request head at the start of buf.
func parseRequestHead(buf []byte) (h reqHead, st headStatus) {
	line, at, ok, bad := nextLine(buf, 0)
	if bad {
		return h, headUnusual
	}
	if !ok {
		return h, headIncomplete
	}
	h.lineEnd = at
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return h, headUnusual
	}
	sp2 := bytes.IndexByte(line[sp1+1:], ' ')
	if sp2 < 0 {
		return h, headUnusual
	}
	sp2 += sp1 + 1
	h.method, h.target = line[:sp1], line[sp1+1:sp2]
	if string(line[sp2+1:]) != "HTTP/1.1" || !cleanMethods[string(h.method)] || !cleanTarget(h.target) {
		return h, headUnusual
	}
	h.replayable = replayableMethods[string(h.method)]
	hosts, lengths := 0, 0
	h.end, st = fields(buf, at, func(name, value []byte, sp span) bool {
		if hopByHopRequest(name) {
			return false
		}
		ok, drop := true, false
		switch len(name) {
		case 4:
			if bytes.EqualFold(name, []byte("host")) {
				hosts++
				h.host = value
			}
		case 14:
			if bytes.EqualFold(name, []byte("content-length")) {
				lengths++
				h.length, ok = parseLength(value)
			}
		case 10:
			if bytes.EqualFold(name, []byte("connection")) {
				h.close, ok = connectionTokens(value)
				drop = true
			}
		case 9:
			drop = bytes.EqualFold(name, []byte("forwarded"))
		case 15, 16, 17:
			drop = bytes.EqualFold(name, []byte("x-forwarded-for")) || bytes.EqualFold(name, []byte("x-forwarded-host")) ||
				bytes.EqualFold(name, []byte("x-forwarded-proto"))
		}
		return ok && (!drop || h.dropped.add(sp))
	})
	if st != headOK {
		return h, st
	}
	if hosts != 1 || lengths > 1 || !cleanHost(h.host) {
		return h, headUnusual
	}
	return h, headOK
}

// hopByHopRequest names the request headers that need net/http: they
// frame the body, ask for a protocol or an interim answer, or are
// hop-by-hop headers ReverseProxy rewrites.
func hopByHopRequest(name []byte) bool {
	for _, n := range [...]string{"transfer-encoding", "upgrade", "expect", "te", "trailer", "keep-alive",
		"proxy-connection", "proxy-authorization", "proxy-authenticate", "http2-settings"} {
		if len(name) == len(n) && bytes.EqualFold(name, []byte(n)) {
			return true
		}
	}
	return false
}

// parseResponseHead reads the answer head at the start of buf.
func parseResponseHead(buf []byte) (h respHead, st headStatus) {
	h.length = -1
	line, at, ok, bad := nextLine(buf, 0)
	if bad {
		return h, headUnusual
	}
	if !ok {
		return h, headIncomplete
	}
	if len(line) < 12 || string(line[:9]) != "HTTP/1.1 " || (len(line) > 12 && line[12] != ' ') {
		return h, headUnusual
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return h, headUnusual
		}
		h.code = h.code*10 + int(c-'0')
	}
	if h.code < 100 {
		return h, headUnusual
	}
	for _, c := range line[12:] {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return h, headUnusual
		}
	}
	lengths, encodings := 0, 0
	h.end, st = fields(buf, at, func(name, value []byte, sp span) bool {
		ok, drop := true, false
		switch {
		case len(name) == 14 && bytes.EqualFold(name, []byte("content-length")):
			lengths++
			h.length, ok = parseLength(value)
		case len(name) == 17 && bytes.EqualFold(name, []byte("transfer-encoding")):
			encodings++
			ok = bytes.EqualFold(value, []byte("chunked"))
			h.chunked = true
		case len(name) == 10 && bytes.EqualFold(name, []byte("connection")):
			h.close, ok = connectionTokens(value)
			drop = true
		case len(name) == 4 && bytes.EqualFold(name, []byte("date")):
			h.hasDate = true
		default:
			drop = hopByHopResponse(name)
		}
		return ok && (!drop || h.dropped.add(sp))
	})
	if st != headOK {
		return h, st
	}
	if lengths > 1 || encodings > 1 || lengths+encodings > 1 {
		return h, headUnusual
	}
	return h, headOK
}

// hopByHopResponse names the answer headers not passed on (ReverseProxy's
// list; Transfer-Encoding and Trailer pass, since a chunked body passes
// as it came).
func hopByHopResponse(name []byte) bool {
	for _, n := range [...]string{"keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization", "te", "upgrade"} {
		if len(name) == len(n) && bytes.EqualFold(name, []byte(n)) {
			return true
		}
	}
	return false
}
