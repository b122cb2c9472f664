package proxy

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"

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
// so a short read means the socket is empty. The reads and writes that
// a batch of the set's reports allows are made together, a round at a
// time (tcpmove_linux.go), each round one system call through an
// io_uring where the kernel lets the proxy have one (uring_linux.go).
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
	efd  int      // its descriptor (epfd.Fd would make it blocking)

	mu    sync.Mutex
	socks map[int32]*rawSock // by descriptor
	mover                    // the pairs with something to move, the batch moving it, and the ring
	done  chan struct{}      // closed when the loop ends
	// The listener while the engine accepts (tcp mode), -1 otherwise;
	// blocked at maxConnections (a release accepts again), paused after
	// an accept error such as EMFILE (a timer accepts again).
	lnfd            int
	lnSock          rawSock // its entry in socks, with no pair
	blocked, paused bool
	pause           time.Duration
	serial          int32 // the last register's
}

// rawSock is one side of a pair.
type rawSock struct {
	pair       *rawPair
	fd         int // -1 while the server is being picked
	readable   bool
	writable   bool
	ended      bool // the peer ended (RDHUP, HUP, ERR): read to the end
	connecting bool
	serial     int32 // its registration's (register); the listener's is 0
}

// rawFlow is one direction of a pair.
type rawFlow struct {
	src, dst *rawSock
	head     []byte  // sent before anything (the PROXY header)
	buf      *[]byte // taken for a read, given back once written on
	off, n   int     // buf[off:n] is read and not yet written
	eof      bool    // src ended
	done     bool    // its end was passed on (or need not be)
}

// rawPair is one proxied connection: the client's socket and the
// server's, and the bytes in flight between them.
type rawPair struct {
	t        *tcpConn // what the sweeper sees
	c, s     rawSock
	up, down rawFlow // client → server, server → client
	b        *backend
	opts     Options
	remote   net.Addr
	skip     map[string]bool
	finished bool
	queued   bool // in the mover's list
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
	e := &tcpEngine{p: p, epfd: os.NewFile(uintptr(fd), "proxy-epoll"), efd: fd, socks: map[int32]*rawSock{}, done: make(chan struct{}), lnfd: -1}
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
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ring != nil {
		e.ring.close()
		e.ring = nil
	}
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
			n, err := rawEpollPoll(int(fd), events)
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

// handle takes a batch of the set's reports, then moves what they let
// move, all of the batch together (mover).
func (e *tcpEngine) handle(events []unix.EpollEvent) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.batching = true
	for _, ev := range events {
		s := e.socks[ev.Fd]
		switch {
		case s == &e.lnSock:
			e.acceptAll()
		case e.current(s, ev):
			e.report(s, ev.Events)
		}
	}
	e.batching = false
	e.moveQueued()
}

// current says whether ev still reports on s: not on a descriptor
// closed since, perhaps with its number given to a socket accepted or
// connected since (register's serial tells them apart).
func (e *tcpEngine) current(s *rawSock, ev unix.EpollEvent) bool {
	return s != nil && s.serial == ev.Pad && !s.pair.finished
}

// report takes what the set says of s, and queues its pair to move.
func (e *tcpEngine) report(s *rawSock, events uint32) {
	const end = unix.EPOLLRDHUP | unix.EPOLLHUP | unix.EPOLLERR
	if events&(unix.EPOLLIN|end) != 0 {
		s.readable = true
	}
	if events&end != 0 {
		s.ended = true
	}
	if events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
		s.writable = true
	}
	pr := s.pair
	if s == &pr.s && s.connecting {
		if events&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
			e.refused(pr)
			return
		}
		if events&unix.EPOLLOUT == 0 {
			return
		}
		s.connecting = false
	}
	e.advance(pr)
}

// finish closes both sockets of pr and counts it out; the caller holds
// mu.
func (e *tcpEngine) finish(pr *rawPair) {
	pr.finished = true
	for _, s := range []*rawSock{&pr.c, &pr.s} {
		if s.fd >= 0 {
			delete(e.socks, int32(s.fd))
			rawClose(s.fd) // which takes it out of the set
			s.fd = -1
		}
	}
	e.giveBack(&pr.up)
	e.giveBack(&pr.down)
	p := e.p
	p.tcp.remove(pr.t)
	if pr.b != nil {
		p.countTCP(pr.b, -1)
		p.done(pr.b, false)
	}
	p.limit.release()
	p.served.Done()
	if e.blocked {
		e.blocked = false
		e.acceptAll()
	}
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
	rawShutdown(pr.c.fd, unix.SHUT_RDWR)
	rawShutdown(pr.s.fd, unix.SHUT_RDWR)
}

// addLocked takes a client just accepted, counted in served and the
// limit; the pick of a backend, which may wait, goes to a pool goroutine
// when none is ready. The caller holds mu.
func (e *tcpEngine) addLocked(fd int, remote net.Addr, opts Options) {
	pr := &rawPair{opts: opts, remote: remote}
	pr.c = rawSock{pair: pr, fd: fd, writable: true}
	pr.s = rawSock{pair: pr, fd: -1}
	pr.up = rawFlow{src: &pr.c, dst: &pr.s}
	pr.down = rawFlow{src: &pr.s, dst: &pr.c}
	pr.t = &tcpConn{idle: opts.IdleTimeout, fin: opts.FinTimeout, stillSince: e.p.now()}
	pr.t.rawAbort = func() { e.abort(pr) }
	e.socks[int32(fd)] = &pr.c
	e.p.tcp.add(pr.t)
	if err := e.register(&pr.c); err != nil {
		e.p.log(fmt.Sprintf("proxy: closed a connection from %s: %v", remote, err))
		e.finish(pr)
		return
	}
	if b := e.p.tryPick(nil); b != nil {
		e.connectLocked(pr, b)
		return
	}
	// Run by the pool; ends once a backend is picked or the wait is over.
	e.p.pool.Go(func() { e.pickAndConnect(pr) })
}

