package cli_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/recluster/recluster/internal/testbin"
)

// TestReloadOfASelfMergingFileKeepsServing: saving a file whose anchor
// merges itself used to overflow the stack of `up` on reload, taking every
// worker down. Now the reload is refused with the line at fault.
func TestReloadOfASelfMergingFileKeepsServing(t *testing.T) {
	dir := stack(t, simpleStack)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	before := pidsOf(status(t, dir), "api")
	os.WriteFile(filepath.Join(dir, "recluster.yml"), []byte("x-a: &a {<<: *a}\nservices:\n  api: {<<: *a, command: run}\n"), 0o644)
	r := verb(t, dir, "reload")
	if r.code != 1 || !strings.Contains(r.err, "recluster.yml:1:") || !strings.Contains(r.err, "merges itself") {
		t.Errorf("reload of a self-merging file: exit %d: %s", r.code, r.err)
	}
	if after := pidsOf(status(t, dir), "api"); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("a refused reload changed workers: %v -> %v", before, after)
	}
}

// unreadUp starts `up` with a stdout that nobody reads (a pipe whose
// reader stopped) and a stderr the test reads.
type unreadUp struct {
	cmd    *exec.Cmd
	stdout io.ReadCloser
	mu     sync.Mutex
	stderr strings.Builder
	done   chan struct{}
}

func startUnread(t *testing.T, dir string) *unreadUp {
	t.Helper()
	u := &unreadUp{cmd: exec.Command(testbin.Recluster(t), "up"), done: make(chan struct{})}
	u.cmd.Dir, u.cmd.Env = dir, testEnv(t)
	u.stdout, _ = u.cmd.StdoutPipe()
	errPipe, _ := u.cmd.StderrPipe()
	if err := u.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Owned by the test; ends when up's stderr closes.
	go func() {
		data, _ := io.ReadAll(errPipe)
		u.mu.Lock()
		u.stderr.Write(data)
		u.mu.Unlock()
		u.cmd.Wait()
		close(u.done)
	}()
	t.Cleanup(func() {
		u.cmd.Process.Kill()
		u.stdout.Close()
		<-u.done
	})
	return u
}

func (u *unreadUp) exited(t *testing.T, what string) {
	t.Helper()
	select {
	case <-u.done:
	case <-time.After(deadline):
		t.Fatalf("%s: up did not exit while nothing read its output", what)
	}
}

// waitStatus runs `status` until cond holds for its answer; each call is
// a real round trip to up, so this waits on up's state, not on a timer.
func waitStatus(t *testing.T, dir, what string, cond func(statusJSON) bool) statusJSON {
	t.Helper()
	end := time.Now().Add(deadline)
	for {
		var st statusJSON
		r := verb(t, dir, "status", "--json")
		if r.code == 0 && json.Unmarshal([]byte(r.stdout), &st) == nil && cond(st) {
			return st
		}
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s: %+v %s", what, st, r.err)
		}
	}
}

const floodStack = `
services:
  flood:
    command: [WORKER, -mode, lines, -n, "100000000", -size, "200", -after, 1h]
    workers: 1
  crash:
    command: [WORKER, -mode, crash, -after, 50ms]
    workers: 1
    respawn: 10ms
    startLimit: 0
    log: {respawns: true}
`

