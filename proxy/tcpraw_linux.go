package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// The tcp mode's engine on Linux: HAProxy's and nginx's shape, in Go. The
// proxy accepts with accept4 and connects with a non-blocking connect on
// descriptors of its own, not net.Conns, and one goroutine moves the
// bytes of every connection, reading and writing only when its epoll set
// says a socket is ready. Against a goroutine per direction on net.Conn
// it saves, per connection, the keep-alive, Nagle and address system
// calls Go's net makes (about ten of thirty), and per chunk the read
// bound to fail and the goroutine switch: EPOLLRDHUP tells an end apart,
// so a short read means the socket is empty.
//
// Its set is itself waited on through Go's poller (an epoll descriptor is
// pollable), so no thread blocks and the scheduler stays in charge. A
// pair's state is guarded by tcpEngine.mu, which the loop holds while it
// handles a batch of events: the accept loop and the goroutines that wait
// for a backend only add pairs or give one its server.

// tcpEngine moves the bytes of every tcp connection of one Proxy.
type tcpEngine struct {
	p    *Proxy
	epfd *os.File // the epoll set, non-blocking, in Go's poller

	mu    sync.Mutex
	socks map[int32]*rawSock // by descriptor
	done  chan struct{}      // closed when the loop ends
}

// rawSock is one side of a pair.
type rawSock struct {
	pair       *rawPair
	fd         int // -1 while the server is being picked
	readable   bool
	writable   bool
	ended      bool // the peer ended (RDHUP, HUP, ERR): read to the end
	connecting bool
}

// rawFlow is one direction of a pair.
type rawFlow struct {
	src, dst *rawSock
	head     []byte // sent before anything (the PROXY header)
	buf      *[]byte
	off, n   int  // buf[off:n] is read and not yet written
	eof      bool // src ended
	done     bool // its end was passed on (or need not be)
}

// rawPair is one proxied connection: the client's socket and the
// server's, and the bytes in flight between them.
type rawPair struct {
	t        *tcpConn // what the sweeper sees
	c, s     rawSock
	up, down rawFlow // client → server, server → client
	b        *backend
	sa       unix.Sockaddr // the backend's address
	opts     Options
	remote   net.Addr
	skip     map[string]bool
	finished bool
}

func newTCPEngine(p *Proxy) *tcpEngine {
	fd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil
	}
	e := &tcpEngine{p: p, epfd: os.NewFile(uintptr(fd), "proxy-epoll"), socks: map[int32]*rawSock{}, done: make(chan struct{})}
	rc, err := e.epfd.SyscallConn()
	if err != nil {
		e.epfd.Close()
		return nil
	}
	// Owned by the engine; ends at stop, which Serve calls once every
	// tcp connection has ended.
	go e.loop(rc)
	return e
}

// stop ends the loop; every pair has finished.
func (e *tcpEngine) stop() {
	e.epfd.Close()
	<-e.done
}

// loop handles the set's events as Go's poller reports it ready, for the
// life of the engine. It is one RawRead, so the poller's word that the
// set became ready is never reset between two looks: after a batch that
// did not fill events the set was empty, and it waits.
func (e *tcpEngine) loop(rc syscall.RawConn) {
	defer close(e.done)
	events := make([]unix.EpollEvent, 128)
	rc.Read(func(fd uintptr) bool {
		for {
			n, err := unix.EpollWait(int(fd), events, 0)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return true
			}
			if n == 0 {
				return false
			}
			e.handle(events[:n])
			if n < len(events) {
				return false
			}
		}
	})
}

func (e *tcpEngine) handle(events []unix.EpollEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, ev := range events {
		s := e.socks[ev.Fd]
		if s == nil || s.pair.finished {
			continue // a descriptor closed since: its report is stale
		}
		const end = unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR
		if ev.Events&(unix.EPOLLIN|end) != 0 {
			s.readable = true
		}
		if ev.Events&end != 0 {
			s.ended = true
		}
		if ev.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
			s.writable = true
		}
		pr := s.pair
		if s == &pr.s && s.connecting {
			if ev.Events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
				e.refused(pr)
				continue
			}
			if ev.Events&unix.EPOLLOUT == 0 {
				continue
			}
			s.connecting = false
		}
		e.advance(pr)
	}
}

// advance moves what can move on both directions of pr until nothing
// can; the caller holds mu.
func (e *tcpEngine) advance(pr *rawPair) {
	for !pr.finished {
		up, upFailed := e.flow(pr, &pr.up)
		down, downFailed := e.flow(pr, &pr.down)
		switch {
		case upFailed || downFailed:
			e.finish(pr)
		case pr.up.done && pr.down.done:
			e.finish(pr)
		case !up && !down:
			return
		}
	}
}

