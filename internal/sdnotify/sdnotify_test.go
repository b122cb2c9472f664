package sdnotify

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// supervisorSocket is systemd's side: a datagram socket at a short path
// (sun_path holds 108 bytes).
func supervisorSocket(t *testing.T) (string, *net.UnixConn) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "n")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return path, conn
}

func TestFromEnv(t *testing.T) {
	if n, err := FromEnv(env(nil), 1); n != nil || err != nil {
		t.Errorf("no NOTIFY_SOCKET: %v %v", n, err)
	}
	var nilNotifier *Notifier
	if nilNotifier.Send("READY=1") != nil || nilNotifier.Watchdog() != 0 || nilNotifier.Close() != nil {
		t.Error("a nil Notifier must do nothing")
	}
	for _, bad := range []map[string]string{
		{"NOTIFY_SOCKET": "relative/path"},
		{"NOTIFY_SOCKET": "/nonexistent/notify"},
	} {
		if _, err := FromEnv(env(bad), 1); err == nil || !strings.Contains(err.Error(), "NOTIFY_SOCKET") {
			t.Errorf("%v: %v", bad, err)
		}
	}

	path, conn := supervisorSocket(t)
	// A number that multiplied to a time.Duration would wrap to a tiny
	// interval (thousands of WATCHDOG=1 a second) is refused too.
	for _, bad := range []string{"soon", "0", "18446744073709552", "9223372036854776"} {
		if _, err := FromEnv(env(map[string]string{"NOTIFY_SOCKET": path, "WATCHDOG_USEC": bad}), 1); err == nil || !strings.Contains(err.Error(), "WATCHDOG_USEC") {
			t.Errorf("WATCHDOG_USEC=%s: %v", bad, err)
		}
	}
	if n, err := FromEnv(env(map[string]string{"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "9223372036854775"}), 1); err != nil || n.Watchdog() <= 0 {
		t.Errorf("the longest WATCHDOG_USEC: %v %v", n.Watchdog(), err)
	} else {
		n.Close()
	}
	for pid, want := range map[string]time.Duration{"": time.Second, "7": time.Second, "8": 0} {
		n, err := FromEnv(env(map[string]string{"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": pid}), 7)
		if err != nil || n.Watchdog() != want {
			t.Errorf("WATCHDOG_PID=%q: watchdog %v, %v; want %s", pid, n.Watchdog(), err, want)
		}
		n.Close()
	}

	n, _ := FromEnv(env(map[string]string{"NOTIFY_SOCKET": path}), 1)
	defer n.Close()
	n.Ready("2 services\nready")
	buf := make([]byte, 512)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	k, err := conn.Read(buf)
	if got := string(buf[:k]); err != nil || got != "READY=1\nSTATUS=2 services ready\n" {
		t.Errorf("READY: %q %v", got, err)
	}
}

// TestASupervisorThatDoesNotReadHoldsNothingUp: a full socket buffer
// drops the message after sendTimeout instead of blocking.
func TestASupervisorThatDoesNotReadHoldsNothingUp(t *testing.T) {
	path, _ := supervisorSocket(t) // never read
	n, err := FromEnv(env(map[string]string{"NOTIFY_SOCKET": path}), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	var failed error
	for i := 0; i < 10000 && failed == nil; i++ {
		failed = n.Send("WATCHDOG=1")
	}
	if failed == nil {
		t.Fatal("10000 unread messages all sent: the socket buffer is not bounded?")
	}
}
