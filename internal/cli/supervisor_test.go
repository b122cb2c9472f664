package cli_test

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/recluster/recluster/internal/proc"
	"golang.org/x/sys/unix"
)

// notifySocket plays systemd's side of sd_notify: a datagram socket whose
// messages arrive, with the time they arrived, on the returned channel.
type notified struct {
	at   time.Time
	vars map[string]string
}

func notifySocket(t *testing.T) (string, <-chan notified) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdn") // a short path: sun_path holds 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	out := make(chan notified, 1024)
	// Owned by the test; ends when the socket closes at cleanup.
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			vars := map[string]string{}
			for _, line := range strings.Split(strings.TrimSpace(string(buf[:n])), "\n") {
				k, v, _ := strings.Cut(line, "=")
				vars[k] = v
			}
			out <- notified{time.Now(), vars}
		}
	}()
	return path, out
}

// next waits for a message that has key, and returns it with the
// watchdog pings seen before it.
func next(t *testing.T, msgs <-chan notified, key string) (notified, []time.Time) {
	t.Helper()
	var pings []time.Time
	timeout := time.After(deadline)
	for {
		select {
		case m := <-msgs:
			if _, ok := m.vars[key]; ok {
				return m, pings
			}
			if m.vars["WATCHDOG"] == "1" {
				pings = append(pings, m.at)
				continue
			}
			if key != "WATCHDOG" {
				t.Fatalf("waiting for %s, got %v", key, m.vars)
			}
		case <-timeout:
			t.Fatalf("no %s from recluster", key)
		}
	}
}

// TestUpTellsSystemd: under Type=notify, READY=1 comes once every worker
// is ready, RELOADING=1 (with MONOTONIC_USEC) then READY=1 around a
// reload, WATCHDOG=1 every half WATCHDOG_USEC, STOPPING=1 at the end; and
// the workers inherit neither NOTIFY_SOCKET nor the watchdog.
func TestUpTellsSystemd(t *testing.T) {
	dir := stack(t, `
services:
  web:
    command: [WORKER, -mode, serve, -ready, -after, 200ms]
    workers: 2
    readyWhen: ready
    listen: 127.0.0.1:0
  env:
    command: sh -c 'echo "inherited [$WATCHDOG_USEC] [$WATCHDOG_PID]"; exec sleep 1000'
    workers: 1
`)
	path, msgs := notifySocket(t)
	const watchdog = 400 * time.Millisecond
	env := append(testEnv(t), "NOTIFY_SOCKET="+path, "WATCHDOG_USEC="+strconv.Itoa(int(watchdog/time.Microsecond)))
	u := startUpIn(t, dir, env)

	ready, _ := next(t, msgs, "READY")
	st := status(t, dir)
	for _, s := range st.Services {
		for _, w := range s.Workers {
			if w.State != "ready" {
				t.Errorf("READY=1 came before %s.%d was ready: %s", s.Name, w.ID, w.State)
			}
		}
	}
	if !strings.Contains(ready.vars["STATUS"], "2 services, 3 of 3 workers ready") {
		t.Errorf("STATUS=%q", ready.vars["STATUS"])
	}
	u.waitLine(`env\.0 +\| inherited \[\] \[\]`)

	if r := verb(t, dir, "reload", "web"); r.code != 0 {
		t.Fatalf("reload: %d %s", r.code, r.err)
	}
	reloading, _ := next(t, msgs, "RELOADING")
	usec, err := strconv.ParseInt(reloading.vars["MONOTONIC_USEC"], 10, 64)
	var now unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &now)
	if err != nil || usec <= 0 || usec > now.Nano()/1000 {
		t.Errorf("MONOTONIC_USEC=%q, now %d", reloading.vars["MONOTONIC_USEC"], now.Nano()/1000)
	}
	next(t, msgs, "READY")

	// The watchdog: pings at half WATCHDOG_USEC; on a busy machine some
	// come late, none early. Meanwhile up idles: it does not spin.
	cpu, wall := proc.CPUSeconds(u.cmd.Process.Pid), time.Now()
	_, pings := next(t, msgs, "WATCHDOG")
	for len(pings) < 6 {
		m, _ := next(t, msgs, "WATCHDOG")
		pings = append(pings, m.at)
	}
	var gaps []time.Duration
	for i := 1; i < len(pings); i++ {
		gaps = append(gaps, pings[i].Sub(pings[i-1]))
	}
	if used, took := proc.CPUSeconds(u.cmd.Process.Pid)-cpu, time.Since(wall).Seconds(); used > took/2 {
		t.Errorf("up used %.2f s of CPU in %.2f s of idling under a supervisor", used, took)
	}
	slices.Sort(gaps)
	if median := gaps[len(gaps)/2]; median < watchdog/2-50*time.Millisecond || median > watchdog {
		t.Errorf("watchdog pings %v apart (median %s), want every %s", gaps, median, watchdog/2)
	}

	u.cmd.Process.Signal(syscall.SIGTERM)
	next(t, msgs, "STOPPING")
	if err := u.waitExit(); err != nil {
		t.Errorf("up: %v", err)
	}
}
