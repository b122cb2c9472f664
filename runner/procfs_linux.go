package runner

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

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

// listenWatcher finds out when workers start listening. One goroutine scans
// /proc once a tick for every waiting worker at once, so the cost does not
// grow with the number of workers starting together.
type listenWatcher struct {
	mu      sync.Mutex
	waiting map[*listenWait]struct{}
	running sync.WaitGroup // the scanning goroutine, while anything waits
	wake    chan struct{}
}

type listenWait struct {
	pgid      int
	inherited map[uint64]bool // inodes of the sockets recluster passed in
	ready     chan struct{}   // closed when the worker listens
	cancel    chan struct{}   // closed when the worker is gone
	once      sync.Once
}

// await blocks until the worker listens (true) or is gone (false).
func (w *listenWait) await() bool {
	select {
	case <-w.ready:
		return true
	case <-w.cancel:
		return false
	}
}

func (lw *listenWatcher) add(pgid int, inherited []*os.File) *listenWait {
	w := &listenWait{pgid: pgid, inherited: map[uint64]bool{}, ready: make(chan struct{}), cancel: make(chan struct{})}
	for _, f := range inherited {
		var st syscall.Stat_t
		if syscall.Fstat(int(f.Fd()), &st) == nil {
			w.inherited[st.Ino] = true
		}
	}
	lw.mu.Lock()
	defer lw.mu.Unlock()
	if lw.waiting == nil {
		lw.waiting = map[*listenWait]struct{}{}
		lw.wake = make(chan struct{}, 1)
	}
	lw.waiting[w] = struct{}{}
	if len(lw.waiting) == 1 {
		lw.running.Add(1)
		go lw.loop()
	} else {
		select {
		case lw.wake <- struct{}{}:
		default:
		}
	}
	return w
}

func (lw *listenWatcher) remove(w *listenWait) {
	lw.mu.Lock()
	delete(lw.waiting, w)
	lw.mu.Unlock()
	w.once.Do(func() { close(w.cancel) })
}

func (lw *listenWatcher) wait() { lw.running.Wait() }

// loop is the scanning goroutine; it returns as soon as nothing waits. The
// interval starts short, since most servers listen within milliseconds, and
// grows so a slow starter costs little.
func (lw *listenWatcher) loop() {
	defer lw.running.Done()
	interval := 2 * time.Millisecond
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		lw.mu.Lock()
		if len(lw.waiting) == 0 {
			lw.mu.Unlock()
			return
		}
		waits := make([]*listenWait, 0, len(lw.waiting))
		for w := range lw.waiting {
			waits = append(waits, w)
		}
		lw.mu.Unlock()

		members := map[int][]int{}
		for _, pr := range scanProcs() {
			members[pr.pgid] = append(members[pr.pgid], pr.pid)
		}
		listening := listeningInodes()
		for _, w := range waits {
			if isListening(members[w.pgid], listening, w.inherited) {
				lw.mu.Lock()
				if _, ok := lw.waiting[w]; ok {
					delete(lw.waiting, w)
					close(w.ready)
				}
				lw.mu.Unlock()
			}
		}
		timer.Reset(interval)
		select {
		case <-timer.C:
			interval = min(interval*2, 100*time.Millisecond)
		case <-lw.wake:
			interval = 2 * time.Millisecond
		}
	}
}

// listeningInodes returns the inodes of every listening TCP and unix socket
// in recluster's network namespace, which its workers share.
func listeningInodes() map[uint64]bool {
	out := map[uint64]bool{}
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		readTable(file, func(f []string) {
			// sl local rem st tx:rx tr:when retrnsmt uid timeout inode
			if len(f) > 9 && f[3] == "0A" {
				if ino, err := strconv.ParseUint(f[9], 10, 64); err == nil {
					out[ino] = true
				}
			}
		})
	}
	readTable("/proc/net/unix", func(f []string) {
		// Num RefCount Protocol Flags Type St Inode [Path]; __SO_ACCEPTCON
		// (0x10000) in Flags marks a listening socket.
		if len(f) > 6 {
			flags, err := strconv.ParseUint(f[3], 16, 64)
			if err == nil && flags&0x10000 != 0 {
				if ino, err := strconv.ParseUint(f[6], 10, 64); err == nil {
					out[ino] = true
				}
			}
		}
	})
	return out
}

func readTable(path string, row func([]string)) {
	f, err := os.Open(path)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	sc.Scan() // header
	for sc.Scan() {
		row(strings.Fields(sc.Text()))
	}
}

// isListening reports whether one of the group's processes holds a
// listening socket it opened itself, or accepts on an inherited one: has it
// in an epoll set, or is blocked in accept on it.
func isListening(pids []int, listening, inherited map[uint64]bool) bool {
	for _, pid := range pids {
		dir := "/proc/" + strconv.Itoa(pid)
		fds, err := os.ReadDir(dir + "/fd")
		if err != nil {
			continue
		}
		fdInode := map[string]uint64{}
		var epolls []string
		for _, fd := range fds {
			target, err := os.Readlink(dir + "/fd/" + fd.Name())
			if err != nil {
				continue
			}
			if s, ok := strings.CutPrefix(target, "socket:["); ok {
				ino, _ := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64)
				if listening[ino] && !inherited[ino] {
					return true
				}
				fdInode[fd.Name()] = ino
			} else if target == "anon_inode:[eventpoll]" {
				epolls = append(epolls, fd.Name())
			}
		}
		if len(inherited) == 0 {
			continue
		}
		for _, ep := range epolls {
			if epollWatches(dir+"/fdinfo/"+ep, inherited) {
				return true
			}
		}
		if blockedInAccept(dir, fdInode, inherited) {
			return true
		}
	}
	return false
}

// epollWatches reads an epoll fd's fdinfo, whose "tfd:" lines name each
// watched file with its inode in hex.
func epollWatches(fdinfo string, inodes map[uint64]bool) bool {
	data, err := os.ReadFile(fdinfo)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "tfd:") {
			continue
		}
		if i := strings.Index(line, " ino:"); i >= 0 {
			f := strings.Fields(line[i+len(" ino:"):])
			if len(f) > 0 {
				if ino, err := strconv.ParseUint(f[0], 16, 64); err == nil && inodes[ino] {
					return true
				}
			}
		}
	}
	return false
}

// blockedInAccept covers servers that accept without epoll: one of the
// process's threads is in accept(2) on an inherited socket.
func blockedInAccept(dir string, fdInode map[string]uint64, inherited map[uint64]bool) bool {
	tasks, err := os.ReadDir(dir + "/task")
	if err != nil {
		return false
	}
	for _, t := range tasks {
		data, err := os.ReadFile(dir + "/task/" + t.Name() + "/syscall")
		if err != nil {
			continue
		}
		f := strings.Fields(string(data))
		if len(f) < 2 {
			continue
		}
		nr, _ := strconv.Atoi(f[0])
		if nr != unix.SYS_ACCEPT && nr != unix.SYS_ACCEPT4 {
			continue
		}
		fd, err := strconv.ParseUint(strings.TrimPrefix(f[1], "0x"), 16, 64)
		if err == nil && inherited[fdInode[strconv.FormatUint(fd, 10)]] {
			return true
		}
	}
	return false
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