// flow moves f's bytes while its sockets let it, reporting whether
// anything changed and whether a socket failed (which ends the pair, as
// an error on either side of a connection does).
func (e *tcpEngine) flow(pr *rawPair, f *rawFlow) (moved, failed bool) {
	if f.done {
		return false, false
	}
	for {
		if len(f.head) > 0 || f.off < f.n {
			if f.dst.fd < 0 || f.dst.connecting || !f.dst.writable {
				return moved, false
			}
			data := f.head
			if len(data) == 0 {
				data = (*f.buf)[f.off:f.n]
			}
			w, err := unix.Write(f.dst.fd, data)
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				f.dst.writable = false
				return moved, false
			case err != nil:
				return moved, true
			}
			if len(f.head) > 0 {
				f.head = f.head[w:]
			} else {
				f.off += w
			}
			pr.t.moved.Add(1)
			moved = true
			continue
		}
		if f.buf != nil {
			copyBufs.Put(f.buf)
			f.buf, f.off, f.n = nil, 0, 0
		}
		if f.eof {
			if f.dst.fd < 0 || f.dst.connecting {
				return moved, false // passed on once the server is there
			}
			if pr.t.halfClosed.CompareAndSwap(false, true) {
				unix.Shutdown(f.dst.fd, unix.SHUT_WR)
			}
			f.done = true
			pr.t.moved.Add(1)
			return true, false
		}
		if f.src.fd < 0 || f.src.connecting || !f.src.readable {
			return moved, false
		}
		b := copyBufs.Get().(*[]byte)
		r, err := unix.Read(f.src.fd, *b)
		switch {
		case err == unix.EINTR:
			copyBufs.Put(b)
			continue
		case err == unix.EAGAIN:
			copyBufs.Put(b)
			f.src.readable = false
			return moved, false
		case err != nil:
			copyBufs.Put(b)
			return moved, true
		case r == 0:
			copyBufs.Put(b)
			f.eof = true
			continue
		}
		f.buf, f.off, f.n = b, 0, r
		pr.t.moved.Add(1)
		moved = true
		if r < len(*b) && !f.src.ended {
			f.src.readable = false // emptied; epoll says when more (or an end) comes
		}
	}
}

// finish closes both sockets of pr and counts it out; the caller holds
// mu.
func (e *tcpEngine) finish(pr *rawPair) {
	pr.finished = true
	for _, s := range []*rawSock{&pr.c, &pr.s} {
		if s.fd >= 0 {
			delete(e.socks, int32(s.fd))
			unix.Close(s.fd) // which takes it out of the set
			s.fd = -1
		}
	}
	for _, f := range []*rawFlow{&pr.up, &pr.down} {
		if f.buf != nil {
			copyBufs.Put(f.buf)
			f.buf = nil
		}
	}
	p := e.p
	p.tcp.remove(pr.t)
	if pr.b != nil {
		p.countTCP(pr.b, -1)
		p.done(pr.b, false)
	}
	p.limit.release()
	p.served.Done()
}

// abort ends pr as the sweeper asks, through the loop: shutting both
// sockets makes epoll report them, and the loop finishes the pair (a
// close here could close a descriptor the loop has reused).
func (e *tcpEngine) abort(pr *rawPair) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if pr.finished {
		return
	}
	if pr.s.fd < 0 {
		e.finish(pr) // no server yet: nothing else will wake it
		return
	}
	unix.Shutdown(pr.c.fd, unix.SHUT_RDWR)
	unix.Shutdown(pr.s.fd, unix.SHUT_RDWR)
}

// add takes a client accepted with accept4; Serve has counted it in
// served and the limit. Called from the accept loop; the pick of a
// backend, which may wait, goes to a pool goroutine when none is ready.
func (e *tcpEngine) add(fd int, remote net.Addr, opts Options) {
	pr := &rawPair{opts: opts, remote: remote}
	pr.c = rawSock{pair: pr, fd: fd, writable: true}
	pr.s = rawSock{pair: pr, fd: -1}
	pr.up = rawFlow{src: &pr.c, dst: &pr.s}
	pr.down = rawFlow{src: &pr.s, dst: &pr.c}
	pr.t = &tcpConn{idle: opts.IdleTimeout, fin: opts.FinTimeout, stillSince: e.p.now()}
	pr.t.rawAbort = func() { e.abort(pr) }
	e.mu.Lock()
	e.socks[int32(fd)] = &pr.c
	e.mu.Unlock()
	e.p.tcp.add(pr.t)
	if err := e.register(fd); err != nil {
		e.closeWith(pr, err)
		return
	}
	if b := e.p.tryPick(nil); b != nil {
		e.connect(pr, b)
		return
	}
	e.p.pool.Go(func() { e.pickAndConnect(pr) })
}

func (e *tcpEngine) register(fd int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
	return unix.EpollCtl(int(e.epfd.Fd()), unix.EPOLL_CTL_ADD, fd, &ev)
}

// pickAndConnect waits for a backend for pr (run by the pool; ends when
// one is picked or the wait is over).
func (e *tcpEngine) pickAndConnect(pr *rawPair) {
	b, err := e.p.pick(context.Background(), pr.skip)
	if err != nil {
		if err != errClosed {
			e.p.log(fmt.Sprintf("proxy: closed a connection from %s: %v", pr.remote, err))
		}
		e.closeWith(pr, nil)
		return
	}
	e.connect(pr, b)
}

