// Package netlimit bounds the connections a listener holds open at once,
// so that a client opening them by the thousand costs `up` no more
// descriptors than the bound: past it, new connections wait in the
// kernel's listen backlog.
package netlimit

import (
	"net"
	"sync"
)

// Listener accepts at most n connections at a time. Accept waits while n
// are open, and returns once Close is called. Check, when given, refuses
// a connection (an error closes it, frees its place and takes the next).
type Listener struct {
	net.Listener
	check     func(net.Conn) error
	slots     chan struct{}
	closed    chan struct{} // a waiting Accept returns once Close is called
	closeOnce sync.Once
}

// New bounds ln at n connections open at once; check may be nil.
func New(ln net.Listener, n int, check func(net.Conn) error) *Listener {
	return &Listener{Listener: ln, check: check, slots: make(chan struct{}, n), closed: make(chan struct{})}
}

func (l *Listener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

func (l *Listener) Accept() (net.Conn, error) {
	for {
		select {
		case l.slots <- struct{}{}:
		case <-l.closed:
			return nil, net.ErrClosed
		}
		c, err := l.Listener.Accept()
		if err != nil {
			<-l.slots
			return nil, err
		}
		if l.check != nil {
			if err := l.check(c); err != nil {
				c.Close()
				<-l.slots
				continue
			}
		}
		return NewConn(c, func() { <-l.slots }), nil
	}
}

// Conn gives its place back to its bound once: when closed, or earlier
// by Release.
type Conn struct {
	net.Conn
	once    sync.Once
	release func()
}

// NewConn is c, whose place release gives back.
func NewConn(c net.Conn, release func()) *Conn { return &Conn{Conn: c, release: release} }

func (c *Conn) Close() error {
	err := c.Conn.Close()
	c.Release()
	return err
}

// Release gives the connection's place back while it stays open (a
// connection that lasts, as a log follower, leaves the bound to others).
func (c *Conn) Release() { c.once.Do(c.release) }

// CloseWrite passes a half-close on, as net/http's server uses it before
// it closes a connection it refused.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
