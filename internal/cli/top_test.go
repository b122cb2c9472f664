package cli_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/recluster/recluster/internal/proc"
	"github.com/recluster/recluster/internal/testbin"
)

// tmuxSession runs a command in a real terminal of its own (a tmux server
// of the test's own), sized w×h.
type tmuxSession struct {
	t      *testing.T
	socket string
}

func startTmux(t *testing.T, w, h int, env []string, argv ...string) *tmuxSession {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("TERMINAL TEST NOT RUN: tmux is not installed (.ci/run installs it)")
	}
	s := &tmuxSession{t: t, socket: fmt.Sprintf("recluster-test-%d", time.Now().UnixNano())}
	args := []string{"-L", s.socket, "-f", "/dev/null", "new-session", "-d", "-s", "top", "-x", fmt.Sprint(w), "-y", fmt.Sprint(h)}
	for _, e := range env {
		args = append(args, "-e", e)
	}
	args = append(args, argv...)
	if out, err := exec.Command("tmux", args...).CombinedOutput(); err != nil {
		t.Fatalf("tmux: %v\n%s", err, out)
	}
	t.Cleanup(func() { exec.Command("tmux", "-L", s.socket, "kill-server").Run() })
	return s
}

func (s *tmuxSession) tmux(args ...string) string {
	s.t.Helper()
	out, _ := exec.Command("tmux", append([]string{"-L", s.socket}, args...)...).CombinedOutput()
	return string(out)
}

// screen is what the terminal shows now.
func (s *tmuxSession) screen() string { return s.tmux("capture-pane", "-p", "-t", "top") }

// waitScreen waits for the screen to match re, and returns it.
func (s *tmuxSession) waitScreen(what, re string) string {
	s.t.Helper()
	rx := regexp.MustCompile(re)
	end := time.Now().Add(deadline)
	for {
		screen := s.screen()
		if rx.MatchString(screen) {
			return screen
		}
		if time.Now().After(end) {
			s.t.Fatalf("timed out waiting for %s (%s); the screen:\n%s", what, re, screen)
		}
		time.Sleep(50 * time.Millisecond) // a terminal has no event to wait on: it is looked at
	}
}

// TestTopInATerminal: `recluster top` in a real terminal shows every
// service of a running stack; r reloads the selected one and the view
// shows its generation go up; a resize to 80×24 keeps it readable; q
// quits; when up ends the view says so and ends.
func TestTopInATerminal(t *testing.T) {
	dir := stack(t, `
services:
  web:
    command: [WORKER, -mode, naive]
    workers: 2
    proxy: {address: "127.0.0.1:0", protocol: http}
    minReady: 0s
  clock:
    command: [WORKER]
    workers: 1
`)
	testbin.WithView(t)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	env := append([]string{"TERM=xterm-256color"}, testEnv(t)...)
	file := filepath.Join(dir, "recluster.yml")
	s := startTmux(t, 120, 40, env, testbin.Recluster(t), "top", "-f", file, "--interval", "200ms")
	s.waitScreen("both services", `(?s)recluster top · 2 services.*web .*running .* 1 .*2/2.*clock .*running`)
	s.tmux("send-keys", "-t", "top", "r")
	s.waitScreen("web's generation 2", `(?m)^\W*web\s+\S+\s+2\s+2/2`)
	s.waitScreen("the reload's answer", `reload web: done`)
	s.tmux("resize-window", "-t", "top", "-x", "80", "-y", "24")
	screen := s.waitScreen("the stack and the help line at 80×24", `(?s)web .*clock .*q:quit`)
	for _, l := range strings.Split(screen, "\n") {
		if len([]rune(l)) > 80 {
			t.Errorf("a line wider than the terminal: %q", l)
		}
	}
	s.tmux("send-keys", "-t", "top", "q")
	s.waitGone()

	// Once more, until up ends.
	s2 := startTmux(t, 100, 30, env, "sh", "-c", testbin.Recluster(t)+" top -f "+file+" --interval 200ms; echo top exited $?; sleep 600")
	s2.waitScreen("both services", `recluster top · 2 services`)
	if r := verb(t, dir, "down"); r.code != 0 {
		t.Fatalf("down: %s", r.err)
	}
	s2.waitScreen("top's end", `recluster up has ended(.|\n)*top exited 0`)
}

// waitGone waits for the session's program to end.
func (s *tmuxSession) waitGone() {
	s.t.Helper()
	end := time.Now().Add(deadline)
	for strings.Contains(s.tmux("list-sessions"), "top:") {
		if time.Now().After(end) {
			s.t.Fatalf("the program did not end; the screen:\n%s", s.screen())
		}
		time.Sleep(50 * time.Millisecond) // tmux tells nobody when a session ends
	}
}

