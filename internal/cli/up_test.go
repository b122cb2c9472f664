package cli_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/recluster/recluster/internal/control"
	"github.com/recluster/recluster/internal/proc"
	"github.com/recluster/recluster/internal/testbin"
	"golang.org/x/sys/unix"
)

const deadline = 30 * time.Second

// upProcess is a running `recluster up` whose output a test reads line by
// line.
type upProcess struct {
	t     *testing.T
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	added chan struct{} // signalled on every new line
	done  chan struct{} // closed when the process has exited
	err   error
}

// stack writes a config into a fresh folder (WORKER is the test worker) and
// returns the folder.
func stack(t *testing.T, yaml string) string {
	t.Helper()
	dir := t.TempDir()
	yaml = strings.ReplaceAll(yaml, "WORKER", testbin.Worker(t))
	if err := os.WriteFile(filepath.Join(dir, "recluster.yml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// env gives each test its own runtime folder, so instances never meet.
func testEnv(t *testing.T) []string {
	return append(os.Environ(), "XDG_RUNTIME_DIR="+runtimeDir(t), "NO_COLOR=1")
}

var runtimeDirs sync.Map

func runtimeDir(t *testing.T) string {
	if d, ok := runtimeDirs.Load(t); ok {
		return d.(string)
	}
	d := t.TempDir()
	runtimeDirs.Store(t, d)
	return d
}

func startUp(t *testing.T, dir string, args ...string) *upProcess {
	t.Helper()
	return startUpIn(t, dir, testEnv(t), args...)
}

// startUpIn is startUp with the environment given.
func startUpIn(t *testing.T, dir string, env []string, args ...string) *upProcess {
	t.Helper()
	return startCmd(t, exec.Command(testbin.Recluster(t), append([]string{"up"}, args...)...), dir, env, nil)
}

// startCmd starts cmd, an up however it is run, with files as its fds 3
// and on, and follows its output.
func startCmd(t *testing.T, cmd *exec.Cmd, dir string, env []string, files []*os.File) *upProcess {
	t.Helper()
	cmd.Dir = dir
	cmd.Env = env
	cmd.ExtraFiles = files
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	u := &upProcess{t: t, cmd: cmd, added: make(chan struct{}, 1), done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Owned by the test; ends when up's output closes.
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			u.mu.Lock()
			u.lines = append(u.lines, sc.Text())
			u.mu.Unlock()
			select {
			case u.added <- struct{}{}:
			default:
			}
		}
		u.err = cmd.Wait()
		close(u.done)
	}()
	t.Cleanup(func() {
		select {
		case <-u.done:
		default:
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-u.done:
			case <-time.After(deadline):
				cmd.Process.Kill()
			}
		}
	})
	return u
}

func (u *upProcess) output() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return strings.Join(u.lines, "\n")
}

// waitLine waits for a line matching re, re-checking on every new line.
func (u *upProcess) waitLine(re string) []string {
	u.t.Helper()
	rx := regexp.MustCompile(re)
	timeout := time.After(deadline)
	for {
		u.mu.Lock()
		for _, l := range u.lines {
			if m := rx.FindStringSubmatch(l); m != nil {
				u.mu.Unlock()
				return m
			}
		}
		u.mu.Unlock()
		select {
		case <-u.added:
		case <-u.done:
			u.mu.Lock()
			for _, l := range u.lines {
				if m := rx.FindStringSubmatch(l); m != nil {
					u.mu.Unlock()
					return m
				}
			}
			u.mu.Unlock()
			u.t.Fatalf("up exited (%v) before a line matching %q:\n%s", u.err, re, u.output())
		case <-timeout:
			u.t.Fatalf("no line matching %q:\n%s", re, u.output())
		}
	}
}

func (u *upProcess) waitExit() error {
	u.t.Helper()
	select {
	case <-u.done:
		return u.err
	case <-time.After(deadline):
		u.t.Fatalf("up did not exit:\n%s", u.output())
		return nil
	}
}

// verb runs another recluster command against the running instance.
func verb(t *testing.T, dir string, args ...string) result {
	t.Helper()
	return verbEnv(t, dir, testEnv(t), args...)
}

