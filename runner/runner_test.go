package runner

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/recluster/recluster/internal/osproc"
	"github.com/recluster/recluster/internal/proc"
	"github.com/recluster/recluster/internal/testbin"
)

func TestCrashRespawnsSameSlotWithNewPid(t *testing.T) {
	h := startHarness(t, `
services:
  api:
    command: [WORKER, -mode, crash, -after, 50ms, -code, "3"]
    workers: 2
    respawn: 10ms
`)
	spawnsOf0 := func(e Event) bool { return e.Kind == EventSpawned && e.Worker == 0 }
	h.waitFor("slot 0 to be spawned three times", func() bool { return h.count(spawnsOf0) >= 3 })
	pids := map[int]bool{}
	for _, e := range h.seen {
		if spawnsOf0(e) {
			if pids[e.Pid] {
				t.Errorf("pid %d reused by a respawn", e.Pid)
			}
			pids[e.Pid] = true
		}
	}
	h.waitFor("the crash lines of respawned workers", func() bool {
		return strings.Count(h.text(), "api.0 | worker 0 crashing") >= 2
	})
	out := h.text()
	if strings.Contains(out, "api.0 | worker 1") || strings.Contains(out, "api.1 | worker 0") {
		t.Errorf("a respawn changed WORKER_ID:\n%s", out)
	}
	if !regexp.MustCompile(`recluster +\| api\.0 \(pid \d+\) ended: exit code 3; respawning in 10ms`).MatchString(out) {
		t.Errorf("no respawn line:\n%s", out)
	}
	if !strings.Contains(out, "api.0 ! worker 0: crash with code 3") {
		t.Errorf("stderr line not marked:\n%s", out)
	}
}

