// Package proc is recluster's one reader of /proc: what the OS process
// layer asks of other processes (their group, state, start time, owner),
// and what the benchmarks and tests measure of them (CPU, memory,
// threads). Outside Linux there is no /proc and every read reports
// nothing.
package proc

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Stat is what /proc/PID/stat says of a process.
type Stat struct {
	Pid, PPid, Pgid int
	// State is R, S, D, Z (zombie), X (dead), …
	State byte
	// UTime and STime are CPU time in clock ticks (USER_HZ, 100 a second).
	UTime, STime uint64
	// Start is when the process started, in clock ticks after boot: with
	// the pid, it tells a process from a later one that reused the pid.
	Start uint64
	// RSS is its resident memory in bytes.
	RSS int64
}

var pageSize = int64(os.Getpagesize())

// Running says whether the process runs: a zombie holds no fd and no
// port, and whether it is reaped depends on an init recluster does not
// control.
func (s Stat) Running() bool { return s.State != 'Z' && s.State != 'X' }

// ReadStat reads pid's stat line; false when pid is gone (or there is no
// /proc). The command name is in parentheses and may itself hold spaces
// and parentheses, so fields are counted from the last ')'.
func ReadStat(pid int) (Stat, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, false
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 || i+2 >= len(data) {
		return Stat{}, false
	}
	f := strings.Fields(string(data[i+2:]))
	if len(f) < 20 || len(f[0]) == 0 {
		return Stat{}, false
	}
	s := Stat{Pid: pid, State: f[0][0]}
	s.PPid, _ = strconv.Atoi(f[1])
	s.Pgid, _ = strconv.Atoi(f[2])
	s.UTime, _ = strconv.ParseUint(f[11], 10, 64)
	s.STime, _ = strconv.ParseUint(f[12], 10, 64)
	s.Start, _ = strconv.ParseUint(f[19], 10, 64)
	if len(f) > 21 {
		pages, _ := strconv.ParseInt(f[21], 10, 64)
		s.RSS = pages * pageSize
	}
	return s, true
}

// All reads the stat line of every process.
func All() []Stat {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	out := make([]Stat, 0, len(names))
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		if s, ok := ReadStat(pid); ok {
			out = append(out, s)
		}
	}
	return out
}

// Status is what /proc/PID/status says of a process, of what recluster
// asks.
type Status struct {
	// UID is the real uid, which a setuid exec leaves as it was: the
	// user who started the process.
	UID     int
	Threads int
	// RSSKiB is resident memory (VmRSS; 0 for a kernel thread).
	RSSKiB int
}

// ReadStatus reads pid's status file; false when pid is gone.
func ReadStatus(pid int) (Status, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return Status{}, false
	}
	s, uid := Status{Threads: 1}, false
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "Uid:":
			s.UID, err = strconv.Atoi(f[1])
			uid = err == nil
		case "Threads:":
			s.Threads, _ = strconv.Atoi(f[1])
		case "VmRSS:":
			s.RSSKiB, _ = strconv.Atoi(f[1])
		}
	}
	return s, uid
}

// Usage is what a process group holds and has used.
type Usage struct {
	// RSS is the sum of its members' resident memory, in bytes (pages
	// they share, as a forked server's workers do, count in each).
	RSS int64
	// CPUSeconds is the CPU time of its live members, user and system.
	CPUSeconds float64
}

// GroupUsage is the usage of each process group of pgids, from one look
// at every process.
func GroupUsage(pgids map[int]bool) map[int]Usage {
	out := map[int]Usage{}
	for _, s := range All() {
		if pgids[s.Pgid] {
			u := out[s.Pgid]
			u.RSS += s.RSS
			u.CPUSeconds += float64(s.UTime+s.STime) / 100
			out[s.Pgid] = u
		}
	}
	return out
}

// Alive says whether pid runs: it exists and is no zombie.
func Alive(pid int) bool {
	s, ok := ReadStat(pid)
	return ok && s.Running()
}

// CPUSeconds is utime+stime of pid itself (not its children), in seconds;
// the kernel counts in ticks of 10 ms, so short runs are coarse.
func CPUSeconds(pid int) float64 {
	s, _ := ReadStat(pid)
	return float64(s.UTime+s.STime) / 100
}

// RSSKiB is pid's resident memory.
func RSSKiB(pid int) int {
	s, _ := ReadStatus(pid)
	return s.RSSKiB
}

// Threads is pid's number of OS threads.
func Threads(pid int) int {
	s, _ := ReadStatus(pid)
	return s.Threads
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
