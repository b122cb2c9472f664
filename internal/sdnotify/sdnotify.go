// Package sdnotify speaks systemd's notify protocol (sd_notify(3)) to the
// supervisor of recluster itself: READY=1, RELOADING=1, STOPPING=1,
// STATUS= and WATCHDOG=1 datagrams to the socket that NOTIFY_SOCKET names.
// recluster reads the same protocol from its workers in runner; this is
// the other side, for when systemd (or anything that plays it) runs
// recluster with Type=notify.
package sdnotify

import (
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// sendTimeout bounds a send: a supervisor that does not read its socket
// must not hold up recluster, which drops the message instead.
const sendTimeout = 100 * time.Millisecond

// Notifier sends to one supervisor. A nil *Notifier sends nothing, so
// callers need not ask whether there is a supervisor.
type Notifier struct {
	conn     *net.UnixConn
	watchdog time.Duration
}

// FromEnv connects to NOTIFY_SOCKET (a path, or "@name" for an abstract
// socket) and reads WATCHDOG_USEC, honouring WATCHDOG_PID as systemd sets
// it. With no NOTIFY_SOCKET it returns nil and no error.
func FromEnv(getenv func(string) string, pid int) (*Notifier, error) {
	addr := getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil, nil
	}
	if addr[0] != '/' && addr[0] != '@' {
		return nil, fmt.Errorf("NOTIFY_SOCKET=%q: want an absolute path or @name of a datagram socket", addr)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("NOTIFY_SOCKET=%q: %w", addr, err)
	}
	n := &Notifier{conn: conn}
	if usec := getenv("WATCHDOG_USEC"); usec != "" {
		v, err := strconv.ParseUint(usec, 10, 63)
		if err != nil || v == 0 || v > maxWatchdogUsec {
			conn.Close()
			return nil, fmt.Errorf("WATCHDOG_USEC=%q: want a whole number of microseconds from 1 to %d (about 292 years)", usec, maxWatchdogUsec)
		}
		if p := getenv("WATCHDOG_PID"); p == "" || p == strconv.Itoa(pid) {
			n.watchdog = time.Duration(v) * time.Microsecond
		}
	}
	return n, nil
}

// maxWatchdogUsec is the longest watchdog a time.Duration holds: past it,
// WATCHDOG_USEC × 1000 wrapped to a tiny or negative interval and the
// watchdog fired thousands of times a second.
const maxWatchdogUsec = uint64(math.MaxInt64 / int64(time.Microsecond))

// Watchdog is how often to send WATCHDOG=1: half of WATCHDOG_USEC, as
// sd_watchdog_enabled(3) advises; 0 when the supervisor wants none.
func (n *Notifier) Watchdog() time.Duration {
	if n == nil {
		return 0
	}
	return n.watchdog / 2
}

// Send sends one message of NAME=value lines. Values must not hold
// newlines; those in a STATUS are replaced by spaces by Status.
func (n *Notifier) Send(lines ...string) error {
	if n == nil {
		return nil
	}
	n.conn.SetWriteDeadline(time.Now().Add(sendTimeout))
	_, err := n.conn.Write([]byte(strings.Join(lines, "\n") + "\n"))
	return err
}

// Ready says every service is ready, with a status line.
func (n *Notifier) Ready(status string) error {
	return n.Send("READY=1", Status(status))
}

// Reloading says a reload began, with the CLOCK_MONOTONIC time that
// Type=notify-reload wants beside RELOADING=1.
func (n *Notifier) Reloading(status string) error {
	return n.Send("RELOADING=1", "MONOTONIC_USEC="+strconv.FormatInt(monotonicUsec(), 10), Status(status))
}

// Stopping says recluster is stopping its services.
func (n *Notifier) Stopping(status string) error {
	return n.Send("STOPPING=1", Status(status))
}

// Close closes the socket.
func (n *Notifier) Close() error {
	if n == nil {
		return nil
	}
	return n.conn.Close()
}

// Status is a STATUS= line: one line, as systemctl status shows it.
func Status(s string) string {
	return "STATUS=" + strings.NewReplacer("\n", " ", "\r", " ").Replace(s)
}

func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1000
}
