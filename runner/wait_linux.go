package runner

import (
	"os"

	"golang.org/x/sys/unix"
)

// awaitExit returns once the process has exited, without reaping it, and
// without holding an OS thread: a pidfd becomes readable when its process
// exits, and Go's poller waits on it as on a socket. Waiting in
// os.Process.Wait instead blocks a thread per worker, and thousands of
// workers then meet the thread limits of the user and of Go. The reap
// that follows (os.Process.Wait) returns at once.
func awaitExit(pid int) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return // no pidfds here, or the process is gone: Wait blocks as before
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Read(func(fd uintptr) bool {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
		return n > 0 || (err != nil && err != unix.EINTR)
	})
}
