package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawWorker is a worker that reads request heads as bytes and answers
// what answer returns for each (by its target), so that a test sees what
// the proxy sent on the wire and can send what net/http's server would
// not. Heads it got are kept, with the connection each came on.
type rawWorker struct {
	ln     net.Listener
	mu     sync.Mutex
	heads  []string
	conns  []int
	answer func(target string) (string, bool) // the answer, and whether to close after it
}

func startRawWorker(t *testing.T, answer func(target string) (string, bool)) *rawWorker {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w := &rawWorker{ln: ln, answer: answer}
	t.Cleanup(func() { ln.Close() })
	// Owned by the test; ends when the listener closes.
	go func() {
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go w.serve(c, n)
		}
	}()
	return w
}

func (w *rawWorker) serve(c net.Conn, n int) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		var head strings.Builder
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			head.WriteString(line)
			if line == "\r\n" {
				break
			}
		}
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head.String())))
		if err != nil {
			return
		}
		io.CopyN(io.Discard, br, r.ContentLength)
		w.mu.Lock()
		w.heads = append(w.heads, head.String())
		w.conns = append(w.conns, n)
		w.mu.Unlock()
		answer, closeAfter := w.answer(r.RequestURI)
		io.WriteString(c, answer)
		if closeAfter {
			return
		}
	}
}

func (w *rawWorker) got() ([]string, []int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.heads...), append([]int(nil), w.conns...)
}

func dialProxy(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(deadlineForTests))
	return c, bufio.NewReader(c)
}

func readAnswer(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("the body: %v", err)
	}
	return resp, string(body)
}

// TestTheLoopPassesHeadsAsTheyCame: a clean request reaches the worker
// with its lines as the client wrote them (net/http would have
// canonicalised "x-lower"), without the client's Connection and
// X-Forwarded lines, with the proxy's X-Forwarded ones; keep-alive and
// pipelined requests go on one kept worker connection, answered in order.
func TestTheLoopPassesHeadsAsTheyCame(t *testing.T) {
	w := startRawWorker(t, func(target string) (string, bool) {
		return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(target), target), false
	})
	p, addr := startProxy(t, Options{Protocol: "http"})
	p.SetBackends(map[string]string{"w": w.ln.Addr().String()})
	c, br := dialProxy(t, addr)
	io.WriteString(c, "GET /one?a=b HTTP/1.1\r\nHost: example.com\r\nx-lower: v\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: keep-alive\r\n\r\n")
	if resp, body := readAnswer(t, br, "GET"); body != "/one?a=b" || resp.Header.Get("Date") == "" {
		t.Fatalf("first answer %q, header %v", body, resp.Header)
	}
	io.WriteString(c, "GET /two HTTP/1.1\r\nHost: example.com\r\n\r\nGET /three HTTP/1.1\r\nHost: example.com\r\n\r\n")
	for _, want := range []string{"/two", "/three"} {
		if _, body := readAnswer(t, br, "GET"); body != want {
			t.Fatalf("answer %q, want %q", body, want)
		}
	}
	// A client that says it closes gets its answer told so, then the end.
	io.WriteString(c, "GET /last HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
	if resp, body := readAnswer(t, br, "GET"); body != "/last" || !resp.Close {
		t.Fatalf("the last answer %q, close %v", body, resp.Close)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("after Connection: close the connection stayed open: %v", err)
	}
	heads, conns := w.got()
	want := "GET /one?a=b HTTP/1.1\r\nHost: example.com\r\nx-lower: v\r\nX-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Host: example.com\r\nX-Forwarded-Proto: http\r\n\r\n"
	if heads[0] != want {
		t.Errorf("the worker got\n%q\nwant\n%q", heads[0], want)
	}
	if len(conns) != 4 || conns[0] != conns[1] || conns[1] != conns[2] || conns[2] != conns[3] {
		t.Errorf("worker connections %v: want one kept for all four", conns)
	}
}

// TestABodyThatFollowsItsHeadStaysInTheLoop: a client that writes a
// request's head and then its body gets it served by the loop (the
// worker sees the lines as they came), not handed to net/http.
func TestABodyThatFollowsItsHeadStaysInTheLoop(t *testing.T) {
	defer func(g time.Duration) { bodyGrace = g }(bodyGrace)
	bodyGrace = deadlineForTests // a loaded machine may part the two writes
	w := startRawWorker(t, func(target string) (string, bool) {
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false
	})
	p, addr := startProxy(t, Options{Protocol: "http"})
	p.SetBackends(map[string]string{"w": w.ln.Addr().String()})
	c, br := dialProxy(t, addr)
	io.WriteString(c, "POST /form HTTP/1.1\r\nHost: x\r\nx-lower: v\r\nContent-Length: 5\r\n\r\n")
	io.WriteString(c, "hello")
	if _, body := readAnswer(t, br, "POST"); body != "ok" {
		t.Fatalf("answer %q", body)
	}
	heads, _ := w.got()
	if len(heads) != 1 || !strings.Contains(heads[0], "\r\nx-lower: v\r\n") {
		t.Errorf("the worker got %q: not the loop's", heads)
	}
}

