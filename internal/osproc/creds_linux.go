package osproc

import (
	"net"

	"golang.org/x/sys/unix"
)

// credSpace is room for one SCM_CREDENTIALS message.
var credSpace = unix.CmsgSpace(unix.SizeofUcred)

// passCredentials has the kernel attach each datagram's sender to it.
func passCredentials(c *net.UnixConn) {
	if raw, err := c.SyscallConn(); err == nil {
		raw.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1) })
	}
}

// senderPid reads the sender's pid from a datagram's control messages.
func senderPid(oob []byte) (int, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, false
	}
	for i := range msgs {
		if cred, err := unix.ParseUnixCredentials(&msgs[i]); err == nil {
			return int(cred.Pid), true
		}
	}
	return 0, false
}

// recvmsgFlags closes on exec any fd that arrives with a notification.
const recvmsgFlags = unix.MSG_CMSG_CLOEXEC
