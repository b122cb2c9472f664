package runner

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/recluster/recluster/internal/proc"
	"github.com/recluster/recluster/internal/testbin"

	"github.com/recluster/recluster/config"
	"github.com/recluster/recluster/internal/load"
)

// loadClient is the shared load client (internal/load) with the test's
// ways of waiting and finishing.
type loadClient struct{ *load.Client }

func startLoad(addr string, conns int) *loadClient { return startLoadWith(addr, conns, false) }

// startLoadWith is startLoad, with keep-alive connections when asked: a
// client that never retries a request on a connection the server closed.
func startLoadWith(addr string, conns int, keepAlive bool) *loadClient {
	return &loadClient{load.Start(addr, load.Options{Conns: conns, KeepAlive: keepAlive})}
}

// finish stops the load and returns the failures by kind.
func (l *loadClient) finish() (int64, map[string]int, []string) {
	r := l.Finish()
	return r.OK, r.Failures, r.Examples
}

// expectNoFailures stops the load and fails the test if any request
// failed during what; it returns how many were served and whether one
// failed.
func (l *loadClient) expectNoFailures(t *testing.T, what string) (served int64, failed bool) {
	t.Helper()
	ok, failures, examples := l.finish()
	if len(failures) == 0 {
		return ok, false
	}
	t.Errorf("%d requests failed %s (%d served): %v, e.g. %q", sum(failures), what, ok, failures, examples)
	return ok, true
}

// waitServed waits until n requests succeeded, so that a test knows the
// load is flowing before it acts.
func (l *loadClient) waitServed(t *testing.T, n int64) {
	t.Helper()
	if !l.WaitServed(n, deadline) {
		t.Fatalf("load client got no answers; failures %v", l.Snapshot().Failures)
	}
}

const servingStack = `
services:
  web:
    command: [WORKER, -mode, serve, -ready]
    workers: 4
    listen: 127.0.0.1:0
    readyWhen: ready
    timeout: 10s
    minReady: 0s # reloaded dozens of times; TestMinReady* hold the window
`

func (h *harness) addr(service string) string {
	h.t.Helper()
	st := h.status(service)
	if len(st.Listen) == 0 {
		h.t.Fatalf("%s has no socket", service)
	}
	return st.Listen[0]
}

func TestReloadUnderLoadLosesNothing(t *testing.T) {
	h := startHarness(t, servingStack)
	h.waitEvent("ready", is(EventAllReady, "web"))
	load := startLoad(h.addr("web"), 8)
	load.waitServed(t, 50)
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		if err := h.reload(ctx, []string{"web"}); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		load.waitServed(t, 10)
	}
	ok, _ := load.expectNoFailures(t, "across 20 reloads")
	st := h.status("web")
	if st.Generation != 21 || len(st.Workers) != 4 {
		t.Errorf("after 20 reloads: generation %d, workers %+v", st.Generation, st.Workers)
	}
	t.Logf("%d requests, none failed, across 20 reloads", ok)
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestStopThenStartLosesRequests is the control: the same client against
// workers that bind the port themselves, restarted stop-then-start as other
// tools do, sees failures. It proves the zero-loss test can see a loss.
func TestStopThenStartLosesRequests(t *testing.T) {
	addr := testbin.FreeAddr(t)
	h := startHarness(t, `
services:
  web:
    command: [WORKER, -mode, serve, -bind, "`+addr+`", -after, 200ms]
    workers: 1
    readyWhen: listening
`)
	h.waitEvent("ready", is(EventAllReady, "web"))
	load := startLoad(addr, 4)
	load.waitServed(t, 20)
	if err := h.m.Restart(context.Background(), []string{"web"}); err != nil {
		t.Fatal(err)
	}
	load.waitServed(t, 20)
	_, failures, _ := load.finish()
	if failures["refused"] == 0 {
		t.Errorf("stop-then-start with self-bound workers refused nothing: %v; the load client cannot see a loss", failures)
	}
}

