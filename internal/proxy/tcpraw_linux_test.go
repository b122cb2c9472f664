package proxy

import (
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestTheTCPEngineTurnsNagleOff: both sockets of a connection the engine
// carries send small writes at once, as Go's net.Conns and HAProxy's do.
func TestTheTCPEngineTurnsNagleOff(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	// Owned by the test; ends at the first connection or the listener's close.
	go func() {
		if c, err := ln.Accept(); err == nil {
			accepted <- c
		}
	}()
	p, addr := startProxy(t, Options{})
	p.SetBackends(map[string]string{"x": ln.Addr().String()})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case w := <-accepted:
		defer w.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("the proxy did not connect to the backend")
	}
	p.mu.Lock() // after Serve made the engine, which it did before taking mu
	e := p.engine
	p.mu.Unlock()
	if e == nil {
		t.Skip("no tcp engine here")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	socks := 0
	for fd, s := range e.socks {
		if s.pair == nil {
			continue // the listener
		}
		socks++
		if v, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY); err != nil || v == 0 {
			t.Errorf("descriptor %d: TCP_NODELAY %d, %v", fd, v, err)
		}
	}
	if socks != 2 {
		t.Fatalf("the engine carries %d sockets, want the client's and the backend's", socks)
	}
}

// TestTheTCPEngineIgnoresAStaleReport: a report the set made for a
// descriptor since closed, whose number a new socket took, is not taken
// for the new socket's. Here the new socket is a connection to a worker
// still under way, for which an error report means refused.
func TestTheTCPEngineIgnoresAStaleReport(t *testing.T) {
	// A worker whose accept queue is full: the proxy's connection to it
	// stays under way, its SYN unanswered.
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(lfd)
	if err := unix.Bind(lfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(lfd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(lfd)
	worker := sockaddrTCP(sa).String()
	filler, err := net.Dial("tcp", worker) // the queue's one place
	if err != nil {
		t.Fatal(err)
	}
	defer filler.Close()

	p, addr := startProxy(t, Options{})
	p.SetBackends(map[string]string{"x": worker})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Once the proxy holds the connection, made under the engine's lock
	// after the engine was made, its connection to the worker is under
	// way.
	waitFor(t, "the proxy to take the connection", func() bool {
		p.tcp.mu.Lock()
		defer p.tcp.mu.Unlock()
		return len(p.tcp.conns) > 0
	})
	p.mu.Lock()
	e := p.engine
	p.mu.Unlock()
	if e == nil {
		t.Skip("no tcp engine here")
	}
	var pr *rawPair
	var fd int
	var serial int32
	e.mu.Lock()
	for _, s := range e.socks {
		if s.pair != nil && s == &s.pair.s && s.connecting {
			pr, fd, serial = s.pair, s.fd, s.serial
		}
	}
	e.mu.Unlock()
	if pr == nil {
		t.Fatal("no connection to the worker under way")
	}
	e.handle([]unix.EpollEvent{{Events: unix.EPOLLERR | unix.EPOLLHUP, Fd: int32(fd), Pad: serial - 1}})
	e.mu.Lock()
	defer e.mu.Unlock()
	if pr.s.fd != fd || !pr.s.connecting || pr.b == nil {
		t.Errorf("a stale error report was taken for the connection under way: fd %d (was %d), connecting %v", pr.s.fd, fd, pr.s.connecting)
	}
}
