package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"
)

// backendServer is an HTTP server on a free port that answers with its
// name, and with ?hold=1 waits until released.
type backendServer struct {
	name    string
	ln      net.Listener
	release chan struct{}
	arrived chan struct{}
	srv     *http.Server
}

func startBackend(t *testing.T, name string) *backendServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &backendServer{name: name, ln: ln, release: make(chan struct{}), arrived: make(chan struct{}, 100)}
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("hold") == "1" {
			b.arrived <- struct{}{}
			<-b.release
		}
		fmt.Fprintf(w, "%s xff=%s", b.name, r.Header.Get("X-Forwarded-For"))
	})}
	go b.srv.Serve(ln)
	t.Cleanup(func() { b.srv.Close() })
	return b
}

func (b *backendServer) addr() string { return b.ln.Addr().String() }

func startProxy(t *testing.T, opts Options) (*Proxy, string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := New(ln, opts)
	served := make(chan struct{})
	go func() { p.Serve(); close(served) }()
	t.Cleanup(func() { p.Close(); <-served })
	return p, ln.Addr().String()
}

func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// getLater sends a GET on a connection of its own and delivers the body,
// or the error's text, on the channel it returns.
func getLater(url string) <-chan string {
	out := make(chan string, 1)
	// Owned by the test; ends with the request.
	go func() {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(url)
		if err != nil {
			out <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out <- string(body)
	}()
	return out
}

func TestRequestsGoToTheBackendsGiven(t *testing.T) {
	for _, protocol := range []string{"tcp", "http"} {
		t.Run(protocol, func(t *testing.T) {
			a, b := startBackend(t, "a"), startBackend(t, "b")
			p, addr := startProxy(t, Options{Protocol: protocol})
			p.SetBackends(map[string]string{"a": a.addr(), "b": b.addr()})
			c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			seen := map[string]int{}
			for i := 0; i < 20; i++ {
				seen[strings.Fields(get(t, c, "http://"+addr+"/"))[0]]++
			}
			if seen["a"] == 0 || seen["b"] == 0 {
				t.Errorf("work was not spread: %v", seen)
			}
			p.SetBackends(map[string]string{"b": b.addr()})
			for i := 0; i < 5; i++ {
				if got := get(t, c, "http://"+addr+"/"); !strings.HasPrefix(got, "b ") {
					t.Errorf("after a was taken out: %q", got)
				}
			}
			if protocol == "http" {
				if got := get(t, c, "http://"+addr+"/"); !strings.Contains(got, "xff=127.0.0.1") {
					t.Errorf("no X-Forwarded-For: %q", got)
				}
			}
		})
	}
}

// TestDrainWaitsForWorkInFlight: Drain calls back only when the request
// in flight has ended, and new work goes elsewhere meanwhile.
func TestDrainWaitsForWorkInFlight(t *testing.T) {
	for _, protocol := range []string{"tcp", "http"} {
		t.Run(protocol, func(t *testing.T) {
			a, b := startBackend(t, "a"), startBackend(t, "b")
			p, addr := startProxy(t, Options{Protocol: protocol})
			p.SetBackends(map[string]string{"a": a.addr()})
			c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			held := getLater("http://" + addr + "/?hold=1")
			<-a.arrived
			if n := p.InFlight("a"); n != 1 {
				t.Errorf("in flight to a: %d", n)
			}
			p.SetBackends(map[string]string{"b": b.addr()})
			drained := make(chan struct{})
			p.Drain("a", func() { close(drained) })
			if got := get(t, c, "http://"+addr+"/"); !strings.HasPrefix(got, "b ") {
				t.Errorf("new work during a's drain went to %q", got)
			}
			select {
			case <-drained:
				t.Fatalf("drained while a request was in flight")
			default:
			}
			close(a.release)
			if got := <-held; !strings.HasPrefix(got, "a ") {
				t.Errorf("the request in flight: %q", got)
			}
			select {
			case <-drained:
			case <-time.After(30 * time.Second):
				t.Fatalf("never drained")
			}
			if n := p.InFlight("a"); n != 0 {
				t.Errorf("in flight after drain: %d", n)
			}
		})
	}
}

// TestWorkWaitsForABackend: with none ready, a connection waits, and is
// served once one is given; a backend that refuses is skipped.
func TestWorkWaitsForABackend(t *testing.T) {
	for _, protocol := range []string{"tcp", "http"} {
		t.Run(protocol, func(t *testing.T) {
			p, addr := startProxy(t, Options{Protocol: protocol})
			dead, _ := net.Listen("tcp", "127.0.0.1:0")
			deadAddr := dead.Addr().String()
			dead.Close()
			p.SetBackends(map[string]string{"dead": deadAddr})
			got := getLater("http://" + addr + "/")
			b := startBackend(t, "b")
			p.SetBackends(map[string]string{"dead": deadAddr, "b": b.addr()})
			select {
			case body := <-got:
				if !strings.HasPrefix(body, "b ") {
					t.Errorf("got %q", body)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("the waiting request was never served")
			}
		})
	}
}

// TestTCPHalfCloseAndProxyProtocol: the backend sees the client's address
// in a PROXY header first, and a client that shuts its writing side still
// gets the answer.
func TestTCPHalfCloseAndProxyProtocol(t *testing.T) {
	for version, want := range map[int]string{1: "PROXY TCP4 127.0.0.1 127.0.0.1 ", 2: "\r\n\r\n\x00\r\nQUIT\n\x21\x11"} {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		defer ln.Close()
		var mu sync.Mutex
		var header string
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			all, _ := io.ReadAll(c) // until the client's half-close
			mu.Lock()
			header = string(all)
			mu.Unlock()
			c.Write([]byte("answer after EOF"))
		}()
		p, addr := startProxy(t, Options{ProxyProtocol: version})
		p.SetBackends(map[string]string{"x": ln.Addr().String()})
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("hello"))
		c.(*net.TCPConn).CloseWrite()
		reply, _ := io.ReadAll(bufio.NewReader(c))
		c.Close()
		if string(reply) != "answer after EOF" {
			t.Errorf("v%d: reply %q", version, reply)
		}
		mu.Lock()
		if !strings.HasPrefix(header, want) || !strings.HasSuffix(header, "hello") {
			t.Errorf("v%d: the backend read %q", version, header)
		}
		mu.Unlock()
	}
}

