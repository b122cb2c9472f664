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
	readFn, writeFn, awaitFn func(uintptr) bool
	rp, wp                   []byte
	rn, wn                   int
	rerr, werr               error
	awaiting                 bool // sendAwaiting wrote, and waits for an answer
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
	s.readFn, s.writeFn, s.awaitFn = s.read, s.write, s.await
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

// sendAwaiting writes p to rw, a worker's connection that sends only what
// is asked of it, and waits until it has something to read or its read
// deadline passes; what the wait ended with is for the read that follows
// to find.
//
// Written so, a request's answer is read once the poller says it has
// come. A read right after the write, as Go's reads go, nearly always
// finds nothing yet, and then waits: one system call a request more than
// HAProxy makes (half of the loop's reads found nothing, by strace).
// The wait is safe only because the write is inside the wait's RawConn
// Read: the poller forgets what it knew of the socket when that Read
// begins, so whatever comes after the write wakes it; a client, which
// may send its next request at any time, cannot be read so.
func sendAwaiting(rw io.ReadWriter, p []byte) error {
	s, ok := rw.(*polledSock)
	if !ok {
		_, err := rw.Write(p)
		return err
	}
	s.wp, s.wn, s.werr, s.awaiting = p, 0, nil, false
	s.rc.Read(s.awaitFn) // an error (deadline, close) is the next read's
	n, err := s.wn, s.werr
	s.wp = nil
	if err != nil {
		return &net.OpError{Op: "write", Net: "tcp", Err: err}
	}
	if n < len(p) {
		// The socket took part of p, or the wait never began: the
		// rest goes as any write does, and the answer is read as any
		// read is.
		_, err := s.Write(p[n:])
		return err
	}
	return nil
}

func (s *polledSock) await(fd uintptr) bool {
	if s.awaiting {
		return true // the poller says there is something to read
	}
	s.awaiting = true
	s.write(fd)
	return s.werr != nil || s.wn < len(s.wp)
}
