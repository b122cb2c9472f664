package proxy

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
)

// cleanRequests are heads common clients send: the proxy's loop takes
// them.
var cleanRequests = []string{
	"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
	"GET /a/b?c=d&e=%20f HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n",
	"POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello",
	"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-Forwarded-For: 1.2.3.4\r\nForwarded: for=x\r\n\r\n",
	"GET / HTTP/1.1\r\nhost: a\r\nx-lower: v\r\nConnection: keep-alive\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:  5 \r\n\r\nhello",
}

// unusualRequests are every request-smuggling shape the proxy has refused
// before, and requests net/http gives a meaning of its own: net/http
// judges them.
var unusualRequests = []string{
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n",
	"GET / HTTP/1.1\nHost: a\n\n",
	"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
	"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello",
	"GET / HTTP/1.0\r\n\r\n",
	"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
	"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
	"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
	"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
	"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	"GET / HTTP/1.1\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
	"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /a?b;c HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /%zz HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /\x80 HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET /\"<> HTTP/1.1\r\nHost: a\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
	"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX: \x00\r\n\r\n",
	"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, x-foo\r\nX-Foo: 1\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nKeep-Alive: 5\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nProxy-Authorization: x\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1\r\nX-Forwarded-For: 2\r\nX-Forwarded-Host: 3\r\nX-Forwarded-Proto: 4\r\nForwarded: 5\r\n\r\n",
}

// TestCleanRequestsAreTakenHere: what common clients send is served by
// the proxy's own loop (a parser that refused everything would pass
// every other test here, and be net/http again).
func TestCleanRequestsAreTakenHere(t *testing.T) {
	for _, head := range cleanRequests {
		if _, st := parseRequestHead([]byte(head)); st != headOK {
			t.Errorf("%q is not taken (%d)", head, st)
		}
	}
	if _, st := parseRequestHead([]byte("GET / HTTP/1.1\r\nHost: a\r\nAccept: x\r\n")); st != headIncomplete {
		t.Errorf("a head without its blank line: %d, want incomplete", st)
	}
}

// TestSmugglingShapesGoToNetHTTP: every ambiguous framing, and every
// request net/http has its own meaning for, is left to net/http.
func TestSmugglingShapesGoToNetHTTP(t *testing.T) {
	for _, head := range unusualRequests {
		if _, st := parseRequestHead([]byte(head)); st == headOK {
			t.Errorf("%q is taken by the proxy's loop; net/http should judge it", head)
		}
	}
}

// FuzzRequestHead: whatever the proxy's loop takes, net/http reads the
// same way, and the worker gets what ReverseProxy would have sent it:
// the same method, target, Host, length and headers, less the hop-by-hop
// ones and the client's X-Forwarded ones.
func FuzzRequestHead(f *testing.F) {
	for _, s := range append(cleanRequests, unusualRequests...) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		h, st := parseRequestHead(data)
		if st != headOK || len(data) < h.end+h.length {
			return // the loop hands a body still coming to net/http
		}
		r, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			t.Fatalf("taken here, refused by net/http: %q: %v", data, err)
		}
		// What net/http's server checks beyond ReadRequest
		// (server.go, readRequest): one Host, of valid bytes; header
		// names tokens, values without control bytes.
		if len(r.Header["Host"]) > 1 || !validHost(r.Host) {
			t.Fatalf("%q: net/http's server refuses the Host %q", data, r.Host)
		}
		for name, values := range r.Header {
			for _, c := range []byte(name) {
				if !isTokenByte(c) {
					t.Fatalf("%q: net/http's server refuses the header name %q", data, name)
				}
			}
			for _, v := range values {
				for _, c := range []byte(v) {
					if c < 0x20 && c != '\t' || c == 0x7f {
						t.Fatalf("%q: net/http's server refuses the value %q", data, v)
					}
				}
			}
		}
		if r.Method != string(h.method) || r.RequestURI != string(h.target) || r.Host != string(h.host) ||
			r.ProtoMajor != 1 || r.ProtoMinor != 1 || r.Close != h.close || len(r.TransferEncoding) != 0 {
			t.Fatalf("%q: net/http reads %s %s host %q close %v te %v; here %s %s host %q close %v",
				data, r.Method, r.RequestURI, r.Host, r.Close, r.TransferEncoding, h.method, h.target, h.host, h.close)
		}
		if r.ContentLength != int64(h.length) {
			t.Fatalf("%q: net/http reads a length of %d, here %d", data, r.ContentLength, h.length)
		}
		if got := r.URL.RequestURI(); got != string(h.target) {
			t.Fatalf("%q: ReverseProxy would send the target %q, here %q", data, got, h.target)
		}
		if _, err := url.ParseQuery(r.URL.RawQuery); err != nil || strings.Contains(r.URL.RawQuery, ";") {
			t.Fatalf("%q: ReverseProxy would rewrite the query %q", data, r.URL.RawQuery)
		}
		// What the worker reads.
		op := &h1exchange{x: &h1conn{clientIP: "10.0.0.1"}, h: &h}
		sent := op.appendRequest(nil, data[:h.end+h.length])
		w, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(sent)))
		if err != nil {
			t.Fatalf("%q: the worker cannot read %q: %v", data, sent, err)
		}
		want := r.Header.Clone()
		for _, name := range append(hopHeaders(r.Header), "Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto") {
			want.Del(name)
		}
		want.Set("X-Forwarded-For", "10.0.0.1")
		want.Set("X-Forwarded-Host", r.Host)
		want.Set("X-Forwarded-Proto", "http")
		if w.Method != r.Method || w.RequestURI != r.RequestURI || w.Host != r.Host || w.ContentLength != r.ContentLength ||
			!equalHeaders(w.Header, want) {
			t.Fatalf("%q: the worker reads %s %s %q %d %v, want %s %s %q %d %v", data,
				w.Method, w.RequestURI, w.Host, w.ContentLength, w.Header, r.Method, r.RequestURI, r.Host, r.ContentLength, want)
		}
		body, _ := io.ReadAll(w.Body)
		if !bytes.Equal(body, data[h.end:h.end+h.length]) {
			t.Fatalf("%q: the worker reads the body %q", data, body)
		}
	})
}

