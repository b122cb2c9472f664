package osproc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/recluster/recluster/internal/proc"
	"golang.org/x/sys/unix"
)

// groupAlive reports whether any process of the group still runs. Zombies
// do not count: they hold no fd and no port, and whether they are reaped
// depends on an init process recluster does not control.
func groupAlive(pgid int) bool {
	if err := syscall.Kill(-pgid, 0); err == syscall.ESRCH {
		return false
	}
	for _, pr := range proc.All() {
		if pr.Pgid == pgid && pr.Running() {
			return true
		}
	}
	return false
}

// processStart returns a process's start time, which tells a process from a
// later one that reused its pid.
func processStart(pid int) (uint64, bool) {
	pr, ok := proc.ReadStat(pid)
	return pr.Start, ok
}

// realUID returns a process's real uid, which a setuid exec leaves as it
// was: the user who started it.
func realUID(pid int) (int, bool) {
	st, ok := proc.ReadStatus(pid)
	return st.UID, ok
}

// bootID names this boot: pids and start times mean nothing in another.
func bootID() string {
	data, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(data))
}

// PortHolder names the process that listens on addr's port, from /proc:
// "pid 1234 (nginx)", or "" when it cannot tell (another user's process).
func PortHolder(addr string) string {
	port := addrPort(addr)
	if port <= 0 {
		return ""
	}
	inodes := map[string]bool{}
	for ino, a := range listeningSockets() {
		if addrPort(a) == port {
			inodes["socket:["+strconv.FormatUint(ino, 10)+"]"] = true
		}
	}
	if len(inodes) == 0 {
		return ""
	}
	// recluster itself first: when it holds the socket, that is the
	// explanation, whoever else shares it.
	procs := append([]proc.Stat{{Pid: os.Getpid()}}, proc.All()...)
	for _, pr := range procs {
		dir := "/proc/" + strconv.Itoa(pr.Pid)
		fds, _ := os.ReadDir(dir + "/fd")
		for _, fd := range fds {
			if target, _ := os.Readlink(dir + "/fd/" + fd.Name()); inodes[target] {
				if pr.Pid == os.Getpid() && os.Getenv("LISTEN_FDS") != "" && os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
					// recluster holds it without having opened it: a
					// socket inherited with LISTEN_FDS whose LISTEN_PID
					// named another process, so it was not taken.
					return fmt.Sprintf("recluster itself, on fd %s, which it inherited but was not given: LISTEN_PID=%q is not recluster's pid (%d), so LISTEN_FDS did not apply to it",
						fd.Name(), os.Getenv("LISTEN_PID"), os.Getpid())
				}
				comm, _ := os.ReadFile(dir + "/comm")
				return fmt.Sprintf("pid %d (%s)", pr.Pid, strings.TrimSpace(string(comm)))
			}
		}
	}
	return ""
}

// markedProcesses lists the processes of this user whose environment
// holds marker (NAME=value), other than recluster itself. It runs at
// every `up`'s start, over every process of the machine: it reads no
// more than it must (the owner from one stat, then the environment of
// the user's own processes, entry by entry through one buffer), since
// reading each one's stat, status and environment whole left about a
// MiB of garbage resident in an `up` that had just started (BENCHMARKS).
func markedProcesses(marker string) []int {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	want := []byte(marker)
	uid, self := uint32(os.Getuid()), os.Getpid()
	br := bufio.NewReaderSize(nil, 4096)
	var out []int
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid == self {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat("/proc/"+name, &st) != nil || st.Uid != uid {
			continue // another user's, by its owner (its effective uid)
		}
		if !environHas(br, "/proc/"+name+"/environ", want) {
			continue
		}
		if ruid, ok := realUID(pid); !ok || ruid != int(uid) || !proc.Alive(pid) {
			continue
		}
		out = append(out, pid)
	}
	return out
}

// environHas says whether the environment file at path holds the entry
// want, reading it through br.
func environHas(br *bufio.Reader, path string, want []byte) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	br.Reset(f)
	for {
		entry, err := br.ReadSlice(0)
		if errors.Is(err, bufio.ErrBufferFull) {
			// An entry longer than the buffer is not the mark: skip it.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice(0)
			}
			if err != nil {
				return false
			}
			continue
		}
		if bytes.Equal(bytes.TrimSuffix(entry, []byte{0}), want) {
			return true
		}
		if err != nil {
			return false
		}
	}
}

// TaskRoom is how many more tasks (processes and threads) this user may
// start under recluster's RLIMIT_NPROC, counted from /proc; false when
// there is no such limit (or the user is root, whom it does not bind).
// Room above plenty is not counted exactly.
func TaskRoom(plenty int) (int, bool) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NPROC, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY || os.Getuid() == 0 {
		return 0, false
	}
	// Every task of the machine, from /proc/loadavg, is no fewer than
	// the user's: far below the limit, nothing need be counted.
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(data)); len(f) >= 4 {
			if _, total, ok := strings.Cut(f[3], "/"); ok {
				if n, err := strconv.Atoi(total); err == nil && int(rl.Cur)-n > plenty {
					return int(rl.Cur) - n, true
				}
			}
		}
	}
	tasks := 0
	for _, pr := range proc.All() {
		if st, ok := proc.ReadStatus(pr.Pid); ok && st.UID == os.Getuid() {
			tasks += st.Threads
		}
	}
	return int(rl.Cur) - tasks, true
}
