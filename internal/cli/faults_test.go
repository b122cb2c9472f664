package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/recluster/recluster/internal/control"
	"github.com/recluster/recluster/internal/testbin"
)

func get(addr string) error {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/")
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// TestSIGKILLUnderLoadFreesThePort: recluster dies mid-load; its workers go
// with it, and the next up takes the same port and serves.
func TestSIGKILLUnderLoadFreesThePort(t *testing.T) {
	addr := testbin.FreeAddr(t)
	dir := stack(t, `
services:
  web:
    command: [WORKER, -mode, serve, -ready]
    workers: 4
    listen: "`+addr+`"
    readyWhen: ready
`)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	pids := pidsOf(status(t, dir), "web")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				get(addr)
			}
		}()
	}
	if err := get(addr); err != nil {
		t.Fatal(err)
	}
	u.cmd.Process.Kill()
	u.waitExit()
	for _, pid := range pids {
		waitGone(t, pid, 10*time.Second)
	}
	cancel()
	wg.Wait()
	u2 := startUp(t, dir)
	u2.waitLine(`every service is ready`)
	if err := get(addr); err != nil {
		t.Errorf("the next up does not serve on %s: %v", addr, err)
	}
}

func TestWorkerClosingStdoutLivesOn(t *testing.T) {
	dir := stack(t, `
services:
  quiet:
    command: [WORKER, -mode, closeout]
    workers: 1
`)
	u := startUp(t, dir)
	u.waitLine(`quiet\.0 +! stdout closed, still here`)
	st := status(t, dir)
	if w := st.Services[0].Workers; len(w) != 1 || w[0].State != "ready" || w[0].Restarts != 0 {
		t.Errorf("a worker that closed stdout was taken for dead: %+v", w)
	}
}

