//go:build !linux

package osproc

import "net"

// Outside Linux a datagram carries no sender: every datagram on the
// worker's private socket counts.
var credSpace = 0

func passCredentials(*net.UnixConn) {}

func senderPid([]byte) (int, bool) { return 0, false }

const recvmsgFlags = 0
