package cli_test

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/recluster/recluster/internal/testbin"
)

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestTasksRunInOrderThenUpExits: a stack of tasks runs each once, in
// `after` order, and up ends by itself: 0 when all completed.
func TestTasksRunInOrderThenUpExits(t *testing.T) {
	dir := stack(t, `
services:
  seed:
    command: sh -c 'echo seed >> ran.txt'
    restart: never
    after: {migrate: completed}
  migrate:
    command: sh -c 'sleep 0.2; echo migrate >> ran.txt'
    restart: never
  check:
    command: sh -c 'echo check >> ran.txt'
    restart: on-failure
    after: {seed: completed}
`)
	u := startUp(t, dir)
	if err := u.waitExit(); err != nil {
		t.Fatalf("up: %v\n%s", err, u.output())
	}
	data, _ := os.ReadFile(filepath.Join(dir, "ran.txt"))
	if string(data) != "migrate\nseed\ncheck\n" {
		t.Errorf("ran %q, want migrate, seed, check, once each", data)
	}
	if !strings.Contains(u.output(), "nothing is left to run: every service completed") {
		t.Errorf("up did not say why it ended:\n%s", u.output())
	}
}

// TestAFailingTaskBlocksItsDependents: they never start; the reason is
// printed once; up exits 1 naming what failed.
func TestAFailingTaskBlocksItsDependents(t *testing.T) {
	dir := stack(t, `
services:
  migrate:
    command: sh -c 'echo "relation users already exists" >&2; exit 3'
    restart: never
  api:
    command: sh -c 'touch api-started; sleep 100'
    after: {migrate: completed}
  web:
    command: [WORKER]
    after: [api]
`)
	u := startUp(t, dir)
	err := u.waitExit()
	if code := exitCode(err); code != 1 {
		t.Errorf("up exited %d, want 1:\n%s", code, u.output())
	}
	out := u.output()
	for _, want := range []string{
		"migrate failed: migrate.0 ended: exit code 3",
		"relation users already exists",
		"api is blocked: migrate failed",
		"web is blocked: api is blocked",
		"nothing is left to run: migrate failed, api blocked, web blocked",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in up's output:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "api is blocked:"); n != 1 {
		t.Errorf("the block was said %d times", n)
	}
	if _, err := os.Stat(filepath.Join(dir, "api-started")); err == nil {
		t.Errorf("api started although migrate failed")
	}
}

// TestExitOnFailureStopsAtTheFirstFailure: a crash stops the stack, and
// up exits with the crash's code.
func TestExitOnFailureStopsAtTheFirstFailure(t *testing.T) {
	dir := stack(t, `
services:
  server:
    command: [WORKER]
  flaky:
    command: [WORKER, -mode, crash, -after, 300ms, -code, "7"]
`)
	u := startUp(t, dir, "--exit-on-failure")
	u.waitLine(`every service is ready`)
	pids := pidsOf(status(t, dir), "server")
	err := u.waitExit()
	if code := exitCode(err); code != 7 {
		t.Errorf("up exited %d, want 7 (flaky's code):\n%s", code, u.output())
	}
	if !strings.Contains(u.output(), "flaky.0") || !strings.Contains(u.output(), "stopping every service (--exit-on-failure)") {
		t.Errorf("up did not say why it stopped:\n%s", u.output())
	}
	for _, pid := range pids {
		waitGone(t, pid, deadline)
	}
}

