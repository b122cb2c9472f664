package proxy

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
)

// proxyTCP connects a client to a backend and copies both ways until both
// have ended. A backend that refuses the connect (it is starting, or just
// died) is skipped for another: nothing has been sent to it yet.
func (p *Proxy) proxyTCP(client net.Conn) {
	defer client.Close()
	var skip map[string]bool // made on the first refusal
	for {
		b, err := p.pick(context.Background(), skip)
		if err != nil {
			if err != errClosed {
				p.opts.Log(fmt.Sprintf("proxy: closed a connection from %s: %v", client.RemoteAddr(), err))
			}
			return
		}
		server, err := backendDialer.Dial("tcp", b.addr)
		if err != nil {
			if skip == nil {
				skip = map[string]bool{}
			}
			skip[b.key] = true
			p.done(b)
			continue
		}
		p.pipe(client, server)
		p.done(b)
		return
	}
}

// pipe copies both ways. Between two TCP connections io.Copy splices in
// the kernel on Linux. Each direction's end is passed on as a half-close,
// so a client that shuts its writing side still gets its answer.
func (p *Proxy) pipe(client, server net.Conn) {
	defer server.Close()
	if v := p.opts.ProxyProtocol; v > 0 {
		if _, err := server.Write(proxyHeader(v, client.RemoteAddr(), client.LocalAddr())); err != nil {
			return
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	// Run by the pool for pipe, which waits for it; ends when the client
	// stops sending or the server stops taking.
	p.pool.Go(func() {
		defer wg.Done()
		io.Copy(server, client)
		closeWrite(server)
	})
	io.Copy(client, server)
	closeWrite(client)
	wg.Wait()
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