// verbEnv is verb with the environment given.
func verbEnv(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	return runBinary(t, testbin.Recluster(t), dir, env, args...)
}

// runBinary runs bin with args in dir, and returns how it ended.
func runBinary(t *testing.T, bin, dir string, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = env
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{code, out.String(), errb.String()}
}

type statusJSON struct {
	Services []struct {
		Name       string   `json:"name"`
		State      string   `json:"state"`
		Reason     string   `json:"reason"`
		Generation int      `json:"generation"`
		Listen     []string `json:"listen"`
		Proxy      string   `json:"proxy"`
		Cut        int      `json:"cut"`
		LastReload *struct {
			Trigger string   `json:"trigger"`
			Outcome string   `json:"outcome"`
			Reason  string   `json:"reason"`
			Lines   []string `json:"lines"`
		} `json:"lastReload"`
		Workers []struct {
			ID         int    `json:"id"`
			Pid        int    `json:"pid"`
			State      string `json:"state"`
			Generation int    `json:"generation"`
			Restarts   int    `json:"restarts"`
			Port       int    `json:"port"`
			InFlight   int    `json:"inFlight"`
			ExitCode   *int   `json:"exitCode"`
			RSS        int64  `json:"rss"`
			Health     *struct {
				Probe    string `json:"probe"`
				OK       bool   `json:"ok"`
				Detail   string `json:"detail"`
				Failures int    `json:"failures"`
			} `json:"health"`
			Replaced *struct {
				Reason string `json:"reason"`
			} `json:"replaced"`
		} `json:"workers"`
	} `json:"services"`
}

func status(t *testing.T, dir string) statusJSON {
	t.Helper()
	r := verb(t, dir, "status", "--json")
	if r.code != 0 {
		t.Fatalf("status: exit %d: %s", r.code, r.err)
	}
	var st statusJSON
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	return st
}

func pidsOf(st statusJSON, service string) []int {
	var out []int
	for _, s := range st.Services {
		if s.Name == service {
			for _, w := range s.Workers {
				out = append(out, w.Pid)
			}
		}
	}
	return out
}

// waitGone waits for a process that is not our child to exit: a pidfd
// becomes readable when it does. Zombies count as gone.
func waitGone(t *testing.T, pid int, within time.Duration) {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return // already gone
	}
	defer unix.Close(fd)
	n, _ := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, int(within.Milliseconds()))
	if n == 0 && proc.Alive(pid) {
		t.Errorf("pid %d still runs after %s", pid, within)
	}
}

const simpleStack = `
services:
  api:
    command: [WORKER, -mode, env]
    workers: 2
  db:
    command: [WORKER]
    workers: 1
`

func TestUpStopsGracefullyOnSIGINT(t *testing.T) {
	dir := stack(t, simpleStack)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	pids := pidsOf(status(t, dir), "api")
	u.cmd.Process.Signal(syscall.SIGINT)
	if err := u.waitExit(); err != nil {
		t.Fatalf("exit: %v\n%s", err, u.output())
	}
	for _, pid := range pids {
		if proc.Alive(pid) {
			t.Errorf("worker %d outlived up", pid)
		}
	}
	if !strings.Contains(u.output(), "every service stopped") {
		t.Errorf("no closing line:\n%s", u.output())
	}
}

func TestUpKilledBySIGKILLTakesItsWorkers(t *testing.T) {
	dir := stack(t, simpleStack)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	st := status(t, dir)
	pids := append(pidsOf(st, "api"), pidsOf(st, "db")...)
	if len(pids) != 3 {
		t.Fatalf("pids %v", pids)
	}
	u.cmd.Process.Kill()
	u.waitExit()
	for _, pid := range pids {
		waitGone(t, pid, 10*time.Second)
	}
}

