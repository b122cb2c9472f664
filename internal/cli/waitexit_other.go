//go:build !linux

package cli

import (
	"syscall"
	"time"
)

// waitExit waits until the process pid exits, or d passes. Without pidfds
// it can only ask now and then.
func waitExit(pid int, d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) && syscall.Kill(pid, 0) == nil {
		time.Sleep(20 * time.Millisecond)
	}
}
