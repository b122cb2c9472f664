package runner

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/recluster/recluster/internal/listen"
	"github.com/recluster/recluster/internal/osproc"
	"github.com/recluster/recluster/internal/testbin"
)

// TestLiveUnixSocketIsNotTaken: a unix socket another program listens on
// is refused by name, and left alone; a stale one is replaced.
func TestLiveUnixSocketIsNotTaken(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "theirs.sock")
	theirs, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer theirs.Close()
	h := startHarness(t, `
services:
  web:
    command: [WORKER, -mode, serve, -ready]
    workers: 1
    listen: "unix:`+path+`"
    readyWhen: ready
`)
	err = h.m.Start(context.Background(), []string{"web"})
	if !errors.Is(err, listen.ErrLiveSocket) || !strings.Contains(err.Error(), path) {
		t.Errorf("start on a live socket: %v", err)
	}
	h.shutdown()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("the other program's socket was taken: %v", err)
	}
	c.Close()

	// A socket file nothing listens on is a crashed run's: replaced.
	stale := filepath.Join(dir, "stale.sock")
	ln, _ := net.Listen("unix", stale)
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	h2 := startHarness(t, `
services:
  web:
    command: [WORKER, -mode, serve, -ready]
    workers: 1
    listen: "unix:`+stale+`"
    readyWhen: ready
`)
	h2.waitEvent("ready on a stale socket's path", is(EventAllReady, "web"))
}

// TestRemovedServiceClosesItsSocket: a reload that removes a listening
// service closes its socket once its workers are gone, so clients are
// refused at once instead of hanging, and the port is free again.
func TestRemovedServiceClosesItsSocket(t *testing.T) {
	addr := testbin.FreeAddr(t)
	h := startHarness(t, `
services:
  web:
    command: [WORKER, -mode, serve, -ready]
    workers: 1
    listen: "`+addr+`"
    readyWhen: ready
  other:
    command: [WORKER]
    workers: 1
`)
	h.waitEvent("ready", is(EventAllReady, "web"))
	h.write(`
services:
  other:
    command: [WORKER]
    workers: 1
`)
	if err := h.reload(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Errorf("the removed service's socket %s still accepts", addr)
	}
	again, err := net.Listen("tcp", addr)
	if err != nil {
		t.Errorf("the port is not free: %v", err)
	} else {
		again.Close()
	}
}

// TestForeignNotificationIsIgnored: a process outside a worker's group
// that writes READY=1 to the worker's notify socket does not make it
// ready, and the log says who was ignored.
func TestForeignNotificationIsIgnored(t *testing.T) {
	h := startHarness(t, `
services:
  w:
    command: [WORKER, -mode, env]
    workers: 1
    readyWhen: ready
    readyTimeout: 1h
`)
	m := h.waitLine(`w.0 \| NOTIFY_SOCKET=(\S+)`)
	out, err := exec.Command(testbin.Worker(t), "-mode", "sendnotify", "-to", m[1], "-msg", "READY=1\nSTATUS=forged").CombinedOutput()
	if err != nil {
		t.Fatalf("sending: %v %s", err, out)
	}
	h.waitLine(`w.0: ignored a notification from pid \d+, which is not a process of w.0`)
	st := h.status("w")
	if len(st.Workers) != 1 || st.Workers[0].State != Starting || st.Workers[0].Status == "forged" {
		t.Errorf("a foreign notification counted: %+v", st.Workers)
	}
}

// waitLine waits for an output line matching re and returns its groups.
func (h *harness) waitLine(re string) []string {
	h.t.Helper()
	rx := regexp.MustCompile(re)
	var m []string
	h.waitFor("a line matching "+re, func() bool {
		m = rx.FindStringSubmatch(h.text())
		return m != nil
	})
	return m
}

// TestATakenPortSaysWhoHoldsIt: a listen address another process holds
// fails with the process named; once it is free, a start takes it.
func TestATakenPortSaysWhoHoldsIt(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := taken.Addr().String()
	h := startHarness(t, `
services:
  web:
    command: [WORKER, -mode, serve, -ready]
    workers: 1
    listen: "`+addr+`"
    readyWhen: ready
`)
	h.waitLine(`web is not ready: listen ` + regexp.QuoteMeta(addr) + `: address already in use \(held by pid ` + strconv.Itoa(os.Getpid()) + ` \(`)
	taken.Close()
	if err := h.m.Start(context.Background(), []string{"web"}); err != nil {
		t.Fatalf("start once the port is free: %v", err)
	}
}

// TestReadyFDReadsLinesAcrossWrites: on RECLUSTER_READY_FD a line counts
// once it ends, however the writes cut it; a line longer than a
// notification may be still counts once, as readiness.
func TestReadyFDReadsLinesAcrossWrites(t *testing.T) {
	long := strings.Repeat("x", 3*osproc.NotifyMax)
	h := startHarness(t, `
services:
  split:
    command: "printf STAT >&$RECLUSTER_READY_FD; sleep 0.1; printf 'US=warming up\nSTATUS=still' >&$RECLUSTER_READY_FD; sleep 0.1; printf ' warming\nREA' >&$RECLUSTER_READY_FD; sleep 0.1; printf 'DY=1\n' >&$RECLUSTER_READY_FD; exec sleep 1000"
    workers: 1
    readyWhen: ready
    readyTimeout: 1m
  long:
    command: "printf 'STATUS=`+long+`' >&$RECLUSTER_READY_FD; exec sleep 1000"
    workers: 1
    readyWhen: ready
    readyTimeout: 1m
`)
	h.waitEvent("split ready from READY=1 cut across writes", is(EventReady, "split"))
	// Notifications are handled in order: the status came first.
	if w := h.status("split").Workers; len(w) != 1 || w[0].Status != "still warming" {
		t.Errorf("split's status from lines cut across writes: %+v", w)
	}
	h.waitEvent("long ready from its over-long line", is(EventReady, "long"))
}