// TestHTTPUpgradesAndStreamsPassThrough: a WebSocket-style upgrade gets a
// two-way connection to the backend, and a streaming response arrives in
// pieces as the backend flushes them, each request counted in flight
// until it ends.
func TestHTTPUpgradesAndStreamsPassThrough(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	flushed := make(chan struct{})
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") == "echo" {
			c, rw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
			rw.Flush()
			line, _ := rw.ReadString('\n')
			rw.WriteString("echo: " + line)
			rw.Flush()
			return
		}
		fmt.Fprint(w, "first\n")
		http.NewResponseController(w).Flush()
		<-flushed
		fmt.Fprint(w, "second\n")
	}))
	defer ln.Close()
	p, addr := startProxy(t, Options{Protocol: "http"})
	p.SetBackends(map[string]string{"b": ln.Addr().String()})

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	if n := p.InFlight("b"); n != 1 {
		t.Errorf("an upgraded connection in flight: %d", n)
	}
	fmt.Fprint(c, "ping\n")
	if line, _ := br.ReadString('\n'); line != "echo: ping\n" {
		t.Errorf("through the upgrade: %q", line)
	}

	resp, err = http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	sr := bufio.NewReader(resp.Body)
	if line, _ := sr.ReadString('\n'); line != "first\n" {
		t.Errorf("the first piece: %q", line)
	}
	close(flushed) // the first piece came before the backend was done
	if line, _ := sr.ReadString('\n'); line != "second\n" {
		t.Errorf("the second piece: %q", line)
	}
	resp.Body.Close()
}

const deadlineForTests = 30 * time.Second

// TestHTTPRequestBodyStreamsAfterTheAnswerBegins: a backend may answer
// before it has read the whole request (an upload with progress, or an
// app that replies as soon as the headers arrive). Go's HTTP/1 server
// would otherwise swallow and close the rest of the request body when
// the proxy starts the answer, and the transport's read of that closed
// body tears down the backend connection mid-answer (golang/go#40747):
// the client got "unexpected EOF".
func TestHTTPRequestBodyStreamsAfterTheAnswerBegins(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).EnableFullDuplex()
		fmt.Fprint(w, "started\n")
		http.NewResponseController(w).Flush()
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "got %s\n", body)
	}))
	p, addr := startProxy(t, Options{Protocol: "http"})
	p.SetBackends(map[string]string{"b": ln.Addr().String()})

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(deadlineForTests))
	fmt.Fprint(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nfirst")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("the answer did not begin before the body ended: %v", err)
	}
	sr := bufio.NewReader(resp.Body)
	if line, err := sr.ReadString('\n'); line != "started\n" {
		t.Fatalf("the first piece: %q %v", line, err)
	}
	fmt.Fprint(c, "-last")
	if line, err := sr.ReadString('\n'); line != "got first-last\n" {
		t.Errorf("the body sent after the answer began: %q %v", line, err)
	}
}

