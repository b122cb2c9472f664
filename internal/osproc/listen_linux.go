package osproc

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/recluster/recluster/internal/proc"
	"golang.org/x/sys/unix"
)

// listenWatcher finds out when workers start listening. One goroutine scans
// /proc once a tick for every waiting worker at once, so the cost does not
// grow with the number of workers starting together.
type listenWatcher struct {
	mu      sync.Mutex
	waiting map[*listenWait]struct{}
	running sync.WaitGroup // the scanning goroutine, while anything waits
	wake    chan struct{}
}

// listenWait is one worker waited for. What counts as listening depends
// on what it was given: with inherited sockets (listen), accepting on one
// of them; with a PORT of its own (proxy), a socket of its own on that
// port; with neither, any socket of its own. A socket of its own that
// does not count is reported once, so the user learns why it is not
// ready.
type listenWait struct {
	pgid      int
	inherited map[uint64]bool // inodes of the sockets recluster passed in
	port      int             // its own PORT, or 0
	ready     chan struct{}   // closed when the worker listens
	addr      string          // where, when on a socket of its own; set before ready closes
	cancel    chan struct{}   // closed when the worker is gone
	once      sync.Once
	elsewhere chan string // capacity 1: a socket of its own that does not count
	reported  bool
}

// await blocks until the worker listens (true, with where) or is gone
// (false); notice is told, once, of a socket that does not count.
func (w *listenWait) await(notice func(addr string)) (string, bool) {
	for {
		select {
		case <-w.ready:
			return w.addr, true
		case <-w.cancel:
			return "", false
		case addr := <-w.elsewhere:
			notice(addr)
		}
	}
}

func (lw *listenWatcher) add(pgid int, inherited []*os.File, port int) *listenWait {
	w := &listenWait{pgid: pgid, inherited: map[uint64]bool{}, port: port, ready: make(chan struct{}),
		cancel: make(chan struct{}), elsewhere: make(chan string, 1)}
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

const (
	fastScanCap = 16 * time.Millisecond
	fastScanFor = 3 * time.Second
	slowScanCap = 100 * time.Millisecond
)

// loop is the scanning goroutine; it returns as soon as nothing waits. The
// interval starts short, since most servers listen within milliseconds,
// stays within fastScanCap through a typical boot (Node, Python: 100 ms to
// a second), where every tick of it is added to a reload, and grows past
// that so a slow starter costs little.
func (lw *listenWatcher) loop() {
	defer lw.running.Done()
	interval := 2 * time.Millisecond
	since := time.Now()
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
		for _, pr := range proc.All() {
			members[pr.Pgid] = append(members[pr.Pgid], pr.Pid)
		}
		listening := listeningSockets()
		for _, w := range waits {
			ready, addr, elsewhere := w.check(members[w.pgid], listening)
			if elsewhere != "" && !w.reported {
				w.reported = true
				w.elsewhere <- elsewhere
			}
			if ready {
				lw.mu.Lock()
				if _, ok := lw.waiting[w]; ok {
					delete(lw.waiting, w)
					w.addr = addr
					close(w.ready)
				}
				lw.mu.Unlock()
			}
		}
		timer.Reset(interval)
		select {
		case <-timer.C:
			limit := fastScanCap
			if time.Since(since) > fastScanFor {
				limit = slowScanCap
			}
			interval = min(interval*2, limit)
		case <-lw.wake:
			interval, since = 2*time.Millisecond, time.Now()
		}
	}
}

// listeningSockets returns every listening TCP and unix socket in
// recluster's network namespace, which its workers share: inode → local
// address ("127.0.0.1:8080", "[::]:3000", "unix:/path"). It asks the kernel
// through sock_diag, and reads /proc where that is not available.
func listeningSockets() map[uint64]string {
	if out, err := listeningDiag(); err == nil {
		return out
	}
	return listeningProc()
}

// listeningProc reads /proc/net: every socket is listed there, listening
// or not, so it is slow with many connections.
func listeningProc() map[uint64]string {
	out := map[uint64]string{}
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		readTable(file, func(f []string) {
			// sl local rem st tx:rx tr:when retrnsmt uid timeout inode
			if len(f) > 9 && f[3] == "0A" {
				if ino, err := strconv.ParseUint(f[9], 10, 64); err == nil {
					out[ino] = procAddr(f[1])
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
					path := ""
					if len(f) > 7 {
						path = f[7]
					}
					out[ino] = "unix:" + path
				}
			}
		}
	})
	return out
}

// procAddr decodes /proc/net/tcp's "0100007F:1F90": the address in host
// byte order, 32 bits at a time, then the port in hex.
func procAddr(s string) string {
	hexIP, hexPort, ok := strings.Cut(s, ":")
	raw, err := hex.DecodeString(hexIP)
	port, perr := strconv.ParseUint(hexPort, 16, 16)
	if !ok || err != nil || perr != nil || len(raw)%4 != 0 {
		return s
	}
	ip := make(net.IP, len(raw))
	for i := 0; i < len(raw); i += 4 {
		ip[i], ip[i+1], ip[i+2], ip[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	if v4 := ip.To4(); v4 != nil && len(raw) == 16 && !ip.IsUnspecified() {
		ip = v4
	}
	return net.JoinHostPort(ip.String(), strconv.FormatUint(port, 10))
}

func addrPort(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return -1
	}
	n, _ := strconv.Atoi(p)
	return n
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

// check looks at the group's processes: whether one listens as w counts
// it (ready, and where, for a socket of its own), and a socket of its own
// that does not count (elsewhere).
func (w *listenWait) check(pids []int, listening map[uint64]string) (ready bool, addr, elsewhere string) {
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
				fdInode[fd.Name()] = ino
				own, listens := listening[ino]
				if !listens || w.inherited[ino] {
					continue
				}
				switch {
				case w.port > 0 && addrPort(own) == w.port:
					return true, own, ""
				case w.port > 0, len(w.inherited) > 0:
					elsewhere = own
				default:
					return true, own, ""
				}
			} else if target == "anon_inode:[eventpoll]" {
				epolls = append(epolls, fd.Name())
			}
		}
		if len(w.inherited) == 0 {
			continue
		}
		for _, ep := range epolls {
			if epollWatches(dir+"/fdinfo/"+ep, w.inherited) {
				return true, "", ""
			}
		}
		if blockedInAccept(dir, fdInode, w.inherited) {
			return true, "", ""
		}
	}
	return false, "", elsewhere
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

// listenNotice says why a socket of the worker's own does not make it
// ready.
func listenNotice(addr string, port int) string {
	if port > 0 {
		return fmt.Sprintf("listens on %s, not on the port it was given (PORT=%d); it counts as ready once it listens on $PORT: does it read PORT?", addr, port)
	}
	return fmt.Sprintf("listens on %s, a socket of its own; with listen, it must accept on the socket it inherits as fd 3 (LISTEN_FDS), so it is not ready", addr)
}

// Listening says whether pid holds a listening socket: what readyWhen
// listening waits for in a worker given no socket and no port.
func Listening(pid int) bool {
	ok, _, _ := (&listenWait{}).check([]int{pid}, listeningSockets())
	return ok
}
