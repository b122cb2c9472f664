package cli_test

import (
	"bufio"
	"bytes"
	"fmt"
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
	"github.com/recluster/recluster/internal/proc"
	"github.com/recluster/recluster/internal/testbin"
)

// procStart reads a process's start time (field 22 of /proc/PID/stat).
func procStart(t *testing.T, pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	return f[19]
}

// TestPlantedGroupsAreNotKilled: entries in the group log that do not
// provably name a group of the last run (no start time, another start
// time, another uid) are not acted on.
func TestPlantedGroupsAreNotKilled(t *testing.T) {
	dir := stack(t, simpleStack)
	victim := exec.Command("sleep", "100")
	victim.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := victim.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { victim.Process.Kill(); victim.Wait() }()
	pid := victim.Process.Pid
	start := procStart(t, pid)

	paths, _ := control.PathsFor(filepath.Join(dir, "recluster.yml"), func(k string) string {
		if k == "XDG_RUNTIME_DIR" {
			return runtimeDir(t)
		}
		return os.Getenv(k)
	})
	if err := paths.Ensure(); err != nil {
		t.Fatal(err)
	}
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	planted := fmt.Sprintf("# recluster groups boot=%s\n+ %d\n+ %d 1 %d\n+ %d %s 4242\n",
		strings.TrimSpace(string(boot)), pid, pid, os.Getuid(), pid, start)
	if err := os.WriteFile(paths.Groups, []byte(planted), 0o600); err != nil {
		t.Fatal(err)
	}
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	if err := syscall.Kill(pid, 0); err != nil || !proc.Alive(pid) {
		t.Errorf("up killed the unrelated group %d that a planted log named", pid)
	}
	if strings.Contains(u.output(), "ended 1 process group") {
		t.Errorf("up says it ended a group:\n%s", u.output())
	}
}

// asNobody prepares a folder that uid nobody can use, with a copy of the
// recluster binary it can run, and returns the folder, the binary and the
// environment for it.
func asNobody(t *testing.T) (top, bin string, env []string) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run recluster as another uid")
	}
	top, err := os.MkdirTemp("", "recluster-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(top) })
	os.Chmod(top, 0o755)
	data, err := os.ReadFile(testbin.Recluster(t))
	if err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(top, "recluster")
	os.WriteFile(bin, data, 0o755)
	xdg := filepath.Join(top, "xdg")
	os.Mkdir(xdg, 0o700)
	os.Chown(xdg, 65534, 65534)
	env = []string{"XDG_RUNTIME_DIR=" + xdg, "NO_COLOR=1", "PATH=/usr/bin:/bin", "HOME=" + top}
	return top, bin, env
}

func nobody(cmd *exec.Cmd) *exec.Cmd {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	return cmd
}

// readUntil reads r's lines until one contains want, and returns them.
func readUntil(t *testing.T, sc *bufio.Scanner, want string) string {
	t.Helper()
	var b strings.Builder
	found := make(chan bool, 1)
	// Owned by this call; ends at want or at the end of the output.
	go func() {
		for sc.Scan() {
			b.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), want) {
				found <- true
				return
			}
		}
		found <- false
	}()
	select {
	case ok := <-found:
		if !ok {
			t.Fatalf("output ended before %q:\n%s", want, b.String())
		}
	case <-time.After(deadline):
		t.Fatalf("no %q in time", want)
	}
	return b.String()
}

// TestSetuidWorkerIsEndedByTheNextUp: a worker that exec'd a setuid
// program loses its parent-death signal (the kernel clears it), so it
// outlives a SIGKILLed recluster; the next `up` for the file ends it.
func TestSetuidWorkerIsEndedByTheNextUp(t *testing.T) {
	top, bin, env := asNobody(t)
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep")
	}
	data, _ := os.ReadFile(sleep)
	suid := filepath.Join(top, "suid-sleep")
	os.WriteFile(suid, data, 0o755)
	os.Chmod(suid, 0o4755|os.ModeSetuid)
	app := filepath.Join(top, "app")
	os.Mkdir(app, 0o755)
	os.WriteFile(filepath.Join(app, "recluster.yml"), []byte("services:\n  su:\n    command: ["+suid+", \"1000\"]\n    workers: 1\n"), 0o644)

	run := func() (*exec.Cmd, *bufio.Scanner) {
		cmd := nobody(exec.Command(bin, "up"))
		cmd.Dir, cmd.Env = app, env
		out, _ := cmd.StdoutPipe()
		cmd.Stderr = cmd.Stdout
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, bufio.NewScanner(out)
	}
	first, out := run()
	readUntil(t, out, "every service is ready")
	leader := findProcess(t, suid)
	first.Process.Kill()
	first.Wait()
	if !proc.Alive(leader) {
		t.Logf("the setuid worker died with recluster: this kernel kept its parent-death signal")
	}
	second, out := run()
	defer func() { second.Process.Signal(syscall.SIGTERM); second.Wait() }()
	said := readUntil(t, out, "every service is ready")
	waitGone(t, leader, deadline)
	if proc.Alive(leader) {
		t.Errorf("the setuid worker %d of the crashed run still runs:\n%s", leader, said)
	}
}