// TestUnusualRequestsAreHandedToNetHTTP: on one connection, a clean
// request, then a chunked upload (net/http's to judge), then more: each
// is answered, the upload's body whole.
func TestUnusualRequestsAreHandedToNetHTTP(t *testing.T) {
	_, c := dialThroughProxy(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %q", r.Method, r.URL.Path, body)
	}))
	br := bufio.NewReader(c)
	c.SetDeadline(time.Now().Add(deadlineForTests))
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, body := readAnswer(t, br, "GET"); body != `GET /a ""` {
		t.Fatalf("got %q", body)
	}
	io.WriteString(c, "POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
	if _, body := readAnswer(t, br, "POST"); body != `POST /b "hello"` {
		t.Fatalf("got %q", body)
	}
	io.WriteString(c, "GET /c HTTP/1.1\r\nHost: x\r\n\r\n")
	if _, body := readAnswer(t, br, "GET"); body != `GET /c ""` {
		t.Fatalf("got %q", body)
	}
	// A smuggling shape is refused as net/http refuses it.
	io.WriteString(c, "POST /d HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy")
	if resp, _ := readAnswer(t, br, "POST"); resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("conflicting lengths: %d, want 400", resp.StatusCode)
	}
}

// TestAnswersPassAsTheyCame: every framing a worker may answer with
// reaches the client whole: a length, chunks with trailers, a body that
// ends with the connection, no body (HEAD, 204), a head past the loop's
// buffer, a large body, an HTTP/1.0 answer.
func TestAnswersPassAsTheyCame(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	longHead := "X-Long: " + strings.Repeat("v", 6000) + "\r\n"
	w := startRawWorker(t, func(target string) (string, bool) {
		switch target {
		case "/length":
			return "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false
		case "/chunked":
			return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n", false
		case "/untilclose":
			return "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end", true
		case "/head":
			return "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", false
		case "/nocontent":
			return "HTTP/1.1 204 No Content\r\nKeep-Alive: timeout=5\r\n\r\n", false
		case "/longhead":
			return "HTTP/1.1 200 OK\r\n" + longHead + "Content-Length: 4\r\n\r\nlong", false
		case "/big":
			return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(big), big), false
		case "/old":
			return "HTTP/1.0 200 OK\r\n\r\nold", true
		}
		return "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false
	})
	p, addr := startProxy(t, Options{Protocol: "http"})
	p.SetBackends(map[string]string{"w": w.ln.Addr().String()})
	for _, tc := range []struct {
		method, target, body string
		closed               bool
		check                func(*http.Response) bool
	}{
		{"GET", "/length", "hello", false, nil},
		{"GET", "/chunked", "hello world", false, func(r *http.Response) bool { return r.Trailer.Get("X-Sum") == "11" }},
		{"HEAD", "/head", "", false, func(r *http.Response) bool { return r.ContentLength == 1000 }},
		{"GET", "/nocontent", "", false, func(r *http.Response) bool { return r.StatusCode == 204 && r.Header.Get("Keep-Alive") == "" }},
		{"GET", "/longhead", "long", false, func(r *http.Response) bool { return len(r.Header.Get("X-Long")) == 6000 }},
		{"GET", "/big", big, false, nil},
		{"GET", "/untilclose", "to the end", true, nil},
		{"GET", "/old", "old", true, nil},
	} {
		c, br := dialProxy(t, addr)
		for i := 0; i < 2; i++ { // the second on the same connection, where it stays open
			fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: x\r\n\r\n", tc.method, tc.target)
			resp, body := readAnswer(t, br, tc.method)
			if body != tc.body || (tc.check != nil && !tc.check(resp)) {
				t.Fatalf("%s %s: %d %q (%d bytes) %v %v", tc.method, tc.target, resp.StatusCode, body[:min(len(body), 40)], len(body), resp.Header, resp.Trailer)
			}
			if tc.closed {
				if !resp.Close {
					t.Errorf("%s: the client was not told the connection ends", tc.target)
				}
				if _, err := br.ReadByte(); err != io.EOF {
					t.Errorf("%s: the connection stayed open: %v", tc.target, err)
				}
				break
			}
		}
	}
}