// TestAnEndThatComesWithTheLastBytesIsPassedOn: on a connection that has
// talked a while, a peer that writes its last bytes and ends at once (so
// that one poll reports both, and a read may take the bytes and leave the
// end) still has its end passed on, each way, many times over. The
// engine takes a short read for an empty socket: without EPOLLRDHUP in
// its set it would wait for ever here.
func TestAnEndThatComesWithTheLastBytesIsPassedOn(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	// Owned by the test; ends when the listener closes. Each connection
	// answers every line, and after "bye" answers and ends its side.
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					c.Write([]byte("re " + line))
					if line == "bye\n" {
						c.(*net.TCPConn).CloseWrite()
						io.Copy(io.Discard, r) // until the client's end
						return
					}
				}
			}()
		}
	}()
	p, addr := startProxy(t, Options{})
	p.SetBackends(map[string]string{"x": ln.Addr().String()})
	for i := range 50 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(20 * time.Second))
		r := bufio.NewReader(c)
		for j := range 8 {
			fmt.Fprintf(c, "line %d\n", j)
			if _, err := r.ReadString('\n'); err != nil {
				t.Fatalf("connection %d, line %d: %v", i, j, err)
			}
		}
		io.WriteString(c, "bye\n")
		// The backend's answer and its end come together: the client
		// must see both.
		rest, err := io.ReadAll(r)
		if err != nil || string(rest) != "re bye\n" {
			t.Fatalf("connection %d: after bye read %q, %v (the backend's end was not passed on)", i, rest, err)
		}
		// Now the client's last bytes and its end, together.
		io.WriteString(c, "x")
		c.(*net.TCPConn).CloseWrite()
		c.Close()
	}
	waitFor(t, "every connection to end", func() bool { return p.InFlight("x") == 0 })
}

// TestTheModeChangesForTheNextConnection: a proxy switched from tcp to
// http and back handles each new connection as the mode in force when it
// came, whichever of its accept paths (the engine's loop, or Serve's)
// took it; http mode shows itself by the X-Forwarded-For it adds.
func TestTheModeChangesForTheNextConnection(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "xff=%q", r.Header.Get("X-Forwarded-For"))
	}))
	defer ln.Close()
	p, addr := startProxy(t, Options{})
	p.SetBackends(map[string]string{"b": ln.Addr().String()})
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for i, want := range []struct {
		protocol string
		xff      string
	}{{"tcp", `xff=""`}, {"http", `xff="127.0.0.1"`}, {"http", `xff="127.0.0.1"`}, {"tcp", `xff=""`}, {"tcp", `xff=""`}, {"http", `xff="127.0.0.1"`}} {
		p.ConfigureOptions(Options{Protocol: want.protocol})
		if got := get(t, c, "http://"+addr+"/"); got != want.xff {
			t.Fatalf("request %d, %s mode: got %s, want %s", i, want.protocol, got, want.xff)
		}
	}
}

// TestAKeptConnectionTheWorkerClosedIsNotAFailure: the fast path keeps
// connections to a worker between requests; one the worker closed while
// it was idle (its keep-alive ran out first) costs the next request
// nothing: GET, HEAD and OPTIONS go once more on a new connection.
func TestAKeptConnectionTheWorkerClosedIsNotAFailure(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := make(chan struct{}, 16)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "b "+r.Method) }),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateClosed {
				closed <- struct{}{}
			}
		},
	}
	go srv.Serve(ln)
	defer srv.Close()
	p, addr := startProxy(t, Options{Protocol: "http"})
	p.SetBackends(map[string]string{"b": ln.Addr().String()})
	c := &http.Client{}
	for _, method := range []string{"GET", "HEAD", "OPTIONS", "GET"} {
		req, _ := http.NewRequest(method, "http://"+addr+"/", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %s", method, resp.Status)
		}
		// The worker closes its idle connections now, under the proxy's
		// kept one.
		srv.SetKeepAlivesEnabled(false)
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Fatal("the worker did not close its idle connection")
		}
		srv.SetKeepAlivesEnabled(true)
	}
}

// TestEarlyHintsPassThrough: a 103 Early Hints the worker sends before
// its answer reaches the client, on the fast path as on the Transport's.
func TestEarlyHintsPassThrough(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		io.WriteString(w, "page")
	}))
	defer ln.Close()
	p, addr := startProxy(t, Options{Protocol: "http"})
	p.SetBackends(map[string]string{"b": ln.Addr().String()})
	var hints []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		hints = append(hints, fmt.Sprint(code, " ", h.Get("Link")))
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", "http://"+addr+"/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "page" || len(hints) != 1 || hints[0] != "103 </style.css>; rel=preload" {
		t.Fatalf("got %q, hints %q", body, hints)
	}
}
