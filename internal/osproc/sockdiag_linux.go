package osproc

import (
	"encoding/binary"
	"errors"
	"net"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The kernel's sock_diag netlink interface answers "which sockets listen"
// with the listening sockets alone. /proc/net/tcp lists every socket, and
// a busy server leaves tens of thousands in TIME_WAIT: reading it then
// takes seconds, which readiness cannot afford. The messages below are the
// kernel's ABI (linux/inet_diag.h, linux/unix_diag.h), in host byte order
// but for the ports and addresses.

const (
	tcpListen         = 10 // TCP_LISTEN, as a state
	inetDiagReqSize   = 56 // struct inet_diag_req_v2
	inetDiagMsgSize   = 72 // struct inet_diag_msg
	unixDiagReqSize   = 24 // struct unix_diag_req
	unixDiagMsgSize   = 16 // struct unix_diag_msg
	udiagShowName     = 0x1
	unixDiagNameAttr  = 0
	netlinkRecvBuffer = 1 << 16
)

// listeningDiag returns every listening TCP and unix socket, inode → local
// address, or an error when sock_diag cannot be used.
func listeningDiag() (map[uint64]string, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	out := map[uint64]string{}
	for _, family := range []uint8{unix.AF_INET, unix.AF_INET6} {
		req := make([]byte, inetDiagReqSize)
		req[0], req[1] = family, unix.IPPROTO_TCP
		binary.NativeEndian.PutUint32(req[4:], 1<<tcpListen)
		err := dump(fd, req, func(msg []byte) {
			if len(msg) < inetDiagMsgSize {
				return
			}
			port := binary.BigEndian.Uint16(msg[4:6])
			var ip net.IP
			if msg[0] == unix.AF_INET {
				ip = net.IP(append([]byte(nil), msg[8:12]...))
			} else {
				ip = net.IP(append([]byte(nil), msg[8:24]...))
			}
			inode := binary.NativeEndian.Uint32(msg[68:72])
			out[uint64(inode)] = net.JoinHostPort(ip.String(), strconv.Itoa(int(port)))
		})
		if err != nil {
			return nil, err
		}
	}
	req := make([]byte, unixDiagReqSize)
	req[0] = unix.AF_UNIX
	binary.NativeEndian.PutUint32(req[4:], 1<<tcpListen)
	binary.NativeEndian.PutUint32(req[12:], udiagShowName)
	err = dump(fd, req, func(msg []byte) {
		if len(msg) < unixDiagMsgSize {
			return
		}
		inode := binary.NativeEndian.Uint32(msg[4:8])
		name := ""
		for attrs := msg[unixDiagMsgSize:]; len(attrs) >= 4; {
			l := int(binary.NativeEndian.Uint16(attrs[0:2]))
			if l < 4 || l > len(attrs) {
				break
			}
			if binary.NativeEndian.Uint16(attrs[2:4]) == unixDiagNameAttr {
				name = string(attrs[4:l])
				if len(name) > 0 && name[0] == 0 {
					name = "@" + name[1:] // abstract
				} else {
					name = strings.TrimRight(name, "\x00")
				}
			}
			attrs = attrs[min(len(attrs), (l+3)&^3):]
		}
		out[uint64(inode)] = "unix:" + name
	})
	return out, err
}

// dump sends one SOCK_DIAG_BY_FAMILY dump request and hands each answer's
// payload to each, until the kernel says it is done.
func dump(fd int, req []byte, each func([]byte)) error {
	const hdr = unix.SizeofNlMsghdr
	msg := make([]byte, hdr+len(req))
	h := (*unix.NlMsghdr)(unsafe.Pointer(&msg[0]))
	h.Len = uint32(len(msg))
	h.Type = unix.SOCK_DIAG_BY_FAMILY
	h.Flags = unix.NLM_F_REQUEST | unix.NLM_F_DUMP
	h.Seq = 1
	copy(msg[hdr:], req)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, netlinkRecvBuffer)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return nil
			case unix.NLMSG_ERROR:
				if len(m.Data) >= 4 {
					if errno := int32(binary.NativeEndian.Uint32(m.Data)); errno != 0 {
						return unix.Errno(-errno)
					}
				}
				return errors.New("sock_diag: error")
			default:
				each(m.Data)
			}
		}
	}
}
