package runner

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/recluster/recluster/config"
	"github.com/recluster/recluster/internal/listen"
)

// Socket activation of recluster itself (sd_listen_fds(3)): systemd, or
// systemd-socket-activate, binds the stack's addresses and hands them to
// recluster, which uses each for the listen or proxy address it matches
// instead of binding. The sockets outlive recluster, so a restart of it
// refuses no connection: they wait in the backlog.

// InheritedSocket is one listening socket recluster was given.
type InheritedSocket struct {
	File *os.File
	Name string // from LISTEN_FDNAMES
	Addr string // what it is bound to, as a listen entry: host:port or unix:path
}

func (s InheritedSocket) String() string {
	return fmt.Sprintf("fd %d (%s, named %q)", s.File.Fd(), s.Addr, s.Name)
}

// listenFDsStart is SD_LISTEN_FDS_START: the first inherited fd.
const listenFDsStart = 3

// InheritedSockets reads LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES. Sockets
// meant for another process (LISTEN_PID not pid) are none of ours: nil.
// Each fd must be a listening stream socket.
func InheritedSockets(getenv func(string) string, pid int) ([]InheritedSocket, error) {
	n := getenv("LISTEN_FDS")
	if n == "" || getenv("LISTEN_PID") != strconv.Itoa(pid) {
		return nil, nil
	}
	count, err := strconv.Atoi(n)
	if err != nil || count < 1 || count > 4096 {
		return nil, fmt.Errorf("LISTEN_FDS=%q: want the number of sockets passed, 1 to 4096", n)
	}
	var names []string
	if v := getenv("LISTEN_FDNAMES"); v != "" {
		names = strings.Split(v, ":")
	}
	var out []InheritedSocket
	for i := 0; i < count; i++ {
		fd := listenFDsStart + i
		name := "unknown"
		if i < len(names) {
			name = names[i]
		}
		addr, err := listen.ListeningAddr(fd)
		if err != nil {
			return nil, fmt.Errorf("inherited fd %d (%q, from LISTEN_FDS): %w", fd, name, err)
		}
		syscall.CloseOnExec(fd) // a worker gets it by its lease, as any socket
		out = append(out, InheritedSocket{File: os.NewFile(uintptr(fd), name), Name: name, Addr: addr})
	}
	return out, nil
}

// sameAddr says whether a socket bound to bound serves the listen entry.
// ":port" is every interface, which systemd binds as [::]:port (both
// families) or 0.0.0.0:port.
func sameAddr(want config.Listen, bound string) bool {
	if want.Network == "unix" {
		return bound == "unix:"+want.Address
	}
	wh, wp, err1 := net.SplitHostPort(want.Address)
	bh, bp, err2 := net.SplitHostPort(bound)
	if err1 != nil || err2 != nil || wp != bp || wp == "0" {
		return false
	}
	bip := net.ParseIP(bh)
	if wh == "" {
		return bip != nil && bip.IsUnspecified()
	}
	if wh == "localhost" {
		wh = "127.0.0.1"
	}
	wip := net.ParseIP(wh)
	return wip != nil && bip != nil && wip.Equal(bip)
}

// matchInherited picks, of the sockets not taken, the one for want: the
// one bound to its address, else the only one of its name.
func matchInherited(want config.Listen, all []InheritedSocket, taken func(int) bool) int {
	for i, s := range all {
		if !taken(i) && sameAddr(want, s.Addr) {
			return i
		}
	}
	found := -1
	for i, s := range all {
		if s.Name == want.Name {
			if found >= 0 {
				return -1 // named alike: only addresses tell them apart
			}
			found = i
		}
	}
	if found >= 0 && !taken(found) {
		return found
	}
	return -1
}

// CheckInherited refuses inherited sockets that no listen or proxy address
// of cfg takes: a socket unit that the file no longer matches would
// otherwise be held, and its clients left waiting, for nothing.
func CheckInherited(cfg *config.Config, all []InheritedSocket) error {
	taken := map[int]bool{}
	var addrs []string
	for _, svc := range cfg.Services {
		ls := append([]config.Listen(nil), svc.Listen...)
		if svc.Proxy != nil {
			ls = append(ls, svc.Proxy.Address)
		}
		for _, l := range ls {
			addrs = append(addrs, l.Name+"="+l.String())
			if i := matchInherited(l, all, func(i int) bool { return taken[i] }); i >= 0 {
				taken[i] = true
			}
		}
	}
	var unmatched []string
	for i, s := range all {
		if !taken[i] {
			unmatched = append(unmatched, s.String())
		}
	}
	if len(unmatched) > 0 {
		return fmt.Errorf("inherited socket(s) %s match no listen or proxy address of %s (by fd name or bound address); its addresses: %s",
			strings.Join(unmatched, ", "), cfg.Path, strings.Join(addrs, ", "))
	}
	return nil
}
