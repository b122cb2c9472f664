//go:build !linux

package proxy

import (
	"errors"
	"net"
	"os"
	"syscall"
)

// The engine on raw descriptors is Linux's (epoll); elsewhere the tcp
// mode carries net.Conns, a goroutine a direction.
type tcpEngine struct{}

func rawListener(net.Listener) (*os.File, syscall.RawConn) { return nil, nil }
func newTCPEngine(*Proxy) *tcpEngine                       { return nil }
func (e *tcpEngine) add(int, net.Addr, Options)            {}
func (e *tcpEngine) stop()                                 {}
func acceptRaw(syscall.RawConn) (int, net.Addr, error)     { return -1, nil, errors.ErrUnsupported }
func asConn(int) (net.Conn, error)                         { return nil, errors.ErrUnsupported }