// closeWith finishes pr, which has no server, from outside the loop.
func (e *tcpEngine) closeWith(pr *rawPair, err error) {
	if err != nil {
		e.p.log(fmt.Sprintf("proxy: closed a connection from %s: %v", pr.remote, err))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if !pr.finished {
		e.finish(pr)
	}
}

// connect starts pr's connection to b, counted in flight to it. A refusal
// (now, or reported by epoll) skips b for another backend, as nothing was
// sent to it yet.
func (e *tcpEngine) connect(pr *rawPair, b *backend) {
	e.p.countTCP(b, 1)
	sa := b.sockaddr()
	fd := -1
	var err error
	if sa != nil {
		fd, err = unix.Socket(sockFamily(sa), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	}
	if sa == nil || err != nil {
		e.p.countTCP(b, -1)
		e.p.done(b, false)
		e.closeWith(pr, fmt.Errorf("connecting to %s: %v", b.addr, err))
		return
	}
	err = unix.Connect(fd, sa)
	connecting := err == unix.EINPROGRESS
	if err != nil && !connecting {
		unix.Close(fd)
		e.mu.Lock()
		pr.b = b
		e.refused(pr)
		e.mu.Unlock()
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if pr.finished {
		unix.Close(fd)
		e.p.countTCP(b, -1)
		e.p.done(b, false)
		return
	}
	pr.b = b
	pr.s.fd, pr.s.connecting, pr.s.readable, pr.s.writable, pr.s.ended = fd, connecting, false, !connecting, false
	if pr.opts.ProxyProtocol > 0 {
		pr.up.head = proxyHeader(pr.opts.ProxyProtocol, pr.remote, localAddr(pr.c.fd))
	}
	e.socks[int32(fd)] = &pr.s
	if err := e.register(fd); err != nil {
		e.finish(pr)
		return
	}
	e.advance(pr)
}

// refused gives up pr's backend, which refused it, for another; the
// caller holds mu.
func (e *tcpEngine) refused(pr *rawPair) {
	b := pr.b
	if pr.s.fd >= 0 {
		delete(e.socks, int32(pr.s.fd))
		unix.Close(pr.s.fd)
	}
	pr.s.fd, pr.s.connecting, pr.b = -1, false, nil
	if pr.skip == nil {
		pr.skip = map[string]bool{}
	}
	pr.skip[b.key] = true
	e.p.countTCP(b, -1)
	e.p.done(b, false)
	e.p.pool.Go(func() { e.pickAndConnect(pr) })
}

// accept takes the next client of a tcp listener with accept4: one system
// call, where net's Accept makes eight (its address, Nagle, keep-alive).
func acceptRaw(rc syscall.RawConn) (int, net.Addr, error) {
	var fd int
	var sa unix.Sockaddr
	var aerr error
	err := rc.Read(func(lfd uintptr) bool {
		for {
			fd, sa, aerr = unix.Accept4(int(lfd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
			if aerr == unix.EINTR || aerr == unix.ECONNABORTED {
				continue
			}
			return aerr != unix.EAGAIN
		}
	})
	if err != nil {
		return -1, nil, err
	}
	if aerr != nil {
		return -1, nil, os.NewSyscallError("accept4", aerr)
	}
	return fd, sockaddrTCP(sa), nil
}

// asConn makes a net.Conn of a descriptor acceptRaw took, for the http
// mode (taken over between the accept and its dispatch).
func asConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "client")
	defer f.Close()
	return net.FileConn(f)
}

func sockaddrTCP(sa unix.Sockaddr) net.Addr {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)))
	case *unix.SockaddrInet6:
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)))
	}
	return &net.TCPAddr{}
}

func localAddr(fd int) net.Addr {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return &net.TCPAddr{}
	}
	return sockaddrTCP(sa)
}

func sockFamily(sa unix.Sockaddr) int {
	if _, ok := sa.(*unix.SockaddrInet6); ok {
		return unix.AF_INET6
	}
	return unix.AF_INET
}

// sockaddr is b's address for connect, nil when it is not an IP and port.
func (b *backend) sockaddr() unix.Sockaddr {
	ap, err := netip.ParseAddrPort(b.addr)
	if err != nil {
		return nil
	}
	if ap.Addr().Is4() || ap.Addr().Is4In6() {
		return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().Unmap().As4()}
	}
	return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
}

// rawListener is a duplicate of ln's descriptor for acceptRaw, when ln
// is a tcp listener (its own RawConn cannot wait to read); nil otherwise,
// and the tcp mode then carries net.Conns. Close closes it with ln.
func rawListener(ln net.Listener) (*os.File, syscall.RawConn) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil, nil
	}
	f, err := tl.File() // non-blocking as ln is, so in Go's poller
	if err != nil {
		return nil, nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, nil
	}
	return f, rc
}
