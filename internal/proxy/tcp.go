package proxy

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// proxyTCP connects a client to a backend and copies both ways until both
// have ended, a goroutine a direction, where the engine on raw
// descriptors does not run (tcpraw_linux.go: other systems, a listener
// that is not tcp, and the first connection after a change to tcp). A
// backend that refuses the connect (it is starting, or just died) is
// skipped for another: nothing has been sent to it yet.
func (p *Proxy) proxyTCP(client net.Conn, opts Options) {
	defer client.Close()
	var skip map[string]bool // made on the first refusal
	for {
		b, err := p.pick(context.Background(), skip)
		if err != nil {
			if err != errClosed {
				p.log(fmt.Sprintf("proxy: closed a connection from %s: %v", client.RemoteAddr(), err))
			}
			return
		}
		p.countTCP(b, 1)
		server, err := backendDialer.Dial("tcp", b.addr)
		if err != nil {
			if skip == nil {
				skip = map[string]bool{}
			}
			skip[b.key] = true
			p.countTCP(b, -1)
			p.done(b, false)
			continue
		}
		t := &tcpConn{client: client, server: server, idle: opts.IdleTimeout, fin: opts.FinTimeout, stillSince: p.now()}
		p.tcp.add(t)
		p.pipe(t, opts.ProxyProtocol)
		p.tcp.remove(t)
		p.countTCP(b, -1)
		p.done(b, false)
		return
	}
}

// countTCP counts a tcp connection to b in or out of flight, beside
// inFlight.
func (p *Proxy) countTCP(b *backend, by int) {
	p.mu.Lock()
	b.tcp += by
	p.mu.Unlock()
}

// tcpConn is one proxied tcp connection, as the sweeper sees it.
type tcpConn struct {
	client, server net.Conn
	idle, fin      time.Duration // its bounds, as they were when it came
	// moved counts the chunks moved and the ends passed on, so the
	// sweeper can tell activity without a clock read per chunk.
	moved      atomic.Uint64
	halfClosed atomic.Bool // one direction has ended
	// Owned by the sweeper (set before the connection is added): the
	// count it last saw, and its Proxy.now() when that count changed.
	seen       uint64
	stillSince int64
	aborted    sync.Once
	rawAbort   func() // the engine's, for a connection it carries
}

// abort closes both sides, which ends both directions' copies.
func (t *tcpConn) abort() {
	if t.rawAbort != nil {
		t.rawAbort()
		return
	}
	t.aborted.Do(func() {
		t.client.Close()
		t.server.Close()
	})
}

// tcpConns is every tcp connection being proxied, for the sweeper.
type tcpConns struct {
	mu    sync.Mutex
	conns map[*tcpConn]struct{}
	wake  chan struct{} // signalled when the first connection comes
}