// TestUpWithTheViewInTheForeground: `up --top` runs the stack in the
// background with the view in front; q closes the view and stops every
// service, as leaving a foreground up does.
func TestUpWithTheViewInTheForeground(t *testing.T) {
	dir := stack(t, `
services:
  clock:
    command: [WORKER]
    workers: 2
`)
	testbin.WithView(t)
	env := append([]string{"TERM=xterm-256color"}, testEnv(t)...)
	file := filepath.Join(dir, "recluster.yml")
	s := startTmux(t, 100, 30, env, "sh", "-c", testbin.Recluster(t)+" up --top -f "+file+"; echo up exited $?; sleep 600")
	s.waitScreen("the stack in the view", `(?s)recluster top · 1 services.*clock .*running .*2/2`)
	st := status(t, dir)
	if len(st.Services) != 1 || len(st.Services[0].Workers) != 2 {
		t.Fatalf("status while the view is open: %+v", st)
	}
	pid := st.Services[0].Workers[0].Pid
	s.tmux("send-keys", "-t", "top", "q")
	s.waitScreen("up's end", `stopping every service(.|\n)*up exited 0`)
	if r := verb(t, dir, "status"); r.code == 0 {
		t.Errorf("the stack still runs after the view was closed:\n%s", r.stdout)
	}
	if proc.Alive(pid) {
		t.Errorf("worker pid %d still runs", pid)
	}
}

// TestAVerbInATerminalAsksTheTerminalNothing: nothing a verb links may
// speak to the terminal unasked. bubbletea v1's initialiser, when the
// view was linked into recluster, asked the terminal for its background
// colour at every start (OSC 11, then a cursor report): a terminal that
// does not answer (script, expect, `docker run -t` with nobody attached)
// held every verb 5 s, and the query was written into its output. script
// gives the verb a real terminal that answers nothing.
func TestAVerbInATerminalAsksTheTerminalNothing(t *testing.T) {
	script, err := exec.LookPath("script")
	if err != nil {
		t.Skip("script (util-linux) is not installed")
	}
	cmd := exec.Command(script, "-qec", testbin.Recluster(t)+" version", "/dev/null")
	cmd.Env = []string{"TERM=xterm-256color", "PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("recluster version in a terminal: %v\n%q", err, out)
	}
	if strings.Contains(string(out), "\x1b]11;?") || strings.Contains(string(out), "\x1b[6n") {
		t.Errorf("recluster version asked the terminal something: %q", out)
	}
	if !strings.Contains(string(out), "recluster ") {
		t.Errorf("recluster version said %q", out)
	}
}

// TestTopWithoutTheViewSaysHowToGetIt: the view is a program of its own
// (recluster-top); a recluster without it beside it or on PATH says how
// to install it, for `top` and for `up --top`, which then starts nothing.
func TestTopWithoutTheViewSaysHowToGetIt(t *testing.T) {
	dir := stack(t, `
services:
  clock:
    command: [WORKER]
`)
	alone := filepath.Join(t.TempDir(), "recluster")
	data, err := os.ReadFile(testbin.Recluster(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(alone, data, 0o755); err != nil {
		t.Fatal(err)
	}
	env := append(testEnv(t), "PATH="+t.TempDir())
	for _, args := range [][]string{{"top"}, {"up", "--top"}} {
		r := runBinary(t, alone, dir, env, args...)
		if r.code != 1 || !strings.Contains(r.err, "recluster-top") || !strings.Contains(r.err, "go install github.com/recluster/recluster/cmd/...@latest") {
			t.Errorf("recluster %s without the view: exit %d, said %q", strings.Join(args, " "), r.code, r.err)
		}
	}
	if r := verb(t, dir, "status"); r.code == 0 {
		t.Errorf("up --top started the stack without a view:\n%s", r.stdout)
	}
}

// TestTheInstallLineInstallsTheView: README's install line from a
// checkout puts recluster-top beside recluster, where `recluster top`
// finds it.
func TestTheInstallLineInstallsTheView(t *testing.T) {
	if testing.Short() {
		t.Skip("builds both programs")
	}
	bin := t.TempDir()
	install := exec.Command("go", "install", "./cmd/...")
	install.Dir = filepath.Join("..", "..")
	install.Env = append(os.Environ(), "GOBIN="+bin, "CGO_ENABLED=0")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("go install ./cmd/...: %v\n%s", err, out)
	}
	dir := stack(t, `
services:
  clock:
    command: [WORKER]
`)
	// No stack runs: the view is found, and says so as every verb does.
	r := runBinary(t, filepath.Join(bin, "recluster"), dir, append(testEnv(t), "PATH="+t.TempDir()), "top")
	if r.code != 1 || !strings.Contains(r.err, "recluster top: recluster is not running") {
		t.Errorf("recluster top from the installed pair: exit %d, said %q", r.code, r.err)
	}
}
