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