// TestUnreadOutputNeverStallsUp: with nothing reading up's stdout, the
// flooding worker waits (back-pressure), but recluster's own work goes on:
// status answers, the crashing worker is respawned, and down, SIGTERM or
// two SIGINTs still end up, within the workers' timeout.
func TestUnreadOutputNeverStallsUp(t *testing.T) {
	for _, how := range []string{"down", "SIGTERM", "SIGINT twice"} {
		t.Run(how, func(t *testing.T) {
			dir := stack(t, floodStack)
			u := startUnread(t, dir)
			st := waitStatus(t, dir, "the flood worker", func(st statusJSON) bool { return len(pidsOf(st, "flood")) == 1 })
			waitBlocked(t, pidsOf(st, "flood")[0])
			restarts := func(st statusJSON) int {
				for _, s := range st.Services {
					if s.Name == "crash" && len(s.Workers) > 0 {
						return s.Workers[0].Restarts
					}
				}
				return 0
			}
			first := restarts(status(t, dir))
			waitStatus(t, dir, "a respawn while the output is stalled", func(st statusJSON) bool { return restarts(st) > first+2 })
			switch how {
			case "down":
				if r := verb(t, dir, "down"); r.code != 0 {
					t.Errorf("down: exit %d: %s", r.code, r.err)
				}
			case "SIGTERM":
				u.cmd.Process.Signal(syscall.SIGTERM)
			case "SIGINT twice":
				u.cmd.Process.Signal(syscall.SIGINT)
				u.cmd.Process.Signal(syscall.SIGINT)
			}
			u.exited(t, how)
			u.mu.Lock()
			stderr := u.stderr.String()
			u.mu.Unlock()
			if !strings.Contains(stderr, "the output was not being read") {
				t.Errorf("stderr does not say that output was lost: %q", stderr)
			}
			if code := u.cmd.ProcessState.ExitCode(); code != 0 {
				t.Errorf("exit code %d", code)
			}
		})
	}
}

