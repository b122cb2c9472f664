package proxy

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// lines collects the proxy's log lines for tests to wait on.
type lines struct {
	mu   sync.Mutex
	got  []string
	more chan struct{}
}

func newLines() *lines { return &lines{more: make(chan struct{}, 1)} }

func (l *lines) log(s string) {
	l.mu.Lock()
	l.got = append(l.got, s)
	l.mu.Unlock()
	select {
	case l.more <- struct{}{}:
	default:
	}
}

// wait returns once a line contains want, failing after a deadline.
func (l *lines) wait(t *testing.T, want string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		l.mu.Lock()
		for _, s := range l.got {
			if strings.Contains(s, want) {
				l.mu.Unlock()
				return
			}
		}
		l.mu.Unlock()
		select {
		case <-l.more:
		case <-timeout:
			t.Fatalf("no line with %q; got %q", want, l.got)
		}
	}
}

func (l *lines) count(want string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.got {
		if strings.Contains(s, want) {
			n++
		}
	}
	return n
}

// TestAnOverlongHeaderGets431: a header past MaxHeaderBytes is answered
// 431 and its connection closed, however much more the client sends.
func TestAnOverlongHeaderGets431(t *testing.T) {
	b := startBackend(t, "b")
	p, addr := startProxy(t, Options{Protocol: "http", MaxHeaderBytes: 16 << 10})
	p.SetBackends(map[string]string{"b": b.addr()})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// Owned by the test; ends when the proxy closes the connection.
	go func() {
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nX-Long: ")
		chunk := strings.Repeat("a", 4096)
		for i := 0; i < 1000; i++ { // 4 MB, a line that never ends
			if _, err := io.WriteString(c, chunk); err != nil {
				return
			}
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status %d, want 431", resp.StatusCode)
	}
	// The header within the bound still passes.
	if got := get(t, http.DefaultClient, "http://"+addr+"/"); !strings.HasPrefix(got, "b ") {
		t.Errorf("a normal request got %q", got)
	}
}

// TestASlowHeaderIsCutOff: a client that starts a request and never
// finishes its header is closed after HeaderTimeout.
func TestASlowHeaderIsCutOff(t *testing.T) {
	p, addr := startProxy(t, Options{Protocol: "http", HeaderTimeout: 200 * time.Millisecond})
	p.SetBackends(map[string]string{})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n")
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	io.Copy(io.Discard, c) // until the proxy closes it
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the connection lasted %s", d)
	}
}

// TestAtMaxConnsNewOnesWaitInTheBacklog: past MaxConns the proxy stops
// accepting; a new connection is served once an old one ends, and the
// log says so once per episode.
func TestAtMaxConnsNewOnesWaitInTheBacklog(t *testing.T) {
	for _, protocol := range []string{"tcp", "http"} {
		t.Run(protocol, func(t *testing.T) {
			b := startBackend(t, "b")
			log := newLines()
			p, addr := startProxy(t, Options{Protocol: protocol, MaxConns: 2, Log: log.log})
			p.SetBackends(map[string]string{"b": b.addr()})
			var held []net.Conn
			for range 2 {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				held = append(held, c)
			}
			log.wait(t, "2 connections open, the most it takes")
			third := getLater("http://" + addr + "/")
			select {
			case got := <-third:
				t.Fatalf("a third connection was served past the bound: %q", got)
			case <-time.After(300 * time.Millisecond):
			}
			held[0].Close()
			if got := <-third; !strings.HasPrefix(got, "b ") {
				t.Errorf("the waiting connection got %q", got)
			}
			if n := log.count("the most it takes"); n != 1 {
				t.Errorf("said %d times", n)
			}
		})
	}
}

// blackhole accepts connections and never reads, writes or closes them.
func blackhole(t *testing.T) (string, *sync.WaitGroup) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	// Owned by the test; ends when the listener closes at cleanup.
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String(), &held
}

// TestAHalfClosedConnectionEnds: a client sends and goes; the worker
// never answers nor closes. The proxy lets the connection go once it has
// been half-closed and idle for FinTimeout, instead of holding both
// sockets for ever.
func TestAHalfClosedConnectionEnds(t *testing.T) {
	hole, _ := blackhole(t)
	p, addr := startProxy(t, Options{FinTimeout: 300 * time.Millisecond})
	p.SetBackends(map[string]string{"hole": hole})
	for range 5 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "hello")
		c.Close()
	}
	waitFor(t, "the half-closed connections to end", func() bool { return p.InFlight("hole") == 0 })
}

