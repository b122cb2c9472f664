package osproc

import (
	"os"
	"time"

	"github.com/recluster/recluster/internal/proc"
	"golang.org/x/sys/unix"
)

// awaitExit returns once the process has exited, without reaping it, and
// without holding an OS thread: a pidfd becomes readable when its process
// exits, and Go's poller waits on it as on a socket. Waiting in
// os.Process.Wait instead blocks a thread per worker, and thousands of
// workers then meet the thread limits of the user and of Go. The reap
// that follows (os.Process.Wait) returns at once.
func awaitExit(pid int) { awaitExitUntil(pid, time.Time{}) }

// awaitExitUntil is awaitExit with a deadline (none when zero). It reports
// false only when the deadline passed with the process still running; a
// process it cannot watch counts as gone.
func awaitExitUntil(pid int, deadline time.Time) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return true // no pidfds here, or the process is gone
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return true
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return true
	}
	if !deadline.IsZero() {
		f.SetReadDeadline(deadline)
	}
	err = rc.Read(func(fd uintptr) bool {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
		return n > 0 || (err != nil && err != unix.EINTR)
	})
	return err == nil
}

// waitGroupGone waits until no process of the group is left, or d has
// passed. Nobody is told when a grandchild exits, but a pidfd of each
// member becomes readable when it does: wait on every member found, then
// look again, since a member may have forked meanwhile. No thread is held
// and nothing is polled on a timer.
func waitGroupGone(pgid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		var members []int
		for _, pr := range proc.All() {
			if pr.Pgid == pgid && pr.Running() {
				members = append(members, pr.Pid)
			}
		}
		if len(members) == 0 {
			return true
		}
		for _, pid := range members {
			if !awaitExitUntil(pid, deadline) {
				return false
			}
		}
	}
}