// startAccepting makes the engine accept on fd (a listener, non-blocking)
// until stopAccepting.
func (e *tcpEngine) startAccepting(fd int) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLET, Fd: int32(fd)}
	if err := unix.EpollCtl(e.efd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return err
	}
	e.lnfd, e.blocked = fd, false
	e.socks[int32(fd)] = &e.lnSock
	e.acceptAll() // what waits already: the edge came before the set knew fd
	return nil
}

// stopAccepting takes the listener out of the set, before it is closed
// or handed back to Serve.
func (e *tcpEngine) stopAccepting() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.lnfd < 0 {
		return
	}
	unix.EpollCtl(e.efd, unix.EPOLL_CTL_DEL, e.lnfd, nil)
	delete(e.socks, int32(e.lnfd))
	e.lnfd = -1
}

// acceptAll accepts until the backlog is empty, the limit is reached or
// an error pauses it; the caller holds mu. Accepting in the loop, as
// HAProxy does, spares a goroutine switch and a lock a connection.
func (e *tcpEngine) acceptAll() {
	p := e.p
	for e.lnfd >= 0 && !e.paused {
		p.mu.Lock()
		opts, http := p.opts, p.httpCur != nil
		p.mu.Unlock()
		if http {
			return // the mode changed: Serve takes accepting back
		}
		if !p.limit.tryAcquire() {
			e.blocked = true
			return
		}
		fd, remote, err := rawAccept4(e.lnfd)
		if err != nil {
			p.limit.release()
			switch err {
			case unix.EINTR, unix.ECONNABORTED:
				continue
			case unix.EAGAIN:
				return
			}
			e.pauseAccepting(err)
			return
		}
		if e.pause != 0 {
			p.log("proxy: accepting again")
			e.pause = 0
		}
		p.served.Add(1)
		e.addLocked(fd, remote, opts)
	}
}

// pauseAccepting backs off after an accept error (out of descriptors and
// the like): the connections wait in the backlog, and it is said once.
func (e *tcpEngine) pauseAccepting(err error) {
	if e.pause == 0 {
		e.p.log(fmt.Sprintf("proxy: accept: %v; new connections wait until it passes", err))
		e.pause = 5 * time.Millisecond
	} else {
		e.pause = min(2*e.pause, time.Second)
	}
	e.paused = true
	// Owned by no one: ends after the pause, accepting again.
	time.AfterFunc(e.pause, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.paused = false
		e.acceptAll()
	})
}

// register adds s's descriptor to the set, its reports marked with a
// serial of s's own, so that a report for a descriptor since closed is
// not taken for a new socket that got its number.
func (e *tcpEngine) register(s *rawSock) error {
	e.serial++
	s.serial = e.serial
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(s.fd), Pad: s.serial}
	return rawEpollCtl(e.efd, unix.EPOLL_CTL_ADD, s.fd, &ev)
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

// connect starts pr's connection to b, from the pool.
func (e *tcpEngine) connect(pr *rawPair, b *backend) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.connectLocked(pr, b)
}

// connectLocked starts pr's connection to b, counted in flight to it. A
// refusal (now, or reported by epoll) skips b for another backend, as
// nothing was sent to it yet. The caller holds mu.
func (e *tcpEngine) connectLocked(pr *rawPair, b *backend) {
	p := e.p
	p.countTCP(b, 1)
	if pr.finished { // aborted while it waited for a backend
		p.countTCP(b, -1)
		p.done(b, false)
		return
	}
	pr.b = b
	ap, err := netip.ParseAddrPort(b.addr)
	if err != nil {
		p.log(fmt.Sprintf("proxy: closed a connection from %s: %s is no IP address and port", pr.remote, b.addr))
		e.finish(pr)
		return
	}
	fd, err := rawConnect(ap)
	if fd < 0 {
		p.log(fmt.Sprintf("proxy: closed a connection from %s: connecting to %s: %v", pr.remote, b.addr, err))
		e.finish(pr)
		return
	}
	connecting := err == unix.EINPROGRESS
	if err != nil && !connecting {
		rawClose(fd)
		e.refused(pr)
		return
	}
	pr.s.fd, pr.s.connecting, pr.s.readable, pr.s.writable, pr.s.ended = fd, connecting, false, !connecting, false
	if pr.opts.ProxyProtocol > 0 {
		pr.up.head = proxyHeader(pr.opts.ProxyProtocol, pr.remote, localAddr(pr.c.fd))
	}
	e.socks[int32(fd)] = &pr.s
	if err := e.register(&pr.s); err != nil {
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
		rawClose(pr.s.fd)
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

// rawListener is a duplicate of ln's descriptor for the engine to accept
// on, and its number, when ln is a tcp listener (non-blocking as ln is;
// os.File.Fd would make both blocking); nil otherwise, and the tcp mode
// then carries net.Conns.
func rawListener(ln net.Listener) (*os.File, int) {
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		return nil, -1
	}
	f, err := tl.File()
	if err != nil {
		return nil, -1
	}
	fd := -1
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(u uintptr) { fd = int(u) })
	}
	if fd < 0 {
		f.Close()
		return nil, -1
	}
	return f, fd
}
