//go:build linux

package osproc

import (
	"fmt"
	"net"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestListeningSocketsFromTheKernel: sock_diag and /proc agree on where a
// listener listens, for tcp (v4 and v6) and unix sockets.
func TestListeningSocketsFromTheKernel(t *testing.T) {
	var lns []net.Listener
	for _, a := range [][2]string{{"tcp", "127.0.0.1:0"}, {"tcp", "[::1]:0"}, {"unix", filepath.Join(t.TempDir(), "s.sock")}} {
		ln, err := net.Listen(a[0], a[1])
		if err != nil {
			t.Skipf("%s %s: %v", a[0], a[1], err)
		}
		defer ln.Close()
		lns = append(lns, ln)
	}
	diag, err := listeningDiag()
	if err != nil {
		t.Skipf("no sock_diag here: %v", err)
	}
	proc := listeningProc()
	for _, ln := range lns {
		want := ln.Addr().String()
		if ln.Addr().Network() == "unix" {
			want = "unix:" + want
		}
		found := 0
		for ino, addr := range diag {
			if addr == want {
				found++
				if proc[ino] != addr {
					t.Errorf("%s: /proc says %q", want, proc[ino])
				}
			}
		}
		if found != 1 {
			t.Errorf("sock_diag finds %s %d times", want, found)
		}
	}
}

// TestAStopSignalWaitsForTheShimsExec: a stop signal asked for while the
// process is still the exec shim is held, and sent once the exec is done;
// SIGKILL goes at once. (A Go shim could lose a signal its exec raced
// with, and its worker then served on, never told to stop: the soak and a
// stress of concurrent reloads saw it about once in 200 runs.)
func TestAStopSignalWaitsForTheShimsExec(t *testing.T) {
	var sent []string
	p := &osProcess{pid: 4242, inShim: true, kill: func(pid int, sig syscall.Signal) error {
		sent = append(sent, fmt.Sprintf("%d %s", pid, unix.SignalName(sig)))
		return nil
	}}
	p.Signal(syscall.SIGTERM)
	if len(sent) != 0 {
		t.Fatalf("signalled the shim: %v", sent)
	}
	p.shimDone()
	if len(sent) != 1 || sent[0] != "-4242 SIGTERM" {
		t.Fatalf("after the exec: %v", sent)
	}
	p.Signal(syscall.SIGTERM)
	if len(sent) != 2 {
		t.Fatalf("a signal after the exec was not sent: %v", sent)
	}
	q := &osProcess{pid: 7, inShim: true, kill: p.kill}
	q.Signal(syscall.SIGKILL)
	if len(sent) != 3 || sent[2] != "-7 SIGKILL" {
		t.Errorf("SIGKILL waited for the shim: %v", sent)
	}
}

// TestASignalToAGoneProcessIsNotSent: a Process whose Wait returned must
// not signal: its pgid may be reused.
func TestASignalToAGoneProcessIsNotSent(t *testing.T) {
	var sent []int
	p := &osProcess{pid: 1, gone: true, kill: func(pid int, sig syscall.Signal) error {
		sent = append(sent, pid)
		return nil
	}}
	if err := p.Signal(syscall.SIGKILL); err != nil {
		t.Errorf("signal after gone: %v", err)
	}
	if len(sent) != 0 {
		t.Errorf("signalled %v after the process was gone", sent)
	}
}

// TestListeningSeesAListener: a process that listens is seen listening,
// one that only connects is not.
func TestListeningSeesAListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if !Listening(unix.Getpid()) {
		t.Error("this test listens, but Listening says no")
	}
	ln.Close()
	if Listening(unix.Getpid()) {
		t.Error("the listener is closed, but Listening says yes")
	}
}