// findProcess returns the pid of the process running exe.
func findProcess(t *testing.T, exe string) int {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if target, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); target == exe {
			return pid
		}
	}
	t.Fatalf("no process runs %s", exe)
	return 0
}

// TestUpSurvivesAProcessLimit: under a per-user process limit, the
// workers that cannot be forked fail with the reason and are retried; up
// goes on, with few threads of its own.
func TestUpSurvivesAProcessLimit(t *testing.T) {
	cmd, sc, app, bin, env := upAsNobodyUnderAProcessLimit(t, 200)
	said := readUntil(t, sc, "resource temporarily unavailable")
	// Owned by the test; keeps up's output moving until it ends.
	go func() {
		for sc.Scan() {
		}
	}()
	st := nobody(exec.Command(bin, "status", "--json"))
	st.Dir, st.Env = app, env
	if outb, err := st.CombinedOutput(); err != nil || !strings.Contains(string(outb), `"name": "many"`) {
		t.Fatalf("status under the limit: %v\n%s\n%s", err, outb, said)
	}
	threads := proc.Threads(cmd.Process.Pid)
	if threads == 0 || threads > 64 {
		t.Errorf("recluster runs %d threads for 200 workers", threads)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Errorf("up under the limit ended with %v", err)
	}
}

// TestScalingFarPastAProcessLimit: a scale to 100,000 under a per-user
// process limit neither floods the log with a line per failed fork nor
// keeps what it grew once scaled back down, and status answers
// throughout.
func TestScalingFarPastAProcessLimit(t *testing.T) {
	cmd, sc, app, bin, env := upAsNobodyUnderAProcessLimit(t, 2)
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	readUntil(t, sc, "every service is ready")
	var mu sync.Mutex
	lines := 0
	// Owned by the test; counts up's lines until its output ends.
	go func() {
		for sc.Scan() {
			mu.Lock()
			lines++
			mu.Unlock()
		}
	}()
	verbAs := func(args ...string) string {
		c := nobody(exec.Command(bin, args...))
		c.Dir, c.Env = app, env
		outb, err := c.CombinedOutput()
		if err != nil && args[0] == "status" {
			t.Fatalf("%v: %v\n%s", args, err, outb)
		}
		return string(outb)
	}
	verbAs("scale", "--wait", "5s", "many=100000")
	verbAs("status")
	// A client under the same limit still starts: up leaves room.
	c := nobody(exec.Command("prlimit", "--nproc=120:120", bin, "status"))
	c.Dir, c.Env = app, env
	if outb, err := c.CombinedOutput(); err != nil {
		t.Errorf("status under the process limit, with up at it: %v\n%.2000s", err, outb)
	}
	mu.Lock()
	said := lines
	mu.Unlock()
	if said > 1000 {
		t.Errorf("up printed %d lines for a scale past its process limit", said)
	}
	verbAs("scale", "--wait", "60s", "many=2")
	verbAs("status")
	// Sampled: the kernel sends no event when memory is returned.
	limit := time.Now().Add(deadline)
	for rssKiB(t, cmd.Process.Pid) > 150<<10 {
		if time.Now().After(limit) {
			t.Fatalf("up holds %d KiB after scaling back to 2", rssKiB(t, cmd.Process.Pid))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// upAsNobodyUnderAProcessLimit starts up as nobody under a limit of 120
// processes, with a service of n sleeping workers, and returns it with a
// scanner of its output, its folder, and the binary and environment to
// run verbs as nobody.
func upAsNobodyUnderAProcessLimit(t *testing.T, n int) (*exec.Cmd, *bufio.Scanner, string, string, []string) {
	t.Helper()
	_, bin, env := asNobody(t)
	if _, err := exec.LookPath("prlimit"); err != nil {
		t.Skip("no prlimit")
	}
	sleep, _ := exec.LookPath("sleep")
	app, _ := os.MkdirTemp(filepath.Dir(bin), "app")
	os.Chmod(app, 0o755)
	os.WriteFile(filepath.Join(app, "recluster.yml"), []byte(fmt.Sprintf("services:\n  many:\n    command: [%s, \"1000\"]\n    workers: %d\n    log: {respawns: true}\n", sleep, n)), 0o644)
	cmd := nobody(exec.Command("prlimit", "--nproc=120:120", bin, "up"))
	cmd.Dir, cmd.Env = app, env
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, bufio.NewScanner(out), app, bin, env
}