// TestAClientThatLeavesEndsItsRequest: a client that closes while its
// worker is still working ends the request there too (the worker's
// connection closes, as net/http's ReverseProxy does), and it is not
// counted as cut.
func TestAClientThatLeavesEndsItsRequest(t *testing.T) {
	arrived, ended := make(chan struct{}, 1), make(chan struct{}, 1)
	p, c := dialThroughProxy(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-r.Context().Done()
		ended <- struct{}{}
	}))
	io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	waitChan(t, arrived, "the request at the worker")
	c.Close()
	waitChan(t, ended, "the worker's request to end")
	waitFor(t, "nothing in flight", func() bool { return p.InFlight("w") == 0 })
	p.mu.Lock()
	defer p.mu.Unlock()
	if b := p.backends["w"]; b != nil && b.cut != 0 {
		t.Errorf("%d cut; a client that leaves cuts nothing", b.cut)
	}
}

// TestAWorkerThatFailsIsAnswered: a worker that closes before answering
// gets the client a 502 on a connection that goes on; one that breaks off
// mid-answer closes the client's connection, and both count as cut.
func TestAWorkerThatFailsIsAnswered(t *testing.T) {
	w := startRawWorker(t, func(target string) (string, bool) {
		if target == "/mid" {
			return "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial", true
		}
		return "", true
	})
	p, addr := startProxy(t, Options{Protocol: "http"})
	p.SetBackends(map[string]string{"w": w.ln.Addr().String()})
	c, br := dialProxy(t, addr)
	io.WriteString(c, "POST /none HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
	if resp, _ := readAnswer(t, br, "POST"); resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("a worker that closed: %d, want 502", resp.StatusCode)
	}
	io.WriteString(c, "GET /mid HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Error("an answer broken off read as whole")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if b := p.backends["w"]; b == nil || b.cut != 2 {
		t.Errorf("cut: %+v, want 2", b)
	}
}

// TestCloseEndsIdleLoopConnections: at Close a keep-alive connection the
// loop holds between requests is closed; one whose answer is still coming
// gets it whole, told the connection ends, then closed.
func TestCloseEndsIdleLoopConnections(t *testing.T) {
	b := startBackend(t, "b")
	p, addr := startProxy(t, Options{Protocol: "http"})
	p.SetBackends(map[string]string{"b": b.addr()})
	idle, idleBR := dialProxy(t, addr)
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	readAnswer(t, idleBR, "GET")
	busy, busyBR := dialProxy(t, addr)
	io.WriteString(busy, "GET /?hold=1 HTTP/1.1\r\nHost: x\r\n\r\n")
	waitChan(t, b.arrived, "the held request")
	go p.Close()
	if _, err := idleBR.ReadByte(); err != io.EOF {
		t.Errorf("the idle connection: %v, want EOF", err)
	}
	close(b.release)
	resp, body := readAnswer(t, busyBR, "GET")
	if !strings.HasPrefix(body, "b ") || !resp.Close {
		t.Errorf("the busy connection got %q, close %v", body, resp.Close)
	}
	if _, err := busyBR.ReadByte(); err != io.EOF {
		t.Errorf("the busy connection after its answer: %v, want EOF", err)
	}
}

func waitChan(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(deadlineForTests):
		t.Fatalf("waited %s for %s", deadlineForTests, what)
	}
}

// TestARequestSentDuringAnExchangeIsServed: a client that sends its next
// request while the proxy waits on the worker for the one before gets
// both answered, in order, whether the wait is short or long enough for
// the watch on the client to start (watchAfter). The loop reads the
// client only when the poller says it sent something (serve): this is
// the request whose word comes while the loop is busy elsewhere.
func TestARequestSentDuringAnExchangeIsServed(t *testing.T) {
	for _, hold := range []time.Duration{0, 2 * watchAfter} {
		t.Run(hold.String(), func(t *testing.T) {
			arrived, release := make(chan struct{}, 1), make(chan struct{})
			w := startRawWorker(t, func(target string) (string, bool) {
				if target == "/slow" {
					arrived <- struct{}{}
					<-release
				}
				return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(target), target), false
			})
			p, addr := startProxy(t, Options{Protocol: "http"})
			p.SetBackends(map[string]string{"w": w.ln.Addr().String()})
			c, br := dialProxy(t, addr)
			io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
			select {
			case <-arrived:
			case <-time.After(deadlineForTests):
				t.Fatal("the worker never got /slow")
			}
			io.WriteString(c, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
			// A delay, not a synchronisation: the exchange lasts this
			// long with /next waiting in the client's socket.
			time.Sleep(hold)
			close(release)
			for _, want := range []string{"/slow", "/next"} {
				if _, body := readAnswer(t, br, "GET"); body != want {
					t.Fatalf("answer %q, want %q", body, want)
				}
			}
		})
	}
}
