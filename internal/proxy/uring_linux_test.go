package proxy

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func ringOrSkip(t *testing.T) *ring {
	t.Helper()
	r := newRing()
	if r == nil {
		t.Skip("no io_uring here (kernel, seccomp or kernel.io_uring_disabled)")
	}
	t.Cleanup(r.close)
	return r
}

// socketPairs are n connected stream sockets, both ends non-blocking
// raw descriptors, closed when the test ends.
func socketPairs(t *testing.T, n int) (a, b []int) {
	t.Helper()
	for i := 0; i < n; i++ {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
		a, b = append(a, fds[0]), append(b, fds[1])
	}
	return a, b
}

// TestTheRingReadsAndWritesAsTheSystemCallsWould: a batch's reads and
// writes, more than the ring holds at once, come back with what read
// and write would have said: the bytes, EAGAIN from an empty socket, 0
// at an end, an error from a socket whose peer is gone.
func TestTheRingReadsAndWritesAsTheSystemCallsWould(t *testing.T) {
	r := ringOrSkip(t)
	const n = uringEntries + 44
	a, b := socketPairs(t, n)
	ops := make([]uringOp, n)
	for i := range ops {
		ops[i] = uringOp{fd: a[i], send: true, b: []byte(fmt.Sprintf("message %d", i))}
	}
	r.run(ops)
	for i, op := range ops {
		if op.err != nil || op.n != len(op.b) {
			t.Fatalf("send %d: %d, %v", i, op.n, op.err)
		}
	}
	for i := range ops {
		ops[i] = uringOp{fd: b[i], b: make([]byte, 64)}
	}
	r.run(ops)
	for i, op := range ops {
		if want := fmt.Sprintf("message %d", i); op.err != nil || string(op.b[:op.n]) != want {
			t.Fatalf("recv %d: %q, %v; want %q", i, op.b[:op.n], op.err, want)
		}
	}
	unix.Close(a[1]) // peer of b[1] gone: its read ends; b[2]'s peer stays, empty
	unix.Close(b[4]) // a[4] writes to no one
	ops = []uringOp{{fd: b[1], b: make([]byte, 8)}, {fd: b[2], b: make([]byte, 8)}, {fd: a[4], send: true, b: []byte("x")}}
	r.run(ops)
	if ops[0].err != nil || ops[0].n != 0 {
		t.Errorf("a read after the peer closed: %d, %v; want 0 (the end)", ops[0].n, ops[0].err)
	}
	if ops[1].err != unix.EAGAIN {
		t.Errorf("a read of an empty socket: %d, %v; want EAGAIN", ops[1].n, ops[1].err)
	}
	if ops[2].err != unix.EPIPE && ops[2].err != unix.ECONNRESET {
		t.Errorf("a write to a closed peer: %d, %v; want EPIPE", ops[2].n, ops[2].err)
	}
}