func TestFailedReloadChangesNothing(t *testing.T) {
	h := startHarness(t, servingStack)
	h.waitEvent("ready", is(EventAllReady, "web"))
	before := h.status("web")
	load := startLoad(h.addr("web"), 4)
	load.waitServed(t, 20)
	ctx := context.Background()

	// A new version that exits before it is ready.
	h.write(strings.Replace(servingStack, "-mode, serve, -ready", "-mode, crash, -code, \"7\"", 1))
	err := h.reload(ctx, []string{"web"})
	var wf *WorkerFailedError
	if !errors.As(err, &wf) || wf.Exit == nil || wf.Exit.Code != 7 {
		t.Fatalf("reload of a crashing version: %v", err)
	}
	if !strings.Contains(err.Error(), "exited before it was ready: exit code 7") || !strings.Contains(err.Error(), "crash with code 7") {
		t.Errorf("the report lacks the exit or the last lines: %v", err)
	}

	// A new version that never says it is ready.
	h.write(strings.Replace(strings.Replace(servingStack, "-mode, serve, -ready", "-mode, noready", 1), "timeout: 10s", "timeout: 10s\n    readyTimeout: 500ms", 1))
	err = h.reload(ctx, []string{"web"})
	if !errors.As(err, &wf) || wf.Timeout != 500*time.Millisecond {
		t.Fatalf("reload of a never-ready version: %v", err)
	}

	// An invalid file.
	h.write("services: {web: {command: x, workers: 0}}\n")
	if err := h.reload(ctx, nil); err == nil || !strings.Contains(err.Error(), "workers") {
		t.Fatalf("reload of an invalid file: %v", err)
	}

	after := h.status("web")
	if after.Generation != before.Generation || !samePids(before, after) {
		t.Errorf("a failed reload changed the service:\nbefore %+v\nafter  %+v", before, after)
	}
	load.expectNoFailures(t, "while reloads failed")
}

func samePids(a, b ServiceStatus) bool {
	if len(a.Workers) != len(b.Workers) {
		return false
	}
	for i := range a.Workers {
		if a.Workers[i].Pid != b.Workers[i].Pid {
			return false
		}
	}
	return true
}

func TestConcurrentReloadsConverge(t *testing.T) {
	h := startHarness(t, servingStack)
	h.waitEvent("ready", is(EventAllReady, "web"))
	load := startLoad(h.addr("web"), 4)
	load.waitServed(t, 20)
	errs := make(chan error, 5)
	for i := 0; i < 5; i++ {
		go func() { errs <- h.reload(context.Background(), []string{"web"}) }()
	}
	succeeded := 0
	for i := 0; i < 5; i++ {
		switch err := <-errs; {
		case err == nil:
			succeeded++
		case errors.Is(err, ErrSuperseded):
		default:
			t.Errorf("reload: %v", err)
		}
	}
	if succeeded == 0 {
		t.Errorf("no reload succeeded")
	}
	st := h.status("web")
	if len(st.Workers) != 4 {
		t.Errorf("converged on %d workers: %+v", len(st.Workers), st.Workers)
	}
	for _, w := range st.Workers {
		if w.Generation != st.Generation || w.State != Ready {
			t.Errorf("worker %+v is not of serving generation %d", w, st.Generation)
		}
	}
	if _, failed := load.expectNoFailures(t, "while reloads raced"); failed {
		t.Log(h.text())
	}
	if left := len(testbin.WorkerProcesses(t)); left != 4 {
		t.Errorf("%d worker processes run, want 4", left)
	}
}

