package cli

import (
	"runtime"
	"runtime/debug"
	"sync"

	"github.com/recluster/recluster/config"
)

// reservedThreads is how many OS threads up has the Go runtime make at
// its start: enough for what it runs at once, that is a thread for each
// processor it may run goroutines on (capped: a supervisor never keeps
// many busy), and a few for goroutines in system calls (the spawning
// thread, a write to a stalled terminal or log file, sysmon). The fixed
// 24 of before were more than a 2-core machine uses, each holding its
// stacks for nothing.
func reservedThreads() int {
	return min(runtime.GOMAXPROCS(0), 8) + 8
}

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

// proxyGCPercent is the garbage collector's target for an `up` that runs
// an http proxy. Its heap is small and turned over fast (a request's
// headers and buffers), so at Go's default of 100 it collects all the
// time: at saturation a fifth of its CPU went to the collector and the
// proxy served 4,200–4,500 requests a second; at 400, 5,400–5,600, for
// about 13 MiB more memory under that load (BENCHMARKS.md). The tcp proxy
// allocates little and gains nothing.
const proxyGCPercent = 400

// tuneGC sets the collector's target from what cfg runs: proxyGCPercent
// while a service has an http proxy, Go's default otherwise. `up` calls
// it at its start and for each config it reads to reload, so a proxy
// added or removed later counts too. GOGC, when set, wins.
func tuneGC(io IO, cfg *config.Config) {
	if io.Getenv("GOGC") != "" {
		return
	}
	percent := defaultGCPercent
	for _, s := range cfg.Services {
		if s.Proxy != nil && s.Proxy.Protocol == config.ProtocolHTTP {
			percent = proxyGCPercent
		}
	}
	debug.SetGCPercent(percent)
}

// defaultGCPercent is Go's own target, which GOGC would otherwise set.
const defaultGCPercent = 100

// freeStartupGarbage returns to the OS what starting `up` left behind (the
// config's parse, the first reads), when that is worth a collection: the
// heap is below the collector's 4 MB floor, so nothing else would collect
// it for as long as the stack idles.
func freeStartupGarbage(cfg *config.Config) {
	if worthCollecting(cfg) {
		debug.FreeOSMemory()
	}
}

// collectFromWorkers is how many workers a stack must run for a forced
// first collection, once every service is ready, to pay. That collection
// costs memory that stays (its mark workers' stacks, mark bits, work
// buffers, the pages of the tables it reads), and garbage goes back only
// as whole free pages. Measured here with the static build: 10 services
// of 1 worker had allocated 0.33 MB when ready and idled at 9.2 MiB after
// the collection, 8.8 MiB without; 100 services, 2.5 MB, and 11.7 MiB
// after against 13.1 MiB without. It counts workers rather than asking
// the runtime what was allocated: runtime.ReadMemStats stops the world,
// and that alone left about 0.5 MiB more resident at 10 services.
const collectFromWorkers = 32

// worthCollecting says whether starting cfg leaves enough garbage to
// collect: about 25 KB a worker.
func worthCollecting(cfg *config.Config) bool {
	workers := 0
	for _, s := range cfg.Services {
		workers += s.Workers
	}
	return workers >= collectFromWorkers
}
