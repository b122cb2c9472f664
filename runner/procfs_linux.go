package runner

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// groupAlive reports whether any process of the group still runs. Zombies
// do not count: they hold no fd and no port, and whether they are reaped
// depends on an init process recluster does not control.
func groupAlive(pgid int) bool {
	if err := syscall.Kill(-pgid, 0); err == syscall.ESRCH {
		return false
	}
	for _, pr := range scanProcs() {
		if pr.pgid == pgid && pr.state != 'Z' && pr.state != 'X' {
			return true
		}
	}
	return false
}

type procInfo struct {
	pid, ppid, pgid int
	state           byte
	start           uint64 // clock ticks after boot
}

// scanProcs reads every process's stat line.
func scanProcs() []procInfo {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	defer d.Close()
	names, _ := d.Readdirnames(-1)
	out := make([]procInfo, 0, len(names))
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil {
			continue
		}
		if pr, ok := readStat(pid); ok {
			out = append(out, pr)
		}
	}
	return out
}

// readStat parses /proc/PID/stat. The command name is in parentheses and
// may itself hold spaces and parentheses, so fields are counted from the
// last ')'.
func readStat(pid int) (procInfo, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procInfo{}, false
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 || i+2 >= len(data) {
		return procInfo{}, false
	}
	f := strings.Fields(string(data[i+2:]))
	if len(f) < 20 {
		return procInfo{}, false
	}
	pr := procInfo{pid: pid, state: f[0][0]}
	pr.ppid, _ = strconv.Atoi(f[1])
	pr.pgid, _ = strconv.Atoi(f[2])
	pr.start, _ = strconv.ParseUint(f[19], 10, 64)
	return pr, true
}

// processStart returns a process's start time, which tells a process from a
// later one that reused its pid.
func processStart(pid int) (uint64, bool) {
	pr, ok := readStat(pid)
	return pr.start, ok
}

// realUID returns a process's real uid, which a setuid exec leaves as it
// was: the user who started it.
func realUID(pid int) (int, bool) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				uid, err := strconv.Atoi(f[0])
				return uid, err == nil
			}
		}
	}
	return 0, false
}

// bootID names this boot: pids and start times mean nothing in another.
func bootID() string {
	data, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(data))
}

// portHolder names the process that listens on addr's port, from /proc:
// "pid 1234 (nginx)", or "" when it cannot tell (another user's process).
func portHolder(addr string) string {
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
	procs := append([]procInfo{{pid: os.Getpid()}}, scanProcs()...)
	for _, pr := range procs {
		dir := "/proc/" + strconv.Itoa(pr.pid)
		fds, _ := os.ReadDir(dir + "/fd")
		for _, fd := range fds {
			if target, _ := os.Readlink(dir + "/fd/" + fd.Name()); inodes[target] {
				if pr.pid == os.Getpid() && os.Getenv("LISTEN_FDS") != "" && os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
					// recluster holds it without having opened it: a
					// socket inherited with LISTEN_FDS whose LISTEN_PID
					// named another process, so it was not taken.
					return fmt.Sprintf("recluster itself, on fd %s, which it inherited but was not given: LISTEN_PID=%q is not recluster's pid (%d), so LISTEN_FDS did not apply to it",
						fd.Name(), os.Getenv("LISTEN_PID"), os.Getpid())
				}
				comm, _ := os.ReadFile(dir + "/comm")
				return fmt.Sprintf("pid %d (%s)", pr.pid, strings.TrimSpace(string(comm)))
			}
		}
	}
	return ""
}

// markedProcesses lists the processes of this user whose environment
// holds marker (NAME=value), other than recluster itself.
func markedProcesses(marker string) []int {
	want := []byte(marker + "\x00")
	var out []int
	for _, pr := range scanProcs() {
		if pr.pid == os.Getpid() || pr.state == 'Z' {
			continue
		}
		if uid, ok := realUID(pr.pid); !ok || uid != os.Getuid() {
			continue
		}
		env, err := os.ReadFile("/proc/" + strconv.Itoa(pr.pid) + "/environ")
		if err != nil {
			continue
		}
		if bytes.HasPrefix(env, want) || bytes.Contains(env, append([]byte{0}, want...)) {
			out = append(out, pr.pid)
		}
	}
	return out
}

// taskRoom is how many more tasks (processes and threads) this user may
// start under recluster's RLIMIT_NPROC, counted from /proc; false when
// there is no such limit (or the user is root, whom it does not bind).
func taskRoom() (int, bool) {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NPROC, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY || os.Getuid() == 0 {
		return 0, false
	}
	// Every task of the machine, from /proc/loadavg, is no fewer than
	// the user's: far below the limit, nothing need be counted.
	if data, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(data)); len(f) >= 4 {
			if _, total, ok := strings.Cut(f[3], "/"); ok {
				if n, err := strconv.Atoi(total); err == nil && int(rl.Cur)-n > 4*taskReserve {
					return int(rl.Cur) - n, true
				}
			}
		}
	}
	uid := strconv.Itoa(os.Getuid())
	tasks := 0
	for _, pr := range scanProcs() {
		data, err := os.ReadFile("/proc/" + strconv.Itoa(pr.pid) + "/status")
		if err != nil {
			continue
		}
		var ruid string
		threads := 1
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 {
				switch f[0] {
				case "Uid:":
					ruid = f[1]
				case "Threads:":
					threads, _ = strconv.Atoi(f[1])
				}
			}
		}
		if ruid == uid {
			tasks += threads
		}
	}
	return int(rl.Cur) - tasks, true
}
