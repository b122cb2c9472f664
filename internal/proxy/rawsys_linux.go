package proxy

import (
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The engine's system calls, made without telling the scheduler
// (RawSyscall). Each is non-blocking and returns at once, so there is no
// processor to hand over; told, Go's sysmon takes the processor back
// from any call that lasts over 20 µs (common on a virtual machine,
// where a loopback write costs 20–35 µs) and wakes a thread to look for
// work that is not there: a futex and several nanosleeps a connection,
// the most of what the tcp mode cost beyond HAProxy by `strace -c`.

func errnoErr(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

func rawRead(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return int(n), errnoErr(e)
}

func rawWrite(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return int(n), errnoErr(e)
}

func rawClose(fd int) {
	unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
}

func rawShutdown(fd, how int) {
	unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), uintptr(how), 0)
}

// rawEpollPoll returns what events are there now, without waiting.
func rawEpollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	return int(n), errnoErr(e)
}

func rawEpollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	return errnoErr(e)
}

func rawSocket(family int) (int, error) {
	fd, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	return int(fd), errnoErr(e)
}

// rawAccept4 takes the next connection of a non-blocking listener, and
// its peer's address.
func rawAccept4(fd int) (int, net.Addr, error) {
	var rsa unix.RawSockaddrAny
	size := uint32(unix.SizeofSockaddrAny)
	nfd, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&size)), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, nil, e
	}
	rawNoDelay(int(nfd))
	return int(nfd), rawAddr(&rsa), nil
}

// rawNoDelay turns Nagle's algorithm off, as Go's net does for every tcp
// connection and HAProxy for both of a proxied one's: a small write (an
// answer's last bytes, an interactive protocol's command) goes at once,
// not after the peer's acknowledgement of the last one, which a delayed
// ACK can hold back 40 ms.
func rawNoDelay(fd int) {
	one := int32(1)
	unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, uintptr(unsafe.Pointer(&one)), 4, 0)
}

func rawAddr(rsa *unix.RawSockaddrAny) net.Addr {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4(a.Addr), bigEndianPort(a.Port)))
	case unix.AF_INET6:
		a := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom16(a.Addr), bigEndianPort(a.Port)))
	}
	return &net.TCPAddr{}
}

// bigEndianPort reads a port as the kernel stores it (network order).
func bigEndianPort(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

// rawConnect starts a non-blocking connect of a new socket to ap:
// EINPROGRESS is the usual answer.
func rawConnect(ap netip.AddrPort) (fd int, err error) {
	var rsa unix.RawSockaddrAny
	var size uintptr
	family := unix.AF_INET
	if ap.Addr().Is4() || ap.Addr().Is4In6() {
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(&rsa))
		a.Family, a.Addr = unix.AF_INET, ap.Addr().Unmap().As4()
		a.Port = bigEndianPort(ap.Port())
		size = unix.SizeofSockaddrInet4
	} else {
		family = unix.AF_INET6
		a := (*unix.RawSockaddrInet6)(unsafe.Pointer(&rsa))
		a.Family, a.Addr = unix.AF_INET6, ap.Addr().As16()
		a.Port = bigEndianPort(ap.Port())
		size = unix.SizeofSockaddrInet6
	}
	if fd, err = rawSocket(family); err != nil {
		return -1, err
	}
	rawNoDelay(fd)
	_, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&rsa)), size)
	return fd, errnoErr(e)
}

func sockaddrTCP(sa unix.Sockaddr) net.Addr {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)))
	case *unix.SockaddrInet6:
		return net.TCPAddrFromAddrPort(netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)))
	}
	return &net.TCPAddr{}
}

func localAddr(fd int) net.Addr {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return &net.TCPAddr{}
	}
	return sockaddrTCP(sa)
}

// dupCloexec is a duplicate of fd, closed on exec.
func dupCloexec(fd int) (int, error) {
	return unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
}
