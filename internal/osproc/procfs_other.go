//go:build !linux

package osproc

import (
	"os"
	"sync"
	"syscall"
)

// Outside Linux, a group counts as alive while the kernel accepts a signal
// for it; zombies cannot be told apart.
func groupAlive(pgid int) bool { return syscall.Kill(-pgid, 0) != syscall.ESRCH }

// Outside Linux there is no cheap way to read a process's start time or
// real uid: a leftover group is ended only while its leader lives, and the
// leader is trusted by its pid alone (start time 1, uid our own).
func processStart(pid int) (uint64, bool) { return 1, syscall.Kill(pid, 0) == nil }

func realUID(pid int) (int, bool) { return os.Getuid(), syscall.Kill(pid, 0) == nil }

func bootID() string { return "unknown" }

// listenWatcher: only Linux shows which sockets a process listens on;
// `recluster check` refuses readyWhen: listening elsewhere.
type listenWatcher struct{ running sync.WaitGroup }

type listenWait struct {
	cancel chan struct{}
	once   sync.Once
}

func (w *listenWait) await(func(string)) (string, bool) { <-w.cancel; return "", false }

func listenNotice(string, int) string { return "" }

func (lw *listenWatcher) add(pgid int, inherited []*os.File, port int) *listenWait {
	return &listenWait{cancel: make(chan struct{})}
}

func (lw *listenWatcher) remove(w *listenWait) { w.once.Do(func() { close(w.cancel) }) }

func (lw *listenWatcher) wait() {}

func PortHolder(string) string { return "" }

// markedProcesses needs /proc: elsewhere it finds none.
func markedProcesses(string) []int { return nil }

// TaskRoom needs /proc: elsewhere no room is known.
func TaskRoom(int) (int, bool) { return 0, false }

// Listening needs /proc: elsewhere no listener is seen.
func Listening(int) bool { return false }