func TestSlowRequestIsAnsweredAcrossAReload(t *testing.T) {
	h := startHarness(t, servingStack)
	h.waitEvent("ready", is(EventAllReady, "web"))
	addr := h.addr("web")
	type answer struct {
		body string
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/?ms=1500")
		if err != nil {
			got <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- answer{string(b), err}
	}()
	// The worker says when the request is in; then the reload retires it.
	h.waitFor("the slow request to arrive", func() bool { return strings.Contains(h.text(), "request in, answering in 1500 ms") })
	if err := h.reload(context.Background(), []string{"web"}); err != nil {
		t.Fatal(err)
	}
	a := <-got
	if a.err != nil || !strings.HasPrefix(a.body, "gen=1 ") {
		t.Fatalf("slow request, asked of generation 1: %q %v", a.body, a.err)
	}
}

func TestStoppingAsksForAReplacement(t *testing.T) {
	once := filepath.Join(t.TempDir(), "asked")
	h := startHarness(t, `
services:
  w:
    command: [WORKER, -mode, stopping, -after, 100ms, -once, "`+once+`"]
    workers: 1
    readyWhen: ready
`)
	first := h.waitEvent("first ready", is(EventReady, "w"))
	exit := h.waitEvent("the asking worker to stop", func(e Event) bool { return e.Kind == EventExited && e.Pid == first.Pid })
	if exit.Detail != "exit code 0" {
		t.Errorf("the asking worker ended with %s", exit.Detail)
	}
	st := h.status("w")
	if len(st.Workers) != 1 || st.Workers[0].Pid == first.Pid || st.Workers[0].State != Ready || st.Workers[0].ID != 0 {
		t.Errorf("after STOPPING=1: %+v", st.Workers)
	}
	if !strings.Contains(h.text(), "w.0 asked to be replaced (STOPPING=1)") {
		t.Errorf("no log line:\n%s", h.text())
	}
}

func TestReloadsLeakNoFdsOrGoroutines(t *testing.T) {
	h := startHarness(t, servingStack)
	h.waitEvent("ready", is(EventAllReady, "web"))
	ctx := context.Background()
	if err := h.reload(ctx, nil); err != nil { // warm up the pools
		t.Fatal(err)
	}
	fds, goroutines := testbin.CountFDs(0), runtime.NumGoroutine()
	for i := 0; i < 30; i++ {
		if err := h.reload(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	if after := testbin.CountFDs(0); after > fds+2 {
		t.Errorf("fds grew from %d to %d over 30 reloads", fds, after)
	}
	if after := runtime.NumGoroutine(); after > goroutines+5 {
		t.Errorf("goroutines grew from %d to %d over 30 reloads", goroutines, after)
	}
}

func TestReloadAddsAndRemovesServices(t *testing.T) {
	h := startHarness(t, `
services:
  a:
    command: [WORKER]
    workers: 1
  b:
    command: [WORKER]
    workers: 1
`)
	h.waitEvent("b ready", is(EventAllReady, "b"))
	bPid := h.status("b").Workers[0].Pid
	h.write(`
services:
  a:
    command: [WORKER]
    workers: 2
  c:
    command: [WORKER]
    workers: 1
    after: [a]
`)
	if err := h.reload(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	sts, _ := h.m.Status(context.Background())
	var names []string
	for _, s := range sts {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "a,c" {
		t.Errorf("services after reload: %v", names)
	}
	if len(h.status("a").Workers) != 2 || len(h.status("c").Workers) != 1 {
		t.Errorf("a %+v c %+v", h.status("a"), h.status("c"))
	}
	if proc.Alive(bPid) {
		t.Errorf("removed service b still runs")
	}
}

func TestChangedListenMovesTheSocket(t *testing.T) {
	dir := t.TempDir()
	h := startHarness(t, `
services:
  web:
    command: [WORKER, -mode, serve, -ready]
    workers: 2
    listen: "unix:`+dir+`/one.sock"
    readyWhen: ready
`)
	h.waitEvent("ready", is(EventAllReady, "web"))
	h.write(`
services:
  web:
    command: [WORKER, -mode, serve, -ready]
    workers: 2
    listen: "unix:` + dir + `/two.sock"
    readyWhen: ready
`)
	if err := h.reload(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir + "/one.sock"); !os.IsNotExist(err) {
		t.Errorf("the old socket file is still there: %v", err)
	}
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return net.Dial("unix", dir+"/two.sock")
	}}}
	resp, err := client.Get("http://web/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(body), "gen=2") {
		t.Errorf("answer on the new socket: %q", body)
	}
}

// TestStoppedNewWorkerIsCleanedUp: a new worker SIGSTOPped during a reload
// never gets ready; the reload fails on readyTimeout, the stopped process
// (which cannot handle SIGTERM) is killed, and the old generation serves on.
func TestStoppedNewWorkerIsCleanedUp(t *testing.T) {
	h := startHarness(t, servingStack)
	h.waitEvent("ready", is(EventAllReady, "web"))
	before := h.status("web")
	h.write(strings.Replace(strings.Replace(servingStack, "-mode, serve, -ready", "-mode, noready", 1),
		"timeout: 10s", "timeout: 500ms\n    readyTimeout: 1s", 1))
	result := make(chan error, 1)
	go func() { result <- h.reload(context.Background(), []string{"web"}) }()
	spawned := h.waitEvent("a new worker", func(e Event) bool { return e.Kind == EventSpawned && e.Generation == 2 })
	syscall.Kill(spawned.Pid, syscall.SIGSTOP)
	var wf *WorkerFailedError
	if err := <-result; !errors.As(err, &wf) {
		t.Fatalf("reload with a stopped new worker: %v", err)
	}
	if proc.Alive(spawned.Pid) {
		t.Errorf("the stopped worker %d is still there", spawned.Pid)
	}
	if after := h.status("web"); !samePids(before, after) || after.Generation != 1 {
		t.Errorf("old generation changed: %+v", after)
	}
}

// minReadyStack serves on a socket of its own; once "broken" exists, a
// new worker says it is ready (it has started) and exits 300ms later, as
// gunicorn's master does when its workers cannot import the app.
const minReadyStack = `
services:
  web:
    command: [sh, -c, 'if [ -e broken ]; then exec WORKER -mode crash -code 3 -after 300ms; fi; exec WORKER -mode serve']
    workers: 2
    listen: 127.0.0.1:0
    readyWhen: started
    timeout: 10s
`

// TestMinReadyHoldsAVersionThatDiesSoonAfterReady: with the default
// minReady, a new generation whose workers exit soon after they are ready
// fails its reload and the old one serves on, losing nothing; without
// it, the reload is promoted and the service loses its workers.
func TestMinReadyHoldsAVersionThatDiesSoonAfterReady(t *testing.T) {
	h := startHarness(t, minReadyStack)
	h.waitEvent("ready", is(EventAllReady, "web"))
	before := h.status("web")
	load := startLoad(h.addr("web"), 4)
	load.waitServed(t, 20)
	os.WriteFile(filepath.Join(h.dir, "broken"), nil, 0o644)

	err := h.reload(context.Background(), []string{"web"})
	var wf *WorkerFailedError
	if !errors.As(err, &wf) || wf.MinReady != config.DefaultMinReady || !strings.Contains(err.Error(), "exited within minReady (2s) of being ready: exit code 3") {
		t.Fatalf("reload of a version that dies soon after it is ready: %v", err)
	}
	load.waitServed(t, 20)
	after := h.status("web")
	if after.Generation != before.Generation || len(after.Workers) != 2 || after.Workers[0].Pid != before.Workers[0].Pid {
		t.Errorf("the old generation does not serve on: before %+v, after %+v", before.Workers, after.Workers)
	}
	load.expectNoFailures(t, "through a reload held by minReady")

	// The same reload with minReady 0 is promoted: what the window is for.
	h.write(strings.Replace(minReadyStack, "timeout: 10s", "timeout: 10s\n    minReady: 0s", 1))
	if err := h.reload(context.Background(), []string{"web"}); err != nil {
		t.Fatalf("reload with minReady 0: %v", err)
	}
	h.waitEvent("a promoted worker's crash", is(EventCrashed, "web"))
}
