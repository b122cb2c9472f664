package cli

import (
	"runtime"
	"sync"
)

// reservedThreads is how many OS threads up has the Go runtime make at
// its start: enough for what it runs at once (its goroutines in system
// calls, the spawning thread, the garbage collector's workers).
const reservedThreads = 24

// reserveThreads has the Go runtime start n OS threads now and keep them
// idle for later. Under a per-user process limit (RLIMIT_NPROC counts
// threads), the workers that cannot be forked fail and are retried, but a
// thread the runtime cannot create when it needs one aborts recluster:
// with threads in reserve, it reuses them instead. Each goroutine locks
// itself to a thread of its own until all are running, then unlocks and
// ends, which leaves its thread idle, not gone.
func reserveThreads(n int) {
	var running sync.WaitGroup
	release := make(chan struct{})
	var done sync.WaitGroup
	running.Add(n)
	done.Add(n)
	for i := 0; i < n; i++ {
		// Owned by reserveThreads; ends once release is closed.
		go func() {
			defer done.Done()
			runtime.LockOSThread()
			running.Done()
			<-release
			runtime.UnlockOSThread()
		}()
	}
	running.Wait()
	close(release)
	done.Wait()
}
