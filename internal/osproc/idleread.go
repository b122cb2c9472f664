package osproc

import (
	"sync"
	"syscall"
)

// Readers of a worker's pipes and notify socket wait for data holding no
// buffer of their own: a buffer is taken from a pool once the kernel says
// there is something to read, and given back after. Otherwise every idle
// worker would keep one per reader (16 KiB for each output pipe, 4 KiB for
// notify and ready fds) for as long as it idles: 40 KiB a worker, where
// the whole live heap of an idle 10-service stack is now 180 KiB.
var smallBuffers = sync.Pool{New: func() any { b := make([]byte, quietChunk); return &b }}

// readWhenReady waits until rc is readable, then reads it with read into
// a buffer from pool. It returns the buffer, to be given back to pool,
// with what was read; n == 0 with no error is end of file.
func readWhenReady(rc syscall.RawConn, pool *sync.Pool, read func(fd int, buf []byte) (int, error)) (*[]byte, int, error) {
	var b *[]byte
	var n int
	var readErr error
	err := rc.Read(func(fd uintptr) bool {
		b = pool.Get().(*[]byte)
		for {
			n, readErr = read(int(fd), *b)
			if readErr != syscall.EINTR {
				break
			}
		}
		if readErr == syscall.EAGAIN {
			pool.Put(b) // nothing yet: wait holding nothing
			b = nil
			return false
		}
		return true
	})
	if err == nil {
		err = readErr
	}
	if err != nil {
		if b != nil {
			pool.Put(b)
		}
		return nil, 0, err
	}
	return b, max(n, 0), nil
}
