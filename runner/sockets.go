package runner

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"syscall"

	"github.com/recluster/recluster/config"
)

// listenBacklog is asked of listen(2); the kernel caps it at somaxconn.
// Connections wait here while one generation hands over to the next, so it
// is as large as the system allows.
const listenBacklog = 65535

// Sockets opens each listening socket once and shares it, by reference
// count, between every generation that uses it: a socket outlives the
// workers that accept on it, which is why a reload refuses no connection.
// The sockets are plain blocking fds, never accepted on here and never
// registered with Go's poller, so a connection does not wake recluster.
type Sockets struct {
	mu   sync.Mutex
	open map[config.Listen]*socket
}

type socket struct {
	file *os.File
	refs int
}

// Acquire returns one file per listen entry, opening what is not open yet.
// It takes all or nothing: on error no reference is kept.
func (s *Sockets) Acquire(ls []config.Listen) ([]*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open == nil {
		s.open = map[config.Listen]*socket{}
	}
	var files []*os.File
	var taken []config.Listen
	for _, l := range ls {
		key := l
		key.Name = ""
		sk := s.open[key]
		if sk == nil {
			f, err := openListener(l)
			if err != nil {
				for _, t := range taken {
					s.releaseLocked(t)
				}
				return nil, err
			}
			sk = &socket{file: f}
			s.open[key] = sk
		}
		sk.refs++
		taken = append(taken, l)
		files = append(files, sk.file)
	}
	return files, nil
}

// Release drops one reference to each entry, closing (and for unix
// sockets, removing) the sockets nothing uses any more.
func (s *Sockets) Release(ls []config.Listen) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range ls {
		s.releaseLocked(l)
	}
}

func (s *Sockets) releaseLocked(l config.Listen) {
	key := l
	key.Name = ""
	sk := s.open[key]
	if sk == nil {
		return
	}
	if sk.refs--; sk.refs > 0 {
		return
	}
	delete(s.open, key)
	sk.file.Close()
	if l.Network == "unix" {
		os.Remove(l.Address)
	}
}

// CloseAll closes every socket, whatever its references.
func (s *Sockets) CloseAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, sk := range s.open {
		sk.file.Close()
		if key.Network == "unix" {
			os.Remove(key.Address)
		}
		delete(s.open, key)
	}
}

// addrOf is Addr for the socket whose config address reads addr.
func (s *Sockets) addrOf(addr string) string {
	s.mu.Lock()
	var found *socket
	for key, sk := range s.open {
		if key.String() == addr {
			found = sk
		}
	}
	s.mu.Unlock()
	if found == nil {
		return ""
	}
	return boundAddr(found)
}

// Addr returns the bound address of an open socket (the port the kernel
// chose for port 0), or "".
func (s *Sockets) Addr(l config.Listen) string {
	s.mu.Lock()
	key := l
	key.Name = ""
	sk := s.open[key]
	s.mu.Unlock()
	if sk == nil {
		return ""
	}
	return boundAddr(sk)
}

func boundAddr(sk *socket) string {
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

func openListener(l config.Listen) (*os.File, error) {
	fd, err := listenFD(l)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", l, err)
	}
	return os.NewFile(uintptr(fd), l.String()), nil
}

func listenFD(l config.Listen) (int, error) {
	if l.Network == "unix" {
		// A socket file left by a crashed run would make bind fail; only a
		// socket is removed, never another kind of file.
		if st, err := os.Lstat(l.Address); err == nil && st.Mode()&os.ModeSocket != 0 {
			os.Remove(l.Address)
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