// validHost is httpguts.ValidHostHeader's byte rule, which net/http's
// server applies to a request's Host.
func validHost(h string) bool {
	for _, c := range []byte(h) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || strings.IndexByte("!$%&'()*+,-.:;<=>[]_~", c) >= 0) {
			return false
		}
	}
	return true
}

func equalHeaders(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if strings.Join(v, "\x00") != strings.Join(b[k], "\x00") {
			return false
		}
	}
	return true
}

var responseSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nDate: Sun, 06 Dec 2026 07:00:00 GMT\r\n\r\nhello",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
	"HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n",
	"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
	"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n",
	"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
	"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
	"HTTP/1.0 200 OK\r\n\r\nold",
	"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
	"HTTP/1.1 200 OK\r\nConnection: x-private\r\nX-Private: 1\r\n\r\n",
	"HTTP/1.1 099 Odd\r\n\r\n",
	"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
}

// TestAnswersTakenAndLeft: common answers are passed on by the proxy's
// loop; ambiguous ones are read by net/http.
func TestAnswersTakenAndLeft(t *testing.T) {
	for i, head := range responseSeeds {
		_, st := parseResponseHead([]byte(head))
		if taken := st == headOK; taken != (i < 6) {
			t.Errorf("%q taken %v, want %v", head, taken, i < 6)
		}
	}
}

// FuzzResponseHead: whatever the proxy's loop takes of a worker's answer,
// net/http reads with the same status, framing and end.
func FuzzResponseHead(f *testing.F) {
	for _, s := range responseSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		rh, st := parseResponseHead(data)
		if st != headOK {
			return
		}
		br := bufio.NewReader(bytes.NewReader(data))
		resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatalf("taken here, refused by net/http: %q: %v", data, err)
		}
		if resp.StatusCode != rh.code {
			t.Fatalf("%q: status %d here %d", data, resp.StatusCode, rh.code)
		}
		if rh.code < 200 || rh.code == 204 || rh.code == 304 {
			return
		}
		if chunked := len(resp.TransferEncoding) == 1 && resp.TransferEncoding[0] == "chunked"; chunked != rh.chunked {
			t.Fatalf("%q: chunked %v here %v", data, chunked, rh.chunked)
		}
		if !rh.chunked && resp.ContentLength != int64(rh.length) {
			t.Fatalf("%q: length %d here %d", data, resp.ContentLength, rh.length)
		}
		if resp.Close != (rh.close || (!rh.chunked && rh.length < 0)) {
			t.Fatalf("%q: close %v here %v (length %d)", data, resp.Close, rh.close, rh.length)
		}
	})
}

// TestChunkSizes: the chunk-size lines passed on are those net/http's
// reader takes, and their sizes the same.
func TestChunkSizes(t *testing.T) {
	for line, want := range map[string]int{"5\r\n": 5, "1a\r\n": 26, "A;name=v\r\n": 10, "0\r\n": 0, "5 \r\n": 5, "5;x \r\n": 5, "5 ;x\r\n": -1,
		"\r\n": -1, "x\r\n": -1, "-1\r\n": -1, "5 5\r\n": -1, "1234567890123\r\n": -1, ";x\r\n": -1} {
		got, ok := chunkSize([]byte(line))
		if !ok {
			got = -1
		}
		if got != want {
			t.Errorf("%q: %d, want %d", line, got, want)
		}
	}
}

// FuzzChunkedBody: a chunked answer the loop passes on, it passes as it
// came (a prefix of what the worker sent, up to the end of its framing),
// and net/http's chunked reader reads it without error to the same data.
func FuzzChunkedBody(f *testing.F) {
	for _, s := range []string{
		"5\r\nhello\r\n0\r\n\r\n",
		"5;ext=1\r\nhello\r\n6 \r\n world\r\n0\r\nX-Sum: 11\r\n\r\n",
		"A\r\n0123456789\r\n0\r\n\r\nnext answer",
		"5\r\nhello world\r\n0\r\n\r\n",
		"5\nhello\n0\n\n",
		"-1\r\n\r\n",
		"fffffffffffff\r\n",
		"0\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var sent bytes.Buffer
		x := &h1conn{rw: struct {
			io.Reader
			io.Writer
		}{nil, &sent}}
		x.out = make([]byte, 0, 32<<10)
		op := &h1exchange{x: x, k: &keptConn{br: bufio.NewReaderSize(bytes.NewReader(body), 4<<10)}}
		err := op.relayChunked()
		if err == nil {
			err = op.flush()
		}
		if err != nil {
			return // the loop closes the client's connection: nothing to compare
		}
		passed := sent.Bytes()
		if !bytes.HasPrefix(body, passed) {
			t.Fatalf("%q: passed on %q, not as it came", body, passed)
		}
		want, werr := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(body)))
		got, gerr := io.ReadAll(httputil.NewChunkedReader(bytes.NewReader(passed)))
		if werr != nil || gerr != nil || !bytes.Equal(want, got) {
			t.Fatalf("%q: passed on %q; net/http reads %q (%v) from it, %q (%v) from the worker's", body, passed, got, gerr, want, werr)
		}
	})
}