func (s *tcpConns) add(t *tcpConn) {
	s.mu.Lock()
	s.conns[t] = struct{}{}
	first := len(s.conns) == 1
	s.mu.Unlock()
	if first {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

func (s *tcpConns) remove(t *tcpConn) {
	s.mu.Lock()
	delete(s.conns, t)
	s.mu.Unlock()
}

// sweepEvery is how often the sweeper looks at the open tcp connections;
// it sleeps while there are none.
const sweepEvery = 250 * time.Millisecond

// sweep closes the tcp connections idle past their bounds: past
// IdleTimeout (when set), or half-closed past FinTimeout. It ends once the
// proxy is closed and its last connection gone.
func (p *Proxy) sweep() {
	tick := time.NewTicker(sweepEvery)
	defer tick.Stop()
	var doomed []*tcpConn
	closing := p.closing
	for {
		p.tcp.mu.Lock()
		empty := len(p.tcp.conns) == 0
		p.tcp.mu.Unlock()
		if empty {
			if closing == nil {
				return
			}
			select {
			case <-p.tcp.wake:
			case <-closing:
				closing = nil // no new connection comes: sweep what is left
				continue
			}
		}
		<-tick.C
		now := p.now()
		doomed = doomed[:0]
		p.tcp.mu.Lock()
		for t := range p.tcp.conns {
			if m := t.moved.Load(); m != t.seen {
				t.seen, t.stillSince = m, now
			}
			idle := time.Duration(now - t.stillSince)
			if (t.idle > 0 && idle > t.idle) || (t.halfClosed.Load() && idle > t.fin) {
				doomed = append(doomed, t)
			}
		}
		p.tcp.mu.Unlock()
		for _, t := range doomed {
			t.abort()
		}
		clear(doomed)
	}
}

// pipe copies both ways. Each direction's end is passed on as a
// half-close, so a client that shuts its writing side still gets its
// answer; an error on either side ends both.
func (p *Proxy) pipe(t *tcpConn, proxyProtocol int) {
	defer t.server.Close()
	if proxyProtocol > 0 {
		if _, err := t.server.Write(proxyHeader(proxyProtocol, t.client.RemoteAddr(), t.client.LocalAddr())); err != nil {
			return
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	// Run by the pool for pipe, which waits for it; ends when the client
	// stops sending or the connection is aborted.
	p.pool.Go(func() {
		defer wg.Done()
		p.half(t, t.server, t.client)
	})
	p.half(t, t.client, t.server)
	wg.Wait()
}

// half copies one direction until its source ends. The first direction
// to end passes its end on as a half-close; the second need not, since
// both sockets are closed right after (a system call a connection less).
func (p *Proxy) half(t *tcpConn, dst, src net.Conn) {
	if !p.copyHalf(t, dst, src) {
		t.abort()
		return
	}
	if t.halfClosed.CompareAndSwap(false, true) {
		closeWrite(dst)
	}
	t.moved.Add(1)
}

// copyBuf is the size of the buffers bytes move through: HAProxy's
// default tune.bufsize.
const copyBuf = 16 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBuf); return &b }}

// copyHalf moves bytes from src to dst until src ends, reporting whether
// it ended cleanly (EOF). It holds a buffer only while bytes are there to
// move: an idle connection costs its two sockets and nothing else (with
// splice, each direction also held a pipe, two more descriptors, for as
// long as the connection lived). It carries what the engine does not
// (tcpraw_linux.go): other systems, and listeners that are not tcp.
func (p *Proxy) copyHalf(t *tcpConn, dst, src net.Conn) bool {
	sc, ok := src.(syscall.Conn)
	if !ok {
		_, err := io.Copy(dst, src)
		return err == nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	for {
		var buf *[]byte
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			b := copyBufs.Get().(*[]byte)
			for {
				n, rerr = syscall.Read(int(fd), *b)
				if rerr != syscall.EINTR {
					break
				}
			}
			if rerr == syscall.EAGAIN {
				copyBufs.Put(b)
				return false // wait until there is something to read
			}
			buf = b
			return true
		})
		if err != nil {
			return false // closed (aborted)
		}
		if rerr != nil || n <= 0 {
			copyBufs.Put(buf)
			return rerr == nil
		}
		t.moved.Add(1)
		_, werr := dst.Write((*buf)[:n])
		copyBufs.Put(buf)
		if werr != nil {
			return false
		}
		t.moved.Add(1)
	}
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		c.Close()
	}
}

// proxyHeader is the PROXY protocol header (version 1 text, or version 2
// binary) that tells the backend who the client is.
func proxyHeader(version int, src, dst net.Addr) []byte {
	s, okS := addrPort(src)
	d, okD := addrPort(dst)
	if !okS || !okD || s.Addr().Is4() != d.Addr().Is4() {
		if version == 2 {
			return append(v2Signature(), 0x20, 0x00, 0x00, 0x00) // LOCAL, no address
		}
		return []byte("PROXY UNKNOWN\r\n")
	}
	if version == 1 {
		family := "TCP6"
		if s.Addr().Is4() {
			family = "TCP4"
		}
		return fmt.Appendf(nil, "PROXY %s %s %s %d %d\r\n", family, s.Addr(), d.Addr(), s.Port(), d.Port())
	}
	h := append(v2Signature(), 0x21) // version 2, PROXY
	var addrs []byte
	if s.Addr().Is4() {
		h = append(h, 0x11) // TCP over IPv4
		a, b := s.Addr().As4(), d.Addr().As4()
		addrs = append(append(addrs, a[:]...), b[:]...)
	} else {
		h = append(h, 0x21) // TCP over IPv6
		a, b := s.Addr().As16(), d.Addr().As16()
		addrs = append(append(addrs, a[:]...), b[:]...)
	}
	addrs = binary.BigEndian.AppendUint16(addrs, s.Port())
	addrs = binary.BigEndian.AppendUint16(addrs, d.Port())
	h = binary.BigEndian.AppendUint16(h, uint16(len(addrs)))
	return append(h, addrs...)
}

func v2Signature() []byte {
	return []byte{0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A}
}

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := ta.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}
