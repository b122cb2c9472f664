package cli_test

import (
	"os/exec"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/recluster/recluster/internal/proc"
)

// Test2000WorkersOnFewThreads: 2,000 workers come up and stop while
// recluster holds fewer than 64 OS threads: it waits on pidfds in Go's
// poller, not with a blocked thread per worker.
func Test2000WorkersOnFewThreads(t *testing.T) {
	if testing.Short() {
		t.Skip("2,000 processes")
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep")
	}
	dir := stack(t, "services:\n  many:\n    command: ["+sleep+", \"100000\"]\n    workers: 2000\n    timeout: 5s\n")
	u := startUp(t, dir)
	var most atomic.Int64
	done := make(chan struct{})
	sampled := make(chan struct{})
	// Owned by the test; samples until done is closed.
	go func() {
		defer close(sampled)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if n := int64(proc.Threads(u.cmd.Process.Pid)); n > most.Load() {
				most.Store(n)
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	u.waitLine(`every service is ready`)
	if n := len(pidsOf(status(t, dir), "many")); n != 2000 {
		t.Fatalf("%d workers run, want 2000", n)
	}
	u.cmd.Process.Signal(syscall.SIGTERM)
	err = u.waitExit()
	close(done)
	<-sampled
	if err != nil {
		t.Errorf("up: %v", err)
	}
	if n := most.Load(); n == 0 || n >= 64 {
		t.Errorf("recluster ran %d OS threads at most for 2,000 workers, want fewer than 64", n)
	}
}
