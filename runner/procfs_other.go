//go:build !linux

package runner

import (
	"os"
	"sync"
	"syscall"
)

// Outside Linux, a group counts as alive while the kernel accepts a signal
// for it; zombies cannot be told apart.
func groupAlive(pgid int) bool { return syscall.Kill(-pgid, 0) != syscall.ESRCH }

func processStart(pid int) (uint64, bool) { return 0, syscall.Kill(pid, 0) == nil }

// listenWatcher: only Linux shows which sockets a process listens on;
// `recluster check` refuses readyWhen: listening elsewhere.
type listenWatcher struct{ running sync.WaitGroup }

type listenWait struct {
	cancel chan struct{}
	once   sync.Once
}

func (w *listenWait) await() bool { <-w.cancel; return false }

func (lw *listenWatcher) add(pgid int, inherited []*os.File) *listenWait {
	return &listenWait{cancel: make(chan struct{})}
}

func (lw *listenWatcher) remove(w *listenWait) { w.once.Do(func() { close(w.cancel) }) }

func (lw *listenWatcher) wait() {}