// TestStoppedFollowerIsCutOffAndBounded: a `logs -f` that stops reading
// (SIGSTOP) costs up a bounded amount of memory and is cut off; once it
// runs again it says so and exits 1.
func TestStoppedFollowerIsCutOffAndBounded(t *testing.T) {
	dir := stack(t, `
services:
  flood:
    command: [WORKER, -mode, lines, -n, "3000", -size, "2000000", -after, 1h]
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
	// up's own output is read, line by line, so the flood goes on; the
	// lines read are counted to know how far it has gone.
	lines := make(chan int, 1)
	ready := make(chan struct{})
	// Owned by the test; ends when up's stdout closes.
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 4<<20), 4<<20)
		n := 0
		for sc.Scan() {
			if strings.Contains(sc.Text(), "every service is ready") {
				close(ready)
			}
			if n++; n%10 == 0 {
				select {
				case lines <- n:
				default:
				}
			}
		}
	}()
	<-ready
	follower := exec.Command(testbin.Recluster(t), "logs", "-f", "-n", "0")
	follower.Dir, follower.Env = dir, testEnv(t)
	var ferr strings.Builder
	fout, _ := follower.StdoutPipe()
	follower.Stderr = &ferr
	if err := follower.Start(); err != nil {
		t.Fatal(err)
	}
	// Once a line has come through, the follower is connected: stop it.
	first := make([]byte, 1)
	if _, err := io.ReadFull(fout, first); err != nil {
		t.Fatalf("the follower printed nothing: %v", err)
	}
	follower.Process.Signal(syscall.SIGSTOP)
	// Owned by the test; drains the follower once it runs again.
	go io.Copy(io.Discard, fout)
	// 500 lines of 2 MB pass (1 GB) while the follower sleeps: each of
	// them a batch of its own that a follower might hold.
	for n := 0; n < 500; {
		select {
		case n = <-lines:
		case <-time.After(deadline):
			t.Fatalf("the flood stalled at %d lines", n)
		}
	}
	if rss := rssKiB(t, cmd.Process.Pid); rss > 256<<10 {
		t.Errorf("up holds %d KiB for a stopped follower", rss)
	}
	follower.Process.Signal(syscall.SIGCONT)
	err := follower.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(ferr.String(), "cut off") {
		t.Errorf("the follower ended with %v: %s", err, ferr.String())
	}
}

// TestNothingIsSaidAfterEveryServiceStopped: the control socket's removal
// at shutdown is not taken for a deletion by someone else.
func TestNothingIsSaidAfterEveryServiceStopped(t *testing.T) {
	for i := 0; i < 3; i++ {
		dir := stack(t, simpleStack)
		u := startUp(t, dir)
		u.waitLine(`every service is ready`)
		u.cmd.Process.Signal(syscall.SIGINT)
		if err := u.waitExit(); err != nil {
			t.Fatalf("exit: %v", err)
		}
		out := u.output()
		i := strings.Index(out, "every service stopped")
		if i < 0 {
			t.Fatalf("no final line:\n%s", out)
		}
		if rest := strings.TrimSpace(out[i+len("every service stopped"):]); rest != "" {
			t.Errorf("said after the end: %q", rest)
		}
	}
}

// TestInheritedFDsDoNotReachWorkers: a descriptor that recluster itself
// inherited is not passed on to its workers.
func TestInheritedFDsDoNotReachWorkers(t *testing.T) {
	dir := stack(t, `
services:
  w:
    command: [WORKER, -mode, fds]
    workers: 1
`)
	marker, err := os.Create(filepath.Join(dir, "inherited-marker"))
	if err != nil {
		t.Fatal(err)
	}
	defer marker.Close()
	cmd := exec.Command(testbin.Recluster(t), "up")
	cmd.Dir, cmd.Env = dir, testEnv(t)
	cmd.ExtraFiles = []*os.File{marker}
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		io.Copy(io.Discard, out)
		cmd.Wait()
	}()
	sc := bufio.NewScanner(out)
	var seen []string
	for sc.Scan() && !strings.Contains(sc.Text(), "fds listed") {
		seen = append(seen, sc.Text())
		if strings.Contains(sc.Text(), "inherited-marker") {
			t.Errorf("a worker holds recluster's inherited fd: %s", sc.Text())
		}
	}
	if len(seen) == 0 {
		t.Fatalf("the worker listed nothing")
	}
}

// TestTheInstanceIsTheResolvedFile: an instance started through a symlink
// keeps reading the file it started with after the link is retargeted,
// and a second `up` in another XDG_RUNTIME_DIR setting is refused.
func TestTheInstanceIsTheResolvedFile(t *testing.T) {
	dir := stack(t, simpleStack)
	a := filepath.Join(dir, "recluster.yml")
	b := filepath.Join(dir, "other.yml")
	os.WriteFile(b, []byte("services:\n  other:\n    command: [sleep, '100']\n"), 0o644)
	link := filepath.Join(dir, "link.yml")
	os.Symlink(a, link)
	u := startUp(t, dir, "-f", link)
	u.waitLine(`every service is ready`)
	os.Remove(link)
	os.Symlink(b, link)
	if r := verb(t, dir, "reload", "-f", a); r.code != 0 {
		t.Fatalf("reload: exit %d: %s", r.code, r.err)
	}
	st := status(t, dir)
	var names []string
	for _, s := range st.Services {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "api,db" {
		t.Errorf("after the link was retargeted, the instance runs %v", names)
	}

	// Another environment: no XDG_RUNTIME_DIR; TMPDIR decides.
	env := []string{"NO_COLOR=1", "PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	second := exec.Command(testbin.Recluster(t), "up", "-f", a)
	second.Dir, second.Env = dir, env
	outb, err := second.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(outb), fmt.Sprintf("pid %d", u.cmd.Process.Pid)) {
		t.Errorf("a second up without XDG_RUNTIME_DIR: %v\n%s", err, outb)
	}
	st2 := exec.Command(testbin.Recluster(t), "status", "-f", a)
	st2.Dir, st2.Env = dir, env
	if outb, err := st2.CombinedOutput(); err != nil || !strings.Contains(string(outb), "api") {
		t.Errorf("status without XDG_RUNTIME_DIR: %v\n%s", err, outb)
	}
}

// TestStatusTableEscapesWhatWorkersSay: a worker's STATUS= text with
// escape sequences shows escaped in the table, never acted on.
func TestStatusTableEscapesWhatWorkersSay(t *testing.T) {
	dir := stack(t, `
services:
  w:
    command: [WORKER, -ready, -status, "\e[2J\e[31mred\a\rgone"]
    workers: 1
    readyWhen: ready
`)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	end := time.Now().Add(deadline)
	for {
		r := verb(t, dir, "status")
		if strings.Contains(r.stdout, "red") {
			if strings.ContainsAny(r.stdout, "\x1b\a\r") {
				t.Errorf("the table holds raw control characters: %q", r.stdout)
			}
			if !strings.Contains(r.stdout, `\x1b[2J\x1b[31mred\a\rgone`) {
				t.Errorf("the status text is not shown escaped: %q", r.stdout)
			}
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the status text never showed: %q", r.stdout)
		}
	}
	if r := verb(t, dir, "scale", "w=100001"); r.code != 2 || !strings.Contains(r.err, "from 1 to 100000") {
		t.Errorf("scale past the limit: exit %d %s", r.code, r.err)
	}
}
