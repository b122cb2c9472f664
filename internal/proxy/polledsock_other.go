//go:build !linux

package proxy

import (
	"io"
	"net"
)

// rawOr is c: the raw side is Linux's (polledsock_linux.go).
func rawOr(c net.Conn) io.ReadWriter { return c }
