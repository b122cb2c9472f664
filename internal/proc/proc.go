// Package proc reads what the benchmarks and tests measure of a process
// from /proc, and ends the process groups they start.
package proc

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CPUSeconds is utime+stime of pid itself (not its children), in seconds;
// the kernel counts in ticks of 10 ms (USER_HZ 100), so short runs are
// coarse.
func CPUSeconds(pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100
}

// RSSKiB is pid's resident memory.
func RSSKiB(pid int) int { return statusField(pid, "VmRSS:") }

// Threads is pid's number of OS threads.
func Threads(pid int) int { return statusField(pid, "Threads:") }

// statusField is a number field of /proc/PID/status.
func statusField(pid int, name string) int {
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == name {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// StopGroup ends the process group cmd leads (started with Setpgid):
// SIGTERM, then SIGKILL after 10 s, and waits for cmd.
func StopGroup(cmd *exec.Cmd) {
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	// Owned by StopGroup, which waits for it.
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}