func TestNextUpEndsGroupsLeftByACrash(t *testing.T) {
	dir := stack(t, `
services:
  forker:
    command: [WORKER, -mode, grandchild]
    workers: 1
`)
	u := startUp(t, dir)
	m := u.waitLine(`grandchild pid (\d+)`)
	grandchild, _ := strconv.Atoi(m[1])
	u.cmd.Process.Kill() // the leader dies with up; its child is left behind
	u.waitExit()
	if !proc.Alive(grandchild) {
		t.Skip("the grandchild died with its parent here; nothing is left to clean up")
	}
	u2 := startUp(t, dir)
	u2.waitLine(`ended 1 process group\(s\) left by a recluster that did not stop cleanly`)
	waitGone(t, grandchild, 10*time.Second)
	u2.waitLine(`every service is ready`)
}

func TestSecondUpIsRefusedWithTheFirstPid(t *testing.T) {
	dir := stack(t, simpleStack)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	r := verb(t, dir, "up")
	want := fmt.Sprintf("already running for this config (pid %d)", u.cmd.Process.Pid)
	if r.code != 1 || !strings.Contains(r.err, want) {
		t.Errorf("second up: exit %d, stderr %q; want %q", r.code, r.err, want)
	}
}

func TestVerbsEndToEnd(t *testing.T) {
	dir := stack(t, simpleStack)
	sub := filepath.Join(dir, "a", "b")
	os.MkdirAll(sub, 0o755)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)

	// status --json, from a subfolder.
	st := status(t, sub)
	if len(st.Services) != 2 || st.Services[0].Name != "api" || len(st.Services[0].Workers) != 2 ||
		st.Services[0].Workers[0].State != "ready" || st.Services[0].Generation != 1 {
		t.Fatalf("status: %+v", st)
	}
	if r := verb(t, sub, "ps"); r.code != 0 || !strings.Contains(r.stdout, "SERVICE") || !strings.Contains(r.stdout, "api") {
		t.Errorf("ps: %d %s %s", r.code, r.stdout, r.err)
	}

	// scale up, then down: the highest ids go.
	if r := verb(t, sub, "scale", "api=4"); r.code != 0 {
		t.Fatalf("scale: %s", r.err)
	}
	st = status(t, dir)
	if ids := st.Services[0].Workers; len(ids) != 4 || ids[3].ID != 3 {
		t.Fatalf("after scale 4: %+v", ids)
	}
	highest := st.Services[0].Workers[3].Pid
	if r := verb(t, dir, "scale", "api=2"); r.code != 0 {
		t.Fatalf("scale: %s", r.err)
	}
	if w := status(t, dir).Services[0].Workers; len(w) != 2 || w[1].ID != 1 {
		t.Fatalf("after scale 2: %+v", w)
	}
	if proc.Alive(highest) {
		t.Errorf("api.3 still runs after scale down")
	}
	for _, bad := range [][]string{{"scale", "api"}, {"scale", "api=0"}, {"scale", "api=x"}} {
		if r := verb(t, dir, bad...); r.code != 2 {
			t.Errorf("%v: exit %d", bad, r.code)
		}
	}
	if r := verb(t, dir, "scale", "nope=2"); r.code != 1 || !strings.Contains(r.err, `unknown service "nope"`) {
		t.Errorf("scale nope: %d %s", r.code, r.err)
	}

	// restart gives new pids; stop and start.
	before := pidsOf(status(t, dir), "db")
	if r := verb(t, dir, "restart", "db"); r.code != 0 {
		t.Fatalf("restart: %s", r.err)
	}
	after := pidsOf(status(t, dir), "db")
	if len(after) != 1 || after[0] == before[0] {
		t.Errorf("restart: before %v after %v", before, after)
	}
	if r := verb(t, dir, "stop", "db"); r.code != 0 {
		t.Fatalf("stop: %s", r.err)
	}
	if len(pidsOf(status(t, dir), "db")) != 0 || proc.Alive(after[0]) {
		t.Errorf("db still has workers after stop")
	}
	if r := verb(t, dir, "start", "db"); r.code != 0 {
		t.Fatalf("start: %s", r.err)
	}
	if len(pidsOf(status(t, dir), "db")) != 1 {
		t.Errorf("db has no worker after start")
	}
	if r := verb(t, dir, "stop"); r.code != 2 {
		t.Errorf("stop without a name: exit %d", r.code)
	}

	// logs -n for one service only.
	r := verb(t, sub, "logs", "-n", "5", "api")
	if r.code != 0 || !strings.Contains(r.stdout, "api.") || strings.Contains(r.stdout, "db.") {
		t.Errorf("logs api: %d\n%s%s", r.code, r.stdout, r.err)
	}
	if n := strings.Count(r.stdout, "\n"); n == 0 || n > 5+1 {
		t.Errorf("logs -n 5 printed %d lines", n)
	}

	// logs -f streams new lines: a new worker's first lines arrive. The
	// server subscribes before it sends the backlog, so once the one
	// backlog line is read, nothing later can be missed.
	follow := exec.Command(testbin.Recluster(t), "logs", "-n", "1", "-f", "api")
	follow.Dir, follow.Env = dir, testEnv(t)
	pipe, _ := follow.StdoutPipe()
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	select {
	case <-lines:
	case <-time.After(deadline):
		t.Fatal("logs -f printed no backlog line")
	}
	if r := verb(t, dir, "scale", "api=3"); r.code != 0 {
		t.Fatalf("scale: %s", r.err)
	}
	timeout := time.After(deadline)
	for found := false; !found; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("logs -f ended")
			}
			found = strings.HasPrefix(l, "api.2 ") && strings.HasSuffix(l, "| WORKER_ID=2")
		case <-timeout:
			t.Fatal("logs -f did not stream the new worker's lines")
		}
	}
	follow.Process.Signal(syscall.SIGINT)
	follow.Wait()

	// down ends up, with nothing left.
	all := append(pidsOf(status(t, dir), "api"), pidsOf(status(t, dir), "db")...)
	if r := verb(t, sub, "down"); r.code != 0 {
		t.Fatalf("down: %s", r.err)
	}
	if err := u.waitExit(); err != nil {
		t.Errorf("up exit: %v", err)
	}
	for _, pid := range all {
		if proc.Alive(pid) {
			t.Errorf("pid %d alive after down", pid)
		}
	}
	r = verb(t, dir, "status")
	if r.code != 1 || !strings.Contains(r.err, "not running for "+filepath.Join(dir, "recluster.yml")) {
		t.Errorf("status after down: %d %s", r.code, r.err)
	}
}

