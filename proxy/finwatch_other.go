//go:build !linux

package proxy

import "net"

// finWatch is Linux's (epoll's EPOLLRDHUP); elsewhere a copy reads to
// EAGAIN as Go's io.Copy does.
type finWatch struct{}

func newFinWatch() *finWatch                      { return &finWatch{} }
func (w *finWatch) watch(fd int, c net.Conn) bool { return false }
func (w *finWatch) forget(fd int)                 {}
func (w *finWatch) stop()                         {}