// TestIdleTCPConnectionsEndWhenAsked: with IdleTimeout, a tcp connection
// on which nothing moves either way is closed; one that keeps talking
// stays.
func TestIdleTCPConnectionsEndWhenAsked(t *testing.T) {
	hole, _ := blackhole(t)
	p, addr := startProxy(t, Options{IdleTimeout: 300 * time.Millisecond, FinTimeout: 300 * time.Millisecond})
	p.SetBackends(map[string]string{"hole": hole})
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	busy, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	stop := make(chan struct{})
	defer close(stop)
	// Owned by the test; ends when it returns.
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
				busy.Write([]byte("x"))
			}
		}
	}()
	idle.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err == nil || timedOut(err) {
		t.Fatalf("the idle connection was not closed: %v", err)
	}
	// The proxy counts the idle one out just after closing it.
	waitFor(t, "only the busy connection left", func() bool { return p.InFlight("hole") == 1 })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestUpgradedConnectionsDoNotHoldTheDrain: Drain calls back once only an
// upgraded connection remains, and Release, once the worker is gone and
// that connection has ended, counts nothing cut.
func TestUpgradedConnectionsDoNotHoldTheDrain(t *testing.T) {
	upgraded := make(chan net.Conn, 1)
	p, c := dialThroughProxy(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, rw, _ := http.NewResponseController(w).Hijack()
		rw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
		rw.Flush()
		upgraded <- c
	}))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	backend := <-upgraded
	drained := make(chan struct{})
	p.Drain("w", func() { close(drained) })
	select {
	case <-drained:
	case <-time.After(10 * time.Second):
		t.Fatal("the upgraded connection held the drain")
	}
	if n := p.InFlight("w"); n != 1 {
		t.Errorf("in flight %d, want the upgraded connection", n)
	}
	backend.Close() // the app closed it, as on its stop signal
	released := make(chan int, 1)
	p.Release("w", func(cut int) { released <- cut })
	select {
	case cut := <-released:
		if cut != 0 {
			t.Errorf("cut %d, want 0", cut)
		}
	case <-time.After(releaseCap / 2):
		// The client has not closed its side yet, and need not: the
		// worker's side is over, which is what Release waits for.
		t.Fatal("Release waited on an upgraded connection whose worker is gone")
	}
}

// TestRequestsWaitForAWorker: with no backend (a restart), a request
// waits, and is served once one comes; Configure changing the protocol
// meanwhile fails nothing.
func TestRequestsWaitForAWorker(t *testing.T) {
	p, addr := startProxy(t, Options{Protocol: "http"})
	p.SetBackends(map[string]string{})
	waiting := getLater("http://" + addr + "/")
	waitingTCP := make(chan string, 1)
	time.AfterFunc(100*time.Millisecond, func() {
		p.ConfigureOptions(Options{Protocol: "tcp"})
		waitingTCP <- <-getLater("http://" + addr + "/")
	})
	waitFor(t, "two requests waiting for a backend", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.waiting == 2
	})
	b := startBackend(t, "b")
	p.SetBackends(map[string]string{"b": b.addr()})
	for _, ch := range []<-chan string{waiting, waitingTCP} {
		if got := <-ch; !strings.HasPrefix(got, "b ") {
			t.Errorf("a waiting request got %q", got)
		}
	}
}

// TestHTTP10WithoutHostGetsTheAddress: an HTTP/1.0 request with no Host
// reaches the worker with the address the client reached, not the name
// of the proxy's connection pool.
func TestHTTP10WithoutHostGetsTheAddress(t *testing.T) {
	_, c := dialThroughProxy(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "host="+r.Host)
	}))
	addr := c.RemoteAddr().String()
	io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if got := string(body); got != "host="+addr {
		t.Errorf("the worker saw %q, want host=%s", got, addr)
	}
}

// dialThroughProxy serves h as the one backend ("w") of an http proxy and
// returns the proxy and a connection to it; all end with the test.
func dialThroughProxy(t *testing.T, h http.Handler) (*Proxy, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	p, addr := startProxy(t, Options{Protocol: "http"})
	p.SetBackends(map[string]string{"w": ln.Addr().String()})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return p, c
}