func TestEnvironment(t *testing.T) {
	h := startHarness(t, `
env: {FROM_CONFIG: top}
services:
  api:
    command: [WORKER, -mode, env]
    workers: 2
    env: {FROM_CONFIG: service}
`)
	h.waitFor("both workers' env lines", func() bool {
		out := h.text()
		return strings.Contains(out, "api.0 | PID=") && strings.Contains(out, "api.1 | PID=")
	})
	out := h.text()
	for _, want := range []string{"api.0 | WORKER_ID=0", "api.1 | WORKER_ID=1", "api.0 | RECLUSTER_SERVICE=api", "api.0 | RECLUSTER_GENERATION=1", "api.1 | FROM_CONFIG=service", "api.0 | LISTEN_FDS=\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}

func TestListeningReadinessWaitsForTheSocket(t *testing.T) {
	h := startHarness(t, `
services:
  slow:
    command: [WORKER, -mode, listen, -after, 500ms]
    workers: 1
    readyWhen: listening
`)
	ready := h.waitEvent("ready", is(EventReady, "slow"))
	// The worker sleeps 500ms before it listens and then keeps listening:
	// when recluster says ready, the socket must be there. A readiness
	// reported early would find the worker still asleep.
	if !osproc.Listening(ready.Pid) {
		t.Errorf("ready, but pid %d holds no listening socket", ready.Pid)
	}
}

func TestAfterStartsOnceDependenciesAreReady(t *testing.T) {
	h := startHarness(t, `
services:
  api:
    command: [WORKER]
    workers: 2
    after: [db]
  db:
    command: [WORKER, -mode, listen, -after, 300ms]
    workers: 2
    readyWhen: listening
`)
	h.waitEvent("api ready", is(EventAllReady, "api"))
	dbReady, apiSpawn := -1, -1
	for i, e := range h.seen {
		if e.Kind == EventAllReady && e.Service == "db" && dbReady < 0 {
			dbReady = i
		}
		if e.Kind == EventSpawned && e.Service == "api" && apiSpawn < 0 {
			apiSpawn = i
		}
	}
	if dbReady < 0 || apiSpawn < dbReady {
		t.Fatalf("api spawned (event %d) before db was ready (event %d): %v", apiSpawn, dbReady, h.seen)
	}
	// Shutdown goes the other way: api's workers exit before db's.
	h.shutdown()
	for e := range drainEvents(h.events) {
		h.seen = append(h.seen, e)
	}
	lastAPIExit, firstDBExit := -1, -1
	for i, e := range h.seen {
		if e.Kind == EventExited && e.Service == "api" {
			lastAPIExit = i
		}
		if e.Kind == EventExited && e.Service == "db" && firstDBExit < 0 {
			firstDBExit = i
		}
	}
	if lastAPIExit < 0 || firstDBExit < lastAPIExit {
		t.Errorf("db stopped (event %d) before api was gone (event %d): %v", firstDBExit, lastAPIExit, h.seen)
	}
}

func drainEvents(ch chan Event) chan Event {
	out := make(chan Event, len(ch))
	for {
		select {
		case e := <-ch:
			out <- e
		default:
			close(out)
			return out
		}
	}
}

func TestStopKillsWhatIgnoresTheStopSignal(t *testing.T) {
	h := startHarness(t, `
services:
  stubborn:
    command: [WORKER, -mode, grandchild]
    workers: 1
    timeout: 300ms
`)
	h.waitFor("the grandchild's pid", func() bool { return strings.Contains(h.text(), "grandchild pid") })
	m := regexp.MustCompile(`grandchild pid (\d+)`).FindStringSubmatch(h.text())
	grandchild, _ := strconv.Atoi(m[1])
	leader := h.status("stubborn").Workers[0].Pid
	start := time.Now()
	if err := h.m.Stop(context.Background(), []string{"stubborn"}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("stopped after %s, before its timeout: SIGTERM should have been ignored", took)
	}
	for _, pid := range []int{leader, grandchild} {
		if proc.Alive(pid) {
			t.Errorf("pid %d still runs after stop", pid)
		}
	}
	exit := h.waitEvent("exit", is(EventExited, "stubborn"))
	if exit.Detail != "killed by SIGKILL" {
		t.Errorf("exit %q, want killed by SIGKILL", exit.Detail)
	}
	if st := h.status("stubborn"); len(st.Workers) != 0 || st.Running {
		t.Errorf("status after stop: %+v", st)
	}
}

func TestTimeoutZeroKillsAtOnce(t *testing.T) {
	h := startHarness(t, `
services:
  a:
    command: [WORKER]
    workers: 1
    timeout: 0
`)
	h.waitEvent("ready", is(EventAllReady, "a"))
	h.m.Stop(context.Background(), []string{"a"})
	if e := h.waitEvent("exit", is(EventExited, "a")); e.Detail != "killed by SIGKILL" {
		t.Errorf("exit %q", e.Detail)
	}
}

func TestCountStaysExactThroughManyCrashes(t *testing.T) {
	h := startHarness(t, `
services:
  flaky:
    command: [WORKER, -mode, crash, -after, 5ms]
    workers: 3
    respawn: 0
    backoff: 0
    startLimit: 0
    log: {respawns: false}
`)
	h.waitFor("60 crashes", func() bool {
		if st := h.status("flaky"); len(st.Workers) > 3 {
			t.Fatalf("more than 3 workers: %+v", st.Workers)
		}
		return h.count(is(EventExited, "flaky")) >= 60
	})
	ids := map[int]bool{}
	for _, e := range h.seen {
		if e.Kind == EventSpawned {
			ids[e.Worker] = true
		}
	}
	if len(ids) != 3 || !ids[0] || !ids[1] || !ids[2] {
		t.Errorf("ids used: %v", ids)
	}
	if err := h.m.Scale(context.Background(), map[string]int{"flaky": 1}); err != nil {
		t.Fatal(err)
	}
	h.shutdown()
	if left := testbin.WorkerProcesses(t); len(left) > 0 {
		t.Errorf("worker processes left after shutdown: %v", left)
	}
}

func TestScaleUpAndDown(t *testing.T) {
	h := startHarness(t, `
services:
  a:
    command: [WORKER]
    workers: 2
`)
	h.waitEvent("ready", is(EventAllReady, "a"))
	ctx := context.Background()
	if err := h.m.Scale(ctx, map[string]int{"a": 4}); err != nil {
		t.Fatal(err)
	}
	ids := func() []int {
		var out []int
		for _, w := range h.status("a").Workers {
			out = append(out, w.ID)
		}
		return out
	}
	if got := ids(); len(got) != 4 || got[3] != 3 {
		t.Fatalf("after scale to 4: ids %v", got)
	}
	old3 := h.status("a").Workers[3].Pid
	if err := h.m.Scale(ctx, map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	if got := ids(); len(got) != 1 || got[0] != 0 {
		t.Fatalf("after scale to 1: ids %v", got)
	}
	if proc.Alive(old3) {
		t.Errorf("a.3 (pid %d) still runs", old3)
	}
	if err := h.m.Scale(ctx, map[string]int{"a": 0}); err == nil {
		t.Errorf("scale to 0 accepted")
	}
	if err := h.m.Scale(ctx, map[string]int{"nope": 2}); err == nil || !strings.Contains(err.Error(), "unknown service") {
		t.Errorf("unknown service: %v", err)
	}
}

// TestAScaleOutlastsAReload: a reload of the same file keeps a live
// scale (and a second one too); a file whose own count changed wins, as
// does a scale after that.
func TestAScaleOutlastsAReload(t *testing.T) {
	const stack = `
services:
  a:
    command: [WORKER]
    workers: N
    minReady: 0s
`
	h := startHarness(t, strings.Replace(stack, "N", "2", 1))
	h.waitEvent("ready", is(EventAllReady, "a"))
	ctx := context.Background()
	if err := h.m.Scale(ctx, map[string]int{"a": 3}); err != nil {
		t.Fatal(err)
	}
	size := func(want int, after string) {
		t.Helper()
		st := h.status("a")
		if st.Size != want || len(st.Workers) != want {
			t.Fatalf("after %s: size %d, %d workers; want %d", after, st.Size, len(st.Workers), want)
		}
	}
	for i := 0; i < 2; i++ {
		if err := h.reload(ctx, nil); err != nil {
			t.Fatal(err)
		}
		size(3, "a scale to 3 and a reload of the same file")
	}
	h.write(strings.Replace(stack, "N", "4", 1))
	if err := h.reload(ctx, nil); err != nil {
		t.Fatal(err)
	}
	size(4, "a reload of a file that says workers: 4")
	if err := h.m.Scale(ctx, map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	if err := h.reload(ctx, nil); err != nil {
		t.Fatal(err)
	}
	size(1, "a scale to 1 and a reload")
}

func TestStartRestartStop(t *testing.T) {
	h := startHarness(t, `
services:
  a:
    command: [WORKER]
    workers: 2
  b:
    command: [WORKER]
    workers: 1
`, "b")
	h.waitEvent("b ready", is(EventAllReady, "b"))
	if st := h.status("a"); st.Running || len(st.Workers) != 0 {
		t.Fatalf("a runs though only b was asked for: %+v", st)
	}
	ctx := context.Background()
	if err := h.m.Start(ctx, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	before := h.status("a").Workers
	if err := h.m.Restart(ctx, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	after := h.status("a").Workers
	if len(after) != 2 || after[0].Pid == before[0].Pid || after[0].Generation <= before[0].Generation {
		t.Errorf("restart: before %+v after %+v", before, after)
	}
	if proc.Alive(before[0].Pid) {
		t.Errorf("old pid %d alive after restart", before[0].Pid)
	}
	if err := h.m.Stop(ctx, []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	for _, pid := range append([]int{after[0].Pid, after[1].Pid}, h.pidsOf("b")...) {
		if proc.Alive(pid) {
			t.Errorf("pid %d alive after stop", pid)
		}
	}
}

func (h *harness) pidsOf(service string) []int {
	var out []int
	for _, e := range h.seen {
		if e.Kind == EventSpawned && e.Service == service {
			out = append(out, e.Pid)
		}
	}
	return out
}

func TestProgramNotFoundIsReportedAsSuch(t *testing.T) {
	h := startHarness(t, `
services:
  ghost:
    command: no-such-program-anywhere --flag
    workers: 1
    respawn: 1h
`)
	e := h.waitEvent("exit", is(EventExited, "ghost"))
	if !strings.Contains(e.Detail, "no-such-program-anywhere") || !strings.Contains(e.Detail, "not found") {
		t.Errorf("exit detail %q", e.Detail)
	}
}

func TestProgramNotFoundBehindTheShim(t *testing.T) {
	h := startHarness(t, `
services:
  ghost:
    command: no-such-program-anywhere
    workers: 1
    listen: 127.0.0.1:0
    readyWhen: ready
    respawn: 1h
`)
	e := h.waitEvent("exit", is(EventExited, "ghost"))
	if !strings.Contains(e.Detail, "no-such-program-anywhere") || !strings.Contains(e.Detail, "not found") {
		t.Errorf("exit detail %q", e.Detail)
	}
}

// A worker that never gets ready is stopped at readyTimeout and, as any
// failed worker, respawned in its slot.
func TestNeverReadyWorkerIsRespawned(t *testing.T) {
	h := startHarness(t, `
services:
  stuck:
    command: [WORKER, -mode, noready]
    workers: 1
    readyWhen: ready
    readyTimeout: 300ms
    timeout: 200ms
    respawn: 10ms
`)
	first := h.waitEvent("spawn", is(EventSpawned, "stuck"))
	h.waitEvent("the stuck worker to end", func(e Event) bool { return e.Kind == EventExited && e.Pid == first.Pid })
	h.waitEvent("a respawn", func(e Event) bool { return e.Kind == EventSpawned && e.Service == "stuck" && e.Pid != first.Pid })
	if !strings.Contains(h.text(), "stuck.0 (generation 1, pid ") || !strings.Contains(h.text(), "was not ready within 300ms") {
		t.Errorf("no report of the timeout:\n%s", h.text())
	}
}
