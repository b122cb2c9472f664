//go:build !linux

package proxy

import (
	"io"
	"net"
	"syscall"
)

// rawOr is c: the raw side is Linux's (polledsock_linux.go).
func rawOr(c net.Conn) io.ReadWriter { return c }

// sendAwaiting writes p to rw; the waiting for its answer is Linux's
// (polledsock_linux.go), and here the next read waits.
func sendAwaiting(rw io.ReadWriter, p []byte) error {
	_, err := rw.Write(p)
	return err
}

// rawRead reads a non-blocking descriptor once.
func rawRead(fd int, b []byte) (int, error) {
	n, err := syscall.Read(fd, b)
	if n < 0 {
		n = 0
	}
	return n, err
}

// dupCloexec is a duplicate of fd, closed on exec.
func dupCloexec(fd int) (int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	nfd, err := syscall.Dup(fd)
	if err == nil {
		syscall.CloseOnExec(nfd)
	}
	return nfd, err
}
