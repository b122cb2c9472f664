//go:build !linux

package osproc

import "time"

// awaitExit does nothing outside Linux: os.Process.Wait blocks a thread
// per worker there.
func awaitExit(pid int) {}

// waitGroupGone polls until the group is empty or d has passed: outside
// Linux there is no pidfd to wait on for a process that is not our child.
func waitGroupGone(pgid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	interval := time.Millisecond
	for groupAlive(pgid) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
		interval = min(interval*2, 50*time.Millisecond)
	}
	return true
}
