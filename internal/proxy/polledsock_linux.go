package proxy

import (
	"io"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// polledSock reads and writes a socket of Go's poller with the engine's raw
// system calls (rawsys_linux.go says why), waiting through the poller
// only when the socket is not ready: deadlines, Close and the poller's
// wakeups work as for the net.Conn it came from. Every call is made
// inside RawConn's Read or Write, which holds the descriptor, so a Close
// meanwhile cannot give its number to another socket under the call.
type polledSock struct {
	rc syscall.RawConn
	// The calls' arguments and results, and the method values that
	// RawConn calls, made once: a closure a call was the most of the
	// loop's allocations. A socket is read by one goroutine at a time,
	// and written by one.
	readFn, writeFn func(uintptr) bool
	rp, wp          []byte
	rn, wn          int
	rerr, werr      error
}

// rawOr is c's raw side, or c itself when it has none.
func rawOr(c net.Conn) io.ReadWriter {
	if s := newPolledSock(c); s != nil {
		return s
	}
	return c
}

// newPolledSock is c's raw side, or nil when c has none.
func newPolledSock(c net.Conn) *polledSock {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	s := &polledSock{rc: rc}
	s.readFn, s.writeFn = s.read, s.write
	return s
}

func (s *polledSock) read(fd uintptr) bool {
	for {
		s.rn, s.rerr = rawRead(int(fd), s.rp)
		if s.rerr != unix.EINTR {
			return s.rerr != unix.EAGAIN
		}
	}
}

func (s *polledSock) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rp = p
	werr := s.rc.Read(s.readFn)
	s.rp = nil
	n, err := s.rn, s.rerr
	switch {
	case werr != nil:
		return 0, werr
	case err != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: err}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (s *polledSock) write(fd uintptr) bool {
	for s.wn < len(s.wp) {
		n, err := rawWrite(int(fd), s.wp[s.wn:])
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			return false
		case err != nil:
			s.werr = err
			return true
		}
		s.wn += n
	}
	return true
}

func (s *polledSock) Write(p []byte) (int, error) {
	s.wp, s.wn, s.werr = p, 0, nil
	werr := s.rc.Write(s.writeFn)
	n, err := s.wn, s.werr
	s.wp = nil
	if werr != nil {
		return n, werr
	}
	if err != nil {
		return n, &net.OpError{Op: "write", Net: "tcp", Err: err}
	}
	return n, nil
}
