package cli

import (
	"time"

	"golang.org/x/sys/unix"
)

// waitExit waits until the process pid (not our child) exits, or d passes.
// A pidfd becomes readable when its process exits.
func waitExit(pid int, d time.Duration) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return // already gone
	}
	defer unix.Close(fd)
	unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(d.Milliseconds()))
}