// TestTheRingTakesAFullSocket: a write to a socket whose peer reads
// nothing takes what fits, then says EAGAIN, as write does; it never
// waits.
func TestTheRingTakesAFullSocket(t *testing.T) {
	r := ringOrSkip(t)
	a, _ := socketPairs(t, 1)
	big := make([]byte, 1<<20)
	total := 0
	deadline := time.Now().Add(10 * time.Second)
	for {
		ops := []uringOp{{fd: a[0], send: true, b: big}, {fd: a[0], send: true, b: big}}
		r.run(ops)
		for _, op := range ops {
			total += op.n
		}
		if ops[1].err == unix.EAGAIN {
			break
		}
		if ops[0].err != nil && ops[0].err != unix.EAGAIN || ops[1].err != nil {
			t.Fatalf("%v, %v", ops[0].err, ops[1].err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the socket took %d bytes and no EAGAIN yet", total)
		}
	}
	if total == 0 {
		t.Fatal("the socket took nothing")
	}
}

// TestTheTCPEngineCarriesTheSameWithAndWithoutTheRing: many connections
// at once, each sending a few hundred KiB in writes of every size and
// half-closing, get back what they sent, through the engine with the
// ring and with the system calls made one by one.
func TestTheTCPEngineCarriesTheSameWithAndWithoutTheRing(t *testing.T) {
	for _, mode := range []string{"ring", "off"} {
		t.Run(mode, func(t *testing.T) {
			if mode == "off" {
				t.Setenv("RECLUSTER_PROXY_URING", "off")
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			// Owned by the test; ends when the listener closes.
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					// Echoes until the client's half-close, then ends.
					go func() {
						defer c.Close()
						io.Copy(c, c)
					}()
				}
			}()
			p, addr := startProxy(t, Options{})
			p.SetBackends(map[string]string{"x": ln.Addr().String()})
			var wg sync.WaitGroup
			errs := make(chan error, 40)
			for i := 0; i < 40; i++ {
				wg.Add(1)
				go func(seed int64) {
					defer wg.Done()
					errs <- echoThrough(addr, seed)
				}(int64(i))
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
			p.mu.Lock()
			e := p.engine
			p.mu.Unlock()
			if e == nil {
				t.Fatal("no tcp engine")
			}
			e.mu.Lock()
			has := e.ring != nil
			e.mu.Unlock()
			if mode == "off" && has {
				t.Error("RECLUSTER_PROXY_URING=off, and the engine has a ring")
			}
			if mode == "ring" && !has {
				if r := newRing(); r != nil {
					r.close()
					t.Error("io_uring is here, and the engine carried 40 connections at once without a ring")
				}
			}
		})
	}
}

// echoThrough sends a few hundred KiB through addr to an echoing backend
// in writes of random sizes, half-closes, and checks that the same bytes
// came back.
func echoThrough(addr string, seed int64) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	rng := rand.New(rand.NewSource(seed))
	data := make([]byte, 100<<10+rng.Intn(300<<10))
	rng.Read(data)
	got := make(chan []byte, 1)
	// Owned by echoThrough; ends at the backend's end or the deadline.
	go func() {
		b, _ := io.ReadAll(c)
		got <- b
	}()
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 1+rng.Intn(40<<10))
		if _, err := c.Write(rest[:n]); err != nil {
			return err
		}
		rest = rest[n:]
	}
	c.(*net.TCPConn).CloseWrite()
	back := <-got
	if !bytes.Equal(back, data) {
		return fmt.Errorf("seed %d: sent %d bytes (%x), got %d back (%x)", seed, len(data), sha256.Sum256(data), len(back), sha256.Sum256(back))
	}
	return nil
}

// TestAShortWriteSendsTheRestNext: what a socket did not take of a write
// is sent by the next round, and a socket that says EAGAIN is not
// written to again until epoll says it can be; a short read leaves the
// socket taken for empty.
func TestAShortWriteSendsTheRestNext(t *testing.T) {
	p := New(nil, Options{})
	e := &tcpEngine{p: p}
	pr := &rawPair{t: &tcpConn{}}
	pr.c = rawSock{pair: pr, fd: 10, readable: true, writable: true}
	pr.s = rawSock{pair: pr, fd: 11, readable: false, writable: true}
	pr.up = rawFlow{src: &pr.c, dst: &pr.s}
	op, ok, _ := e.plan(pr, &pr.up)
	if !ok || op.send || op.fd != 10 {
		t.Fatalf("a readable client: %+v, %v; want a read of 10", op, ok)
	}
	copy(op.b, "hello world")
	op.n = len("hello world")
	e.apply(pr, &pr.up, &op)
	if pr.c.readable {
		t.Error("a short read left the socket taken for readable")
	}
	op, ok, _ = e.plan(pr, &pr.up)
	if !ok || !op.send || op.fd != 11 || string(op.b) != "hello world" {
		t.Fatalf("after the read: %+v, %v; want a write of it to 11", op, ok)
	}
	op.n = 4
	e.apply(pr, &pr.up, &op)
	op, ok, _ = e.plan(pr, &pr.up)
	if !ok || !op.send || string(op.b) != "o world" {
		t.Fatalf("after a short write: %q, %v; want the rest", op.b, ok)
	}
	op.n, op.err = 0, unix.EAGAIN
	e.apply(pr, &pr.up, &op)
	if op, ok, _ = e.plan(pr, &pr.up); ok {
		t.Fatalf("after EAGAIN: %+v; want nothing until epoll says", op)
	}
	e.batching = true // the report queues the pair, and moves nothing
	e.report(&pr.s, unix.EPOLLOUT)
	if op, ok, _ = e.plan(pr, &pr.up); !ok || string(op.b) != "o world" {
		t.Fatalf("once writable: %q, %v; want the rest", op.b, ok)
	}
}