func TestAHugeLineNeitherKillsNorStalls(t *testing.T) {
	dir := stack(t, `
services:
  big:
    command: [WORKER, -mode, bigline, -size, "67108864"]
    workers: 1
`)
	cmd := exec.Command(testbin.Recluster(t), "up")
	cmd.Dir, cmd.Env = dir, testEnv(t)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	// Read up's output as it comes, counting the x's and watching for the
	// line after the big one.
	r := bufio.NewReaderSize(out, 1<<20)
	xs := 0
	done := make(chan error, 1)
	go func() {
		for {
			line, err := r.ReadSlice('\n')
			xs += bytes.Count(line, []byte("x"))
			if bytes.Contains(line, []byte("after the big line")) {
				done <- nil
				return
			}
			if err != nil && err != bufio.ErrBufferFull {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * deadline):
		t.Fatal("the line after a 64 MiB line never came")
	}
	if xs != 64<<20 {
		t.Errorf("%d bytes of the 64 MiB line arrived", xs)
	}
	if rss := rssKiB(t, cmd.Process.Pid); rss > 512<<10 {
		t.Errorf("recluster holds %d KiB after a 64 MiB line", rss)
	}
}

func rssKiB(t *testing.T, pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// TestPausedTerminalHoldsProducersBack: while nobody reads up's output,
// a flooding worker waits instead of recluster buffering without bound;
// once reading resumes, every line arrives.
func TestPausedTerminalHoldsProducersBack(t *testing.T) {
	dir := stack(t, `
services:
  flood:
    command: [WORKER, -mode, lines, -n, "300000", -size, "200", -after, 1h]
    workers: 1
`)
	cmd := exec.Command(testbin.Recluster(t), "up")
	cmd.Dir, cmd.Env = dir, testEnv(t)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		io.Copy(io.Discard, out)
		cmd.Wait()
	}()
	// Read until up says it is ready (a few flood lines may come first),
	// then nothing until the worker is blocked on its full pipe.
	sc := bufio.NewScanner(out)
	next := 0
	check := func(l string) {
		i := strings.Index(l, "| ")
		if i < 0 || strings.HasPrefix(l, "recluster") {
			return
		}
		var id, seq int
		if _, err := fmt.Sscanf(l[i+2:], "%d %d", &id, &seq); err != nil || seq != next {
			t.Fatalf("line %d: %.80q", next, l)
		}
		next++
	}
	for sc.Scan() && !strings.Contains(sc.Text(), "every service is ready") {
		check(sc.Text())
	}
	pids := pidsOf(status(t, dir), "flood")
	if len(pids) != 1 {
		t.Fatalf("flood workers: %v", pids)
	}
	waitBlocked(t, pids[0])
	if rss := rssKiB(t, cmd.Process.Pid); rss > 256<<10 {
		t.Errorf("recluster holds %d KiB while its output is paused", rss)
	}
	// Resume: every line comes, in order.
	for next < 300000 && sc.Scan() {
		check(sc.Text())
	}
	if next != 300000 {
		t.Errorf("%d of 300000 lines", next)
	}
}

// waitBlocked waits until one of pid's threads sleeps in a write to a full
// pipe. The kernel shows it (the wait channel) but sends no event for it,
// so this samples /proc, a millisecond apart, up to the deadline.
func waitBlocked(t *testing.T, pid int) {
	t.Helper()
	end := time.Now().Add(deadline)
	for time.Now().Before(end) {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/wchan", pid))
		for _, task := range tasks {
			if wchan, _ := os.ReadFile(task); strings.Contains(string(wchan), "pipe_write") {
				return
			}
		}
		syscall.Nanosleep(&syscall.Timespec{Nsec: int64(time.Millisecond)}, nil)
	}
	t.Fatalf("the worker never blocked on its output")
}

func TestStdoutClosedDoesNotStopUp(t *testing.T) {
	dir := stack(t, simpleStack)
	cmd := exec.Command(testbin.Recluster(t), "up")
	cmd.Dir, cmd.Env = dir, testEnv(t)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() && !strings.Contains(sc.Text(), "every service is ready") {
	}
	out.Close() // the terminal went away without a signal
	// up lives on: verbs work, new lines go to the ring.
	if r := verb(t, dir, "scale", "api=3"); r.code != 0 {
		t.Fatalf("scale after stdout closed: %d %s", r.code, r.err)
	}
	// The new worker is ready as it starts (readyWhen: started): its
	// first lines reach the ring a moment after scale returns.
	for end := time.Now().Add(deadline); ; {
		r := verb(t, dir, "logs", "-n", "50", "api")
		if r.code == 0 && strings.Contains(r.stdout, "WORKER_ID=2") {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("logs after stdout closed: %d %s %s", r.code, r.stdout, r.err)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("exit after stdout closed: %v", err)
	}
}

func TestReloadOfADeletedOrUnreadableConfigChangesNothing(t *testing.T) {
	dir := stack(t, simpleStack)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	before := pidsOf(status(t, dir), "api")
	cfg := filepath.Join(dir, "recluster.yml")
	data, _ := os.ReadFile(cfg)

	os.Chmod(cfg, 0)
	if os.Getuid() != 0 { // root reads anything
		if r := verb(t, dir, "reload"); r.code != 1 || !strings.Contains(r.err, "permission denied") {
			t.Errorf("reload of an unreadable config: %d %s", r.code, r.err)
		}
	}
	os.Chmod(cfg, 0o644)

	// The control socket is found from the file's path, so -f names it even
	// once it is gone; up reads it again and finds nothing.
	os.Remove(cfg)
	r := verb(t, dir, "reload", "-f", cfg)
	if r.code != 1 || !strings.Contains(r.err, "no such file") {
		t.Errorf("reload of a deleted config: %d %s", r.code, r.err)
	}
	os.WriteFile(cfg, data, 0o644)
	if after := pidsOf(status(t, dir), "api"); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("a refused reload changed workers: %v -> %v", before, after)
	}
	if r := verb(t, dir, "reload"); r.code != 0 {
		t.Errorf("reload once the file is back: %d %s", r.code, r.err)
	}
}

func TestDeletedControlSocketIsMadeAnew(t *testing.T) {
	dir := stack(t, simpleStack)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	paths, _ := control.PathsFor(filepath.Join(dir, "recluster.yml"), func(k string) string {
		if k == "XDG_RUNTIME_DIR" {
			return runtimeDir(t)
		}
		return os.Getenv(k)
	})
	if err := os.Remove(paths.Socket); err != nil {
		t.Fatal(err)
	}
	u.waitLine(`the control socket was removed; made it anew`)
	if st := status(t, dir); len(st.Services) != 2 {
		t.Errorf("status after the socket was made anew: %+v", st)
	}
}

func TestManyVerbsAtOnce(t *testing.T) {
	t.Parallel() // its own stack
	dir := stack(t, simpleStack)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	var wg sync.WaitGroup
	var mu sync.Mutex
	failures := map[string]int{}
	for c := 0; c < 20; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				var args []string
				switch (c + i) % 5 {
				case 0:
					args = []string{"reload", "api"}
				case 1:
					args = []string{"scale", fmt.Sprintf("api=%d", 1+(c+i)%3)}
				case 2:
					args = []string{"status", "--json"}
				case 3:
					args = []string{"logs", "-n", "5"}
				case 4:
					args = []string{"restart", "db"}
				}
				r := verb(t, dir, args...)
				if r.code != 0 && !strings.Contains(r.err, "superseded") {
					mu.Lock()
					failures[fmt.Sprintf("%v: %s", args, strings.TrimSpace(r.err))]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	for f, n := range failures {
		t.Errorf("%d× %s", n, f)
	}
	// Settle on a known count; then exactly that many workers run, all ready.
	if r := verb(t, dir, "scale", "api=2"); r.code != 0 {
		t.Fatal(r.err)
	}
	st := status(t, dir)
	for _, s := range st.Services {
		want := map[string]int{"api": 2, "db": 1}[s.Name]
		if len(s.Workers) != want {
			t.Errorf("%s: %d workers, want %d: %+v", s.Name, len(s.Workers), want, s.Workers)
		}
		for _, w := range s.Workers {
			if w.State != "ready" || w.Generation != s.Generation {
				t.Errorf("%s: %+v", s.Name, w)
			}
		}
	}
}