// TestACrashLoopStopsTrying: a command that cannot run, or a worker that
// crashes at once, is tried startLimit times, then failed; start tries
// again.
func TestACrashLoopStopsTrying(t *testing.T) {
	dir := stack(t, `
services:
  keep:
    command: [WORKER]
  missing:
    command: nosuchprog-recluster-test
    workers: 1
    respawn: 10ms
    startLimit: 3
  crasher:
    command: [WORKER, -mode, crash, -code, "4"]
    workers: 1
    respawn: 10ms
    startLimit: 4
`)
	u := startUp(t, dir)
	u.waitLine(`missing failed: its workers exited 3 times in a row`)
	u.waitLine(`crasher failed: its workers exited 4 times in a row .* exit code 4`)
	if n := u.countLines(`crasher\.0 +! worker 0: crash with code 4`); n != 4 {
		t.Errorf("crasher ran %d times, want startLimit (4)", n)
	}
	st := status(t, dir)
	for _, s := range st.Services {
		if s.Name == "missing" && (s.State != "failed" || !strings.Contains(s.Reason, "nosuchprog-recluster-test")) {
			t.Errorf("missing: %s %q", s.State, s.Reason)
		}
	}
	// Ready once started, it starts (and then crashes as before).
	if r := verb(t, dir, "start", "crasher"); r.code != 0 {
		t.Errorf("start crasher: %d %s", r.code, r.err)
	}
	u.waitCount(`crasher failed: its workers exited 4 times in a row`, 2)
	if n := u.countLines(`crasher\.0 +! worker 0: crash with code 4`); n != 8 {
		t.Errorf("after start, crasher ran %d times in all, want 8", n)
	}
}

// TestProcfileReleaseRunsFirst: Heroku's release phase.
func TestProcfileReleaseRunsFirst(t *testing.T) {
	dir := t.TempDir()
	worker := testbin.Worker(t)
	os.WriteFile(filepath.Join(dir, "Procfile"), []byte(
		"web: sh -c 'test -e released && exec "+worker+" -mode serve -bind 127.0.0.1:$PORT'\n"+
			"release: sh -c 'sleep 0.3; touch released; echo released'\n"), 0o644)
	_, base, _ := strings.Cut(testbin.FreeAddr(t), ":")
	u := startUp(t, dir, "--port", base)
	u.waitLine(`release(\.0)? +\| released`)
	u.waitLine(`release completed`)
	u.waitLine(`every service is ready`)
	if strings.Contains(u.output(), "web.0 exited") || strings.Contains(u.output(), "respawning") {
		t.Errorf("web started before release completed:\n%s", u.output())
	}
}

// TestAReloadOfAllRunsTasksFirst: `recluster reload` reruns the task web
// needs completed, and reloads web only once it has; when the task
// fails, web keeps its old generation and the reload exits non-zero
// naming the failure.
func TestAReloadOfAllRunsTasksFirst(t *testing.T) {
	dir := stack(t, `
services:
  migrate:
    command: sh -c 'sleep 0.5; if [ -e fail ]; then echo "migration 0042 failed, column exists" >&2; exit 4; fi; echo migrated >> order'
    restart: never
  web:
    command: sh -c 'echo web >> order; exec sleep 100'
    workers: 1
    after: {migrate: completed}
`)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	order := func() string {
		data, _ := os.ReadFile(filepath.Join(dir, "order"))
		return strings.ReplaceAll(strings.TrimSpace(string(data)), "\n", " ")
	}
	if r := verb(t, dir, "reload"); r.code != 0 {
		t.Fatalf("reload exited %d: %s%s", r.code, r.stdout, r.err)
	}
	if got := order(); got != "migrated web migrated web" {
		t.Errorf("ran %q, want migrate then web, twice", got)
	}
	webPids := pidsOf(status(t, dir), "web")

	os.WriteFile(filepath.Join(dir, "fail"), nil, 0o644)
	r := verb(t, dir, "reload")
	if r.code == 0 {
		t.Errorf("reload with a failing migrate exited 0: %s", r.stdout)
	}
	for _, want := range []string{"migrate: failed: migrate.0 ended: exit code 4", "migration 0042 failed, column exists", "web: not reloaded, since migrate failed"} {
		if !strings.Contains(r.err, want) {
			t.Errorf("no %q in the reload's answer:\n%s", want, r.err)
		}
	}
	if got := order(); got != "migrated web migrated web" {
		t.Errorf("ran %q: web reloaded after migrate failed", got)
	}
	st := status(t, dir)
	if got := pidsOf(st, "web"); len(got) != 1 || got[0] != webPids[0] {
		t.Errorf("web's workers %v, want its old one %v serving on", got, webPids)
	}
	if r := verb(t, dir, "reload", "web"); r.code != 0 || strings.Count(order(), "migrated") != 2 {
		t.Errorf("reload web: exit %d, ran %q; want web alone reloaded", r.code, order())
	}
}

