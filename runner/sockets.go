package runner

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/recluster/recluster/config"
	"github.com/recluster/recluster/internal/osproc"
)

// listenBacklog is asked of listen(2); the kernel caps it at somaxconn.
// Connections wait here while one generation hands over to the next, so it
// is as large as the system allows.
const listenBacklog = 65535

// sockets opens each listening socket once and shares it between every
// holder of a lease on it: a socket outlives the workers that accept on
// it, which is why a reload refuses no connection. The sockets are plain
// blocking fds, never accepted on here and never registered with Go's
// poller, so a connection does not wake recluster.
type sockets struct {
	mu   sync.Mutex
	open map[config.Listen]*socket // keyed without the fd name
	// inherited are the sockets recluster was given (activation.go),
	// used before binding; inUse says which an open socket is.
	inherited []InheritedSocket
	inUse     map[int]bool
}

type socket struct {
	file  *os.File
	refs  int
	inode uint64 // of a unix socket's file, to remove only our own
	// from is 1 + the index of the inherited socket this is, or 0: an
	// inherited socket is never closed nor its file removed, since its
	// owner (systemd) keeps it for the next recluster.
	from int
}

// lease is a hold on some of the sockets, taken by acquire and given back,
// once, by release; the sockets nothing holds are closed (and a unix
// socket's file removed).
type lease struct {
	s      *sockets
	listen []config.Listen
	files  []*os.File
	opened []config.Listen // the sockets this lease opened, rather than shared
	once   sync.Once
}

// acquire returns a lease on one socket per listen entry, opening what is
// not open yet. It takes all or nothing.
func (s *sockets) acquire(ls []config.Listen) (*lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open == nil {
		s.open = map[config.Listen]*socket{}
	}
	l := &lease{s: s}
	for _, want := range ls {
		key := want
		key.Name = ""
		sk := s.open[key]
		if sk == nil {
			if sk = s.adopt(want); sk == nil {
				var err error
				if sk, err = openListener(want); err != nil {
					s.releaseLocked(l.listen)
					return nil, err
				}
			}
			s.open[key] = sk
			l.opened = append(l.opened, want)
		}
		sk.refs++
		l.listen = append(l.listen, want)
		l.files = append(l.files, sk.file)
	}
	return l, nil
}

// adopt returns an inherited socket for want, marked in use, or nil.
func (s *sockets) adopt(want config.Listen) *socket {
	i := matchInherited(want, s.inherited, func(i int) bool { return s.inUse[i] })
	if i < 0 {
		return nil
	}
	if s.inUse == nil {
		s.inUse = map[int]bool{}
	}
	s.inUse[i] = true
	return &socket{file: s.inherited[i].File, from: i + 1}
}

// release gives the lease back; later calls do nothing.
func (l *lease) release() {
	if l == nil {
		return
	}
	l.once.Do(func() {
		l.s.mu.Lock()
		defer l.s.mu.Unlock()
		l.s.releaseLocked(l.listen)
	})
}

func (s *sockets) releaseLocked(ls []config.Listen) {
	for _, l := range ls {
		key := l
		key.Name = ""
		sk := s.open[key]
		if sk == nil {
			continue
		}
		if sk.refs--; sk.refs > 0 {
			continue
		}
		delete(s.open, key)
		s.closeSocket(key, sk)
	}
}

// closeSocket closes an open socket, or gives an inherited one back.
func (s *sockets) closeSocket(key config.Listen, sk *socket) {
	if sk.from > 0 {
		delete(s.inUse, sk.from-1)
		return
	}
	sk.close(key)
}

// closeAll closes every socket, whatever holds it.
func (s *sockets) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, sk := range s.open {
		s.closeSocket(key, sk)
		delete(s.open, key)
	}
}

// close closes the socket and removes its file, if the file at the path is
// still the one it bound: another program may have taken the path since.
func (sk *socket) close(key config.Listen) {
	sk.file.Close()
	if key.Network == "unix" {
		if ino, ok := inodeAt(key.Address); ok && ino == sk.inode {
			os.Remove(key.Address)
		}
	}
}

