//go:build !linux

package proxy

import (
	"io"
	"net"
)

// rawOr is c: the raw side is Linux's (polledsock_linux.go).
func rawOr(c net.Conn) io.ReadWriter { return c }

// sendAwaiting writes p to rw; the waiting for its answer is Linux's
// (polledsock_linux.go), and here the next read waits.
func sendAwaiting(rw io.ReadWriter, p []byte) error {
	_, err := rw.Write(p)
	return err
}