// TestRunIsAOneOffWithTheServicesEnvironment: env, dir, exit codes,
// stdin and forwarded signals, with no up running.
func TestRunIsAOneOffWithTheServicesEnvironment(t *testing.T) {
	dir := stack(t, `
env: {SHARED: yes}
services:
  api:
    command: sh -c 'echo own command; exit 5'
    env: {API_KEY: secret}
    dir: sub
`)
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	run := func(stdin string, args ...string) (int, string) {
		cmd := exec.Command(testbin.Recluster(t), append([]string{"run"}, args...)...)
		cmd.Dir, cmd.Env, cmd.Stdin = dir, testEnv(t), strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return exitCode(err), string(out)
	}
	code, out := run("", "api", "--", "sh", "-c", `echo "$SHARED $API_KEY $RECLUSTER_SERVICE [$WORKER_ID] $(basename $PWD)"`)
	if code != 0 || out != "yes secret api [] sub\n" {
		t.Errorf("env: %d %q", code, out)
	}
	if code, out := run("", "api"); code != 5 || out != "own command\n" {
		t.Errorf("the service's own command: %d %q", code, out)
	}
	if code, _ := run("", "api", "--", "sh", "-c", "exit 7"); code != 7 {
		t.Errorf("exit 7 came out as %d", code)
	}
	if code, _ := run("", "api", "--", "sh", "-c", "kill -TERM $$"); code != 128+15 {
		t.Errorf("death by SIGTERM came out as %d, want 143", code)
	}
	if code, out := run("from stdin\n", "api", "--", "cat"); code != 0 || out != "from stdin\n" {
		t.Errorf("stdin: %d %q", code, out)
	}
	if code, out := run("", "apx"); code != 1 || !strings.Contains(out, `did you mean "api"`) {
		t.Errorf("an unknown service: %d %q", code, out)
	}

	// In Procfile mode, PORT is foreman's.
	os.WriteFile(filepath.Join(dir, "Procfile"), []byte("web: sleep 1\nworker: sleep 1\n"), 0o644)
	if code, out := run("", "-f", "Procfile", "worker", "--", "sh", "-c", "echo $PORT $RECLUSTER_SERVICE"); code != 0 || out != "5100 worker\n" {
		t.Errorf("Procfile mode: %d %q", code, out)
	}
	// With up's --port, the PORT up would give.
	if code, out := run("", "-f", "Procfile", "--port", "23200", "worker", "--", "sh", "-c", "echo $PORT"); code != 0 || out != "23300\n" {
		t.Errorf("Procfile mode with --port: %d %q", code, out)
	}

	// A SIGINT sent to recluster reaches the command.
	cmd := exec.Command(testbin.Recluster(t), "run", "api", "--", "sh", "-c",
		`trap 'echo interrupted; exit 9' INT; echo waiting; while :; do sleep 0.05; done`)
	cmd.Dir, cmd.Env = dir, testEnv(t)
	pipe, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(pipe)
	if !lines.Scan() || lines.Text() != "waiting" {
		t.Fatalf("the command did not start: %q", lines.Text())
	}
	cmd.Process.Signal(syscall.SIGINT)
	lines.Scan()
	got := lines.Text()
	for lines.Scan() {
	}
	if code := exitCode(cmd.Wait()); code != 9 || got != "interrupted" {
		t.Errorf("after SIGINT: exit %d, %q; want 9 and the trap's line", code, got)
	}
}

// TestRunsCommandDiesWithRun: a `recluster run` killed with SIGKILL
// leaves no command behind.
func TestRunsCommandDiesWithRun(t *testing.T) {
	dir := stack(t, `
services:
  api:
    command: sleep 1
`)
	cmd := exec.Command(testbin.Recluster(t), "run", "api", "--", "sh", "-c", `echo $$; exec sleep 300`)
	cmd.Dir, cmd.Env = dir, testEnv(t)
	pipe, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(pipe)
	if !lines.Scan() {
		t.Fatal("the command did not start")
	}
	pid, err := strconv.Atoi(lines.Text())
	if err != nil {
		t.Fatalf("the command's pid: %q", lines.Text())
	}
	cmd.Process.Kill()
	cmd.Wait()
	waitGone(t, pid, deadline)
}
