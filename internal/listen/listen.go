// Package listen opens the listening sockets recluster serves on and reads
// the ones it was given: a socket for a listen entry (tcp on one family,
// both, or a unix path, whose stale file a crashed run left is replaced),
// and the address a socket is bound to. It keeps no state: which worker
// holds which socket, and for how long, is runner's (sockets.go).
package listen

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/recluster/recluster/config"
)

// Backlog is asked of listen(2); the kernel caps it at somaxconn.
// Connections wait here while one generation hands over to the next, so it
// is as large as the system allows.
const Backlog = 65535

// InodeAt is the inode of the file at path: a unix socket's file is
// removed at close only while it is still the one bound, since another
// program may have taken the path since.
func InodeAt(path string) (uint64, bool) {
	var st syscall.Stat_t
	if syscall.Lstat(path, &st) != nil {
		return 0, false
	}
	return uint64(st.Ino), true
}

// ErrLiveSocket refuses a unix socket path that another program listens on.
var ErrLiveSocket = errors.New("another program listens on it; choose another path, or stop that program")

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
		return fmt.Errorf("%s: %w", path, ErrLiveSocket)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%s: cannot tell whether something listens on it: %w", path, err)
	}
	return os.Remove(path)
}

// Open binds and listens on a socket for l, close-on-exec, and returns
// its descriptor. "localhost" is 127.0.0.1; an empty host is every
// interface, on one socket for both families where the system has IPv6.
func Open(l config.Listen) (int, error) {
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
	if err := syscall.Listen(fd, Backlog); err != nil {
		syscall.Close(fd)
		return err
	}
	return nil
}

// ListeningAddr is the address of a listening stream socket; an error
// says what else fd is.
func ListeningAddr(fd int) (string, error) {
	if v, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE); err != nil || v != syscall.SOCK_STREAM {
		return "", fmt.Errorf("not a stream socket")
	}
	if v, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN); err != nil || v != 1 {
		return "", fmt.Errorf("not a listening socket")
	}
	return Addr(fd)
}

// Addr is what fd is bound to, as a listen entry: host:port or unix:path.
func Addr(fd int) (string, error) {
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return "", err
	}
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port)), nil
	case *syscall.SockaddrInet6:
		return net.JoinHostPort(net.IP(a.Addr[:]).String(), strconv.Itoa(a.Port)), nil
	case *syscall.SockaddrUnix:
		return "unix:" + a.Name, nil
	}
	return "", fmt.Errorf("not a tcp or unix socket")
}