// boundAddr returns the bound address of the socket for l (the port the
// kernel chose for port 0), or "".
func (s *sockets) boundAddr(l config.Listen) string {
	s.mu.Lock()
	key := l
	key.Name = ""
	sk := s.open[key]
	s.mu.Unlock()
	if sk == nil {
		return ""
	}
	sa, err := syscall.Getsockname(int(sk.file.Fd()))
	if err != nil {
		return ""
	}
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *syscall.SockaddrInet6:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port))
	case *syscall.SockaddrUnix:
		return "unix:" + a.Name
	}
	return ""
}

func openListener(l config.Listen) (*socket, error) {
	fd, err := listenFD(l)
	if errors.Is(err, syscall.EADDRINUSE) && l.Network == "tcp" {
		if holder := osproc.PortHolder(l.Address); holder != "" {
			err = fmt.Errorf("%w (held by %s)", err, holder)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", l, err)
	}
	sk := &socket{file: os.NewFile(uintptr(fd), l.String())}
	if l.Network == "unix" {
		sk.inode, _ = inodeAt(l.Address)
	}
	return sk, nil
}

func inodeAt(path string) (uint64, bool) {
	var st syscall.Stat_t
	if syscall.Lstat(path, &st) != nil {
		return 0, false
	}
	return uint64(st.Ino), true
}

// errLiveSocket refuses a unix socket path that another program listens on.
var errLiveSocket = errors.New("another program listens on it; choose another path, or stop that program")

// freeUnixPath readies path for bind: nothing there, or a socket left by a
// crashed run, which it removes once a connect to it is refused. A live
// socket, or a file that is not a socket, is left alone and refused.
func freeUnixPath(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket; remove it or choose another path", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%s: %w", path, errLiveSocket)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s: cannot tell whether something listens on it: %w", path, err)
	}
	return os.Remove(path)
}

func listenFD(l config.Listen) (int, error) {
	if l.Network == "unix" {
		if err := freeUnixPath(l.Address); err != nil {
			return -1, err
		}
		fd, err := socketCloexec(syscall.AF_UNIX)
		if err != nil {
			return -1, err
		}
		if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: l.Address}); err != nil {
			syscall.Close(fd)
			return -1, err
		}
		return fd, listenOrClose(fd)
	}
	host, portStr, err := net.SplitHostPort(l.Address)
	if err != nil {
		return -1, err
	}
	port, _ := strconv.Atoi(portStr)
	if host == "localhost" {
		host = "127.0.0.1"
	}
	ip := net.ParseIP(host)
	var fd int
	var sa syscall.Sockaddr
	switch {
	case host == "":
		// Every interface, v4 and v6 on one socket where the system has v6.
		if fd, err = socketCloexec(syscall.AF_INET6); err == nil {
			syscall.SetsockoptInt(fd, syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY, 0)
			sa = &syscall.SockaddrInet6{Port: port}
		} else if fd, err = socketCloexec(syscall.AF_INET); err == nil {
			sa = &syscall.SockaddrInet4{Port: port}
		}
	case ip.To4() != nil:
		a := &syscall.SockaddrInet4{Port: port}
		copy(a.Addr[:], ip.To4())
		sa = a
		fd, err = socketCloexec(syscall.AF_INET)
	default:
		a := &syscall.SockaddrInet6{Port: port}
		copy(a.Addr[:], ip.To16())
		sa = a
		if fd, err = socketCloexec(syscall.AF_INET6); err == nil {
			syscall.SetsockoptInt(fd, syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY, 1)
		}
	}
	if err != nil {
		return -1, err
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	if err := syscall.Bind(fd, sa); err != nil {
		syscall.Close(fd)
		return -1, err
	}
	return fd, listenOrClose(fd)
}

func socketCloexec(family int) (int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fd)
	}
	return fd, err
}

func listenOrClose(fd int) error {
	if err := syscall.Listen(fd, listenBacklog); err != nil {
		syscall.Close(fd)
		return err
	}
	return nil
}
