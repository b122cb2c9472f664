package runner

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/recluster/recluster/internal/proc"
)

// healthStack is the naive app behind the proxy, sick while SICK_DIR
// holds "all" or its pid, with the probes given.
func healthStack(sickDir, workers, probes string) string {
	return `
services:
  web:
    command: [WORKER, -mode, naive, -after, 100ms]
    workers: ` + workers + `
    env: {SICK_DIR: "` + sickDir + `"}
    proxy: {address: "127.0.0.1:0", protocol: http}
    timeout: 5s
    minReady: 0s
` + probes
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestReadinessProbesDecideReadiness: a worker is ready only once its
// readiness probe passes, whichever kind; until then status says what the
// probe last found.
func TestReadinessProbesDecideReadiness(t *testing.T) {
	for _, c := range []struct{ name, probe, passed string }{
		{"http", `{http: /healthz, every: 50ms}`, `GET http://127.0.0.1:\d+/healthz: 200 OK`},
		{"tcp", `{tcp: true, every: 50ms}`, `connect 127.0.0.1:\d+`},
		{"exec", `{exec: "test ! -e $SICK_DIR/all", every: 50ms}`, `test ! -e \$SICK_DIR/all: exit code 0`},
		{"output", `{output: "^naive listening on"}`, `output "naive listening on .*"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			sick := t.TempDir()
			touch(t, filepath.Join(sick, "all"))
			h := startHarness(t, healthStack(sick, "1", "    readyWhen: "+c.probe+"\n"))
			if c.name == "http" || c.name == "exec" {
				// Sick at first: the probe fails, and the worker waits.
				h.waitFor("a failed readiness probe", func() bool {
					st := h.status("web")
					return len(st.Workers) == 1 && st.Workers[0].Health != nil && !st.Workers[0].Health.OK
				})
				if w := h.status("web").Workers[0]; w.State != Starting || !w.Health.Ready {
					t.Fatalf("a worker whose readiness probe fails: %+v, %+v", w, w.Health)
				}
				os.Remove(filepath.Join(sick, "all"))
			}
			h.waitEvent("ready", is(EventAllReady, "web"))
			w := h.status("web").Workers[0]
			if w.Health == nil || !w.Health.OK || !w.Health.Ready || !matches(c.passed, w.Health.Detail) {
				t.Errorf("health after ready: %+v, want a pass matching %s", w.Health, c.passed)
			}
			resp, err := http.Get("http://" + h.proxyAddr("web") + "/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		})
	}
}

// TestASickWorkerIsReplacedWithZeroDowntime: a worker that fails its
// health check `failures` times in a row is replaced by one started
// beside it; only once that one is ready does the sick one leave, and a
// client that never retries sees no failure.
func TestASickWorkerIsReplacedWithZeroDowntime(t *testing.T) {
	sick := t.TempDir()
	h := startHarness(t, healthStack(sick, "2", "    health: {http: /healthz, every: 50ms, timeout: 1s, failures: 2}\n"))
	h.waitEvent("ready", is(EventAllReady, "web"))
	load := startLoad(h.proxyAddr("web"), 4)
	load.waitServed(t, 20)
	st := h.status("web")
	victim, healthy := st.Workers[0], st.Workers[1]
	touch(t, filepath.Join(sick, fmt.Sprint(victim.Pid)))
	h.waitLine(fmt.Sprintf(`web.0 \(pid %d\) failed its health check 2 times in a row \(GET http://127.0.0.1:\d+/healthz: 503 Service Unavailable\); starting its replacement beside it`, victim.Pid))
	h.waitLine(fmt.Sprintf(`web.0 \(pid \d+\) is ready in place of web.0 \(pid %d\), which failed its health check`, victim.Pid))
	h.waitFor("the sick worker gone", func() bool { return !proc.Alive(victim.Pid) })
	load.waitServed(t, 20)
	load.expectNoFailures(t, "across the replacement of a sick worker")
	st = h.status("web")
	if len(st.Workers) != 2 {
		t.Fatalf("after the replacement: %+v", st.Workers)
	}
	w := st.Workers[0]
	if w.Pid == victim.Pid || w.Replaced == nil || !strings.HasPrefix(w.Replaced.Reason, "failed its health check 2 times in a row") {
		t.Errorf("web.0 after its replacement: pid %d (was %d), replaced %+v", w.Pid, victim.Pid, w.Replaced)
	}
	if other := st.Workers[1]; other.Pid != healthy.Pid || other.Replaced != nil {
		t.Errorf("the healthy worker was touched: %+v (was pid %d)", other, healthy.Pid)
	}
}

// TestEverySickWorkerIsSaidAndReplacedWithinMaxSurge: when every worker
// is sick at once, the log says so loudly, and no more than maxSurge
// replacements run at a time; once healthy again the service serves on
// at its size.
func TestEverySickWorkerIsSaidAndReplacedWithinMaxSurge(t *testing.T) {
	sick := t.TempDir()
	h := startHarness(t, healthStack(sick, "3", "    maxSurge: 1\n    health: {http: /healthz, every: 50ms, timeout: 1s, failures: 1}\n"))
	h.waitEvent("ready", is(EventAllReady, "web"))
	touch(t, filepath.Join(sick, "all"))
	most := 0
	h.waitFor("the loud line", func() bool {
		most = max(most, len(h.status("web").Workers))
		return matches(`EVERY worker of web is sick \(failed its health check once .*\); replacing them 1 at a time \(maxSurge\)`, h.text())
	})
	h.waitLine(`is ready in place of web\.\d \(pid \d+\), which failed its health check`)
	most = max(most, len(h.status("web").Workers))
	os.Remove(filepath.Join(sick, "all"))
	h.waitFor("three healthy workers", func() bool {
		st := h.status("web")
		most = max(most, len(st.Workers))
		healthy := 0
		for _, w := range st.Workers {
			if w.State == Ready && w.Health != nil && w.Health.OK {
				healthy++
			}
		}
		return len(st.Workers) == 3 && healthy == 3
	})
	if most > 4 {
		t.Errorf("%d workers at once; workers 3 and maxSurge 1 allow 4", most)
	}
}

// TestMaxMemoryReplacesABloatedWorker: a worker whose process group
// outgrows maxMemory is replaced as a sick one is, and the log says its
// size.
func TestMaxMemoryReplacesABloatedWorker(t *testing.T) {
	old := memoryEvery
	memoryEvery = 50 * time.Millisecond
	t.Cleanup(func() { memoryEvery = old }) // after the harness's own cleanup has stopped it
	h := startHarness(t, healthStack(t.TempDir(), "1", "    maxMemory: 64MiB\n"))
	h.waitEvent("ready", is(EventAllReady, "web"))
	w := h.status("web").Workers[0]
	// Straight to the worker, not through the proxy: it may be replaced,
	// and killed, before it answers.
	go func() { // Owned by the test; ends with the request.
		if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/grow?mb=100", w.Port)); err == nil {
			resp.Body.Close()
		}
	}()
	h.waitLine(fmt.Sprintf(`web.0 \(pid %d\) uses \d+\.\dMiB, over maxMemory 64\.0MiB; starting its replacement beside it`, w.Pid))
	h.waitLine(fmt.Sprintf(`is ready in place of web.0 \(pid %d\), which uses`, w.Pid))
	h.waitFor("the bloated worker gone", func() bool { return !proc.Alive(w.Pid) })
	h.waitFor("the replacement's memory known", func() bool { return h.status("web").Workers[0].RSS > 0 })
	if now := h.status("web").Workers[0]; now.RSS > 64<<20 {
		t.Errorf("the replacement's memory: %d bytes", now.RSS)
	}
}

func matches(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }

// TestAReadinessProbeThatNeverPassesSaysWhy: a worker whose readiness
// probe never passes misses readyTimeout, and the error says what the
// probe last found.
func TestAReadinessProbeThatNeverPassesSaysWhy(t *testing.T) {
	sick := t.TempDir()
	touch(t, filepath.Join(sick, "all"))
	h := startHarness(t, healthStack(sick, "1", "    readyWhen: {http: /healthz, every: 50ms}\n    readyTimeout: 1s\n    respawn: 1h\n"))
	h.waitLine(`web\.0 \(generation 1, pid \d+\) was not ready within 1s; its readiness probe last said: GET http://127\.0\.0\.1:\d+/healthz: 503 Service Unavailable`)
}

// TestReplacementsThatFailAreBoundedByStartLimit: a sick worker whose
// replacements exit before they are ready is tried startLimit times in a
// row, said, and then left serving.
func TestReplacementsThatFailAreBoundedByStartLimit(t *testing.T) {
	sick := t.TempDir()
	h := startHarness(t, `
services:
  web:
    command: 'test -e `+sick+`/crash && exit 3; exec WORKER -mode naive'
    workers: 1
    env: {SICK_DIR: "`+sick+`"}
    proxy: {address: "127.0.0.1:0", protocol: http}
    minReady: 0s
    startLimit: 2
    health: {http: /healthz, every: 50ms, failures: 1}
`)
	h.waitEvent("ready", is(EventAllReady, "web"))
	pid := h.status("web").Workers[0].Pid
	touch(t, filepath.Join(sick, "crash"))
	touch(t, filepath.Join(sick, fmt.Sprint(pid)))
	h.waitLine(`web\.0: 2 replacements in a row ended before they were ready \(startLimit\); no more are tried`)
	failures := h.status("web").Workers[0].Health.Failures
	h.waitFor("five more failed probes", func() bool {
		st := h.status("web")
		return len(st.Workers) == 1 && st.Workers[0].Health != nil && st.Workers[0].Health.Failures >= failures+5
	})
	if n := strings.Count(h.text(), "starting its replacement beside it"); n != 2 {
		t.Errorf("%d replacements started, want 2 (startLimit)", n)
	}
	if w := h.status("web").Workers[0]; w.Pid != pid || w.State != Ready {
		t.Errorf("the sick worker: %+v; want pid %d serving on", w, pid)
	}
}
