package cli_test

import (
	"debug/elf"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/recluster/recluster/internal/testbin"
)

// TestUpDetachedReturnsOnceReady: `up -d` returns only once every worker
// is ready, says where things are, and the instance is reached like any
// `up`: status, logs, a second `up -d` refused, down leaves nothing.
func TestUpDetachedReturnsOnceReady(t *testing.T) {
	dir := stack(t, `
logFile: logs/stack.log
services:
  web:
    command: [WORKER, -mode, serve, -ready, -after, 300ms]
    workers: 2
    readyWhen: ready
    listen: 127.0.0.1:0
  chatty:
    command: [WORKER, -mode, lines, -n, "3", -after, 1h]
    workers: 1
`)
	r := verb(t, dir, "up", "-d")
	if r.code != 0 {
		t.Fatalf("up -d: %d\n%s%s", r.code, r.stdout, r.err)
	}
	m := regexp.MustCompile(`in the background \(pid (\d+)\): 2 services, 3 workers ready`).FindStringSubmatch(r.stdout)
	if m == nil || !strings.Contains(r.stdout, "web") || !strings.Contains(r.stdout, filepath.Join(dir, "logs", "stack.log")) {
		t.Fatalf("up -d said:\n%s", r.stdout)
	}
	pid, _ := strconv.Atoi(m[1])
	var workers []int
	for _, s := range status(t, dir).Services {
		for _, w := range s.Workers {
			if s.Name == "web" && w.State != "ready" {
				t.Errorf("up -d returned before web.%d was ready: %s", w.ID, w.State)
			}
			workers = append(workers, w.Pid)
		}
	}
	if len(workers) != 3 {
		t.Errorf("workers: %v", workers)
	}

	// The log stream is in the file, and logs reads it as from any up.
	logged := waitFile(t, filepath.Join(dir, "logs", "stack.log"), "every service is ready")
	if !regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d\.\d{3} recluster +\| every service is ready$`).MatchString(logged) {
		t.Errorf("the log file has no timestamped lines:\n%s", logged)
	}
	if r := verb(t, dir, "logs", "-n", "50"); r.code != 0 || !strings.Contains(r.stdout, "chatty.0") {
		t.Errorf("logs: %d %q %s", r.code, r.stdout, r.err)
	}

	if r := verb(t, dir, "up", "-d"); r.code == 0 || !strings.Contains(r.err, "already running") {
		t.Errorf("a second up -d: %d %q", r.code, r.err)
	}
	if r := verb(t, dir, "down"); r.code != 0 {
		t.Fatalf("down: %d %s", r.code, r.err)
	}
	for _, p := range append(workers, pid) {
		waitGone(t, p, deadline)
	}
}

// TestUpDetachedThatFailsLeavesNothing: a worker that crashes before it is
// ready: up -d exits 1 with its reason and last lines, and nothing runs.
func TestUpDetachedThatFailsLeavesNothing(t *testing.T) {
	dir := stack(t, `
services:
  fine:
    command: [WORKER]
    workers: 1
  broken:
    command: [WORKER, -mode, crash, -after, 200ms, -code, "3"]
    workers: 1
    readyWhen: ready
`)
	r := verb(t, dir, "up", "-d")
	if r.code != 1 || !strings.Contains(r.err, "broken.0 (pid") || !strings.Contains(r.err, "exit code 3") ||
		!strings.Contains(r.err, "crash with code 3") || !strings.Contains(r.err, "nothing is left running") {
		t.Fatalf("up -d: %d\n%s%s", r.code, r.stdout, r.err)
	}
	pid, _ := strconv.Atoi(regexp.MustCompile(`\(pid (\d+)\)`).FindStringSubmatch(r.err)[1])
	waitGone(t, pid, deadline)
	if r := verb(t, dir, "status"); r.code == 0 {
		t.Errorf("status answers after a failed up -d:\n%s", r.stdout)
	}
}

// TestTheBackgroundLogRotates at logSize, keeping the newest lines.
func TestTheBackgroundLogRotates(t *testing.T) {
	dir := stack(t, `
logSize: 8KiB
services:
  chatty:
    command: [WORKER, -mode, lines, -n, "400", -size, "100", -after, 1h]
    workers: 1
`)
	r := verb(t, dir, "up", "-d")
	if r.code != 0 {
		t.Fatalf("up -d: %d %s", r.code, r.err)
	}
	t.Cleanup(func() { verb(t, dir, "down") })
	path := regexp.MustCompile(`log: (\S+);`).FindStringSubmatch(r.stdout)[1]
	waitFile(t, path, " 000000399 ")
	cur, _ := os.ReadFile(path)
	old, err := os.ReadFile(path + ".1")
	if err != nil || len(cur) > 8<<10 || len(old) > 8<<10 {
		t.Errorf("after 40 KB of lines: %d bytes, %d in %s.1 (%v); want each at most 8 KiB", len(cur), len(old), path, err)
	}
}

// waitFile waits for path to hold want, and returns what it holds: it
// looks again at every change inotify reports in the file's folder.
func waitFile(t *testing.T, path, want string) string {
	t.Helper()
	w, err := fsnotify.NewWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Add(filepath.Dir(path)); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(deadline)
	for {
		data, _ := os.ReadFile(path)
		if strings.Contains(string(data), want) {
			return string(data)
		}
		select {
		case <-w.Events:
		case err := <-w.Errors:
			t.Fatalf("watching %s: %v", path, err)
		case <-timeout:
			t.Fatalf("%s never held %q:\n%s", path, want, data)
		}
	}
}

// TestTheStaticBuildRunsAStack: README.md's install line builds recluster
// without cgo; that binary is static and runs a stack, sockets, readiness
// and a reload included.
func TestTheStaticBuildRunsAStack(t *testing.T) {
	bin := testbin.StaticRecluster(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s asks for a dynamic loader", bin)
		}
	}
	f.Close()
	dir := stack(t, `
services:
  web:
    command: [WORKER, -mode, serve, -ready]
    workers: 2
    readyWhen: ready
    listen: 127.0.0.1:0
`)
	static := func(args ...string) result { return runBinary(t, bin, dir, testEnv(t), args...) }
	if r := static("up", "-d"); r.code != 0 || !strings.Contains(r.stdout, "2 workers ready") {
		t.Fatalf("up -d: %d\n%s%s", r.code, r.stdout, r.err)
	}
	defer static("down")
	if r := static("reload", "web"); r.code != 0 {
		t.Fatalf("reload: %d\n%s%s", r.code, r.stdout, r.err)
	}
	if st := status(t, dir); len(st.Services) != 1 || st.Services[0].Generation != 2 || len(st.Services[0].Workers) != 2 {
		t.Errorf("after a reload: %+v", st)
	}
	if r := static("down"); r.code != 0 {
		t.Errorf("down: %d\n%s%s", r.code, r.stdout, r.err)
	}
}