func TestDeepPathAndStaleSocket(t *testing.T) {
	dir := stack(t, simpleStack)
	deep := dir
	for i := 0; len(deep) < 200; i++ {
		deep = filepath.Join(deep, fmt.Sprintf("a-rather-long-folder-name-%d", i))
	}
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(dir, "recluster.yml"))
	os.WriteFile(filepath.Join(deep, "recluster.yml"), data, 0o644)

	// A socket left by a crashed run: bound, nobody listening.
	paths, err := control.PathsFor(filepath.Join(deep, "recluster.yml"), func(k string) string {
		if k == "XDG_RUNTIME_DIR" {
			return runtimeDir(t)
		}
		return os.Getenv(k)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := paths.Ensure(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", paths.Socket)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Stat(paths.Socket); err != nil {
		t.Fatalf("the stale socket should exist: %v", err)
	}

	u := startUp(t, deep)
	u.waitLine(`every service is ready`)
	if st := status(t, deep); len(st.Services) != 2 {
		t.Errorf("status from a deep path: %+v", st)
	}
	if fi, err := os.Stat(paths.Socket); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode: %v %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(paths.Dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("folder mode: %v %v", fi.Mode(), err)
	}
}

func TestNoInstanceSaysSoAtOnce(t *testing.T) {
	dir := stack(t, simpleStack)
	for _, v := range [][]string{{"status"}, {"reload"}, {"logs"}, {"down"}, {"scale", "api=2"}} {
		start := time.Now()
		r := verb(t, dir, v...)
		if r.code != 1 || !strings.Contains(r.err, "recluster is not running for "+filepath.Join(dir, "recluster.yml")) {
			t.Errorf("%v: exit %d, %s", v, r.code, r.err)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("%v took %s", v, took)
		}
	}
}
