//go:build !linux

package proxy

import (
	"net"
	"os"
)

// The engine on raw descriptors is Linux's (epoll); elsewhere the tcp
// mode carries net.Conns, a goroutine a direction.
type tcpEngine struct{}

func rawListener(net.Listener) (*os.File, int)   { return nil, -1 }
func newTCPEngine(*Proxy) *tcpEngine             { return nil }
func (e *tcpEngine) startAccepting(fd int) error { return nil }
func (e *tcpEngine) stopAccepting()              {}
func (e *tcpEngine) stop()                       {}
