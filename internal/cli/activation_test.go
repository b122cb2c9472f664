package cli_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/recluster/recluster/internal/load"
	"github.com/recluster/recluster/internal/testbin"
)

const activatedStack = `
services:
  web:
    command: [WORKER, -mode, serve, -ready]
    workers: 2
    readyWhen: ready
    listen: ADDR
`

// TestSocketActivationUnderSystemdSocketActivate: systemd's own tool binds
// the address and starts recluster on the first connection, which is
// answered; recluster binds nothing of its own.
func TestSocketActivationUnderSystemdSocketActivate(t *testing.T) {
	tool, err := exec.LookPath("systemd-socket-activate")
	if err != nil {
		t.Skip("SKIPPED LOUDLY: systemd-socket-activate is not installed (Debian's systemd package has it); TestSocketActivationRestartRefusesNothing plays its part")
	}
	addr := testbin.FreeAddr(t)
	dir := stack(t, strings.Replace(activatedStack, "ADDR", addr, 1))
	args := []string{"-l", addr, "--fdname=web"}
	for _, kv := range testEnv(t) {
		if k, _, _ := strings.Cut(kv, "="); k == "PATH" || k == "XDG_RUNTIME_DIR" || k == "NO_COLOR" || k == "HOME" {
			args = append(args, "-E", kv)
		}
	}
	cmd := exec.Command(tool, append(args, testbin.Recluster(t), "up", "-f", filepath.Join(dir, "recluster.yml"))...)
	cmd.Dir = dir
	out, _ := os.Create(filepath.Join(dir, "out.txt"))
	defer out.Close()
	cmd.Stdout = out
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	// The tool says when it listens, before it starts anything; then it
	// hands its stderr to recluster, whose lines go on to the file.
	lines := bufio.NewScanner(stderr)
	if !lines.Scan() || lines.Text() != "Listening on "+addr+" as 3." {
		t.Fatalf("systemd-socket-activate said %q", lines.Text())
	}
	// Owned by the test; copies the rest until the tool's stderr closes.
	go func() {
		for lines.Scan() {
			fmt.Fprintln(out, lines.Text())
		}
	}()
	l := load.Start(addr, load.Options{Conns: 1})
	if !l.WaitServed(1, deadline) {
		t.Fatalf("the first connection was not answered: %v", l.Finish().Failures)
	}
	if r := l.Finish(); r.Failed() > 0 {
		t.Errorf("failures: %v", r.Failures)
	}
	logged, _ := os.ReadFile(filepath.Join(dir, "out.txt"))
	if !strings.Contains(string(logged), fmt.Sprintf(`given a listening socket (socket activation): fd 3 (%s, named "web")`, addr)) {
		t.Errorf("up did not say it used the socket it was given:\n%s", logged)
	}
	if n := listeners(t, addr); n != 1 {
		t.Errorf("%d sockets listen on %s, want the one systemd-socket-activate bound", n, addr)
	}
}

// TestSocketActivationRestartRefusesNothing plays systemd: it holds the
// socket and starts recluster on it three times, under load; the
// connections of each gap wait in the backlog and none fails.
func TestSocketActivationRestartRefusesNothing(t *testing.T) {
	addr, sock := activationSocket(t)
	dir := stack(t, strings.Replace(activatedStack, "ADDR", addr, 1))

	start := func(name string) *upProcess {
		env := append(testEnv(t), "LISTEN_FDS=1", "LISTEN_FDNAMES="+name)
		// LISTEN_PID is recluster's own pid: the shell's, which exec keeps.
		cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ exec "$0" up`, testbin.Recluster(t))
		return startCmd(t, cmd, dir, env, []*os.File{sock})
	}

	l := load.Start(addr, load.Options{Conns: 4})
	for i := 0; i < 2; i++ {
		u := start("web")
		u.waitLine(`every service is ready`)
		if !l.WaitServed(200, deadline) {
			t.Fatalf("run %d: nothing served: %v", i, l.Snapshot().Failures)
		}
		u.cmd.Process.Signal(syscall.SIGTERM)
		if err := u.waitExit(); err != nil {
			t.Fatalf("run %d: up: %v\n%s", i, err, u.output())
		}
	}
	// The last connections wait for a third recluster.
	u := start("web")
	u.waitLine(`every service is ready`)
	l.WaitServed(50, deadline)
	if r := l.Finish(); r.Failed() > 0 {
		t.Errorf("%d requests failed across restarts: %v %v", r.Failed(), r.Failures, r.Examples)
	}
}

// TestAnInheritedSocketThatMatchesNothingIsRefused names it.
func TestAnInheritedSocketThatMatchesNothingIsRefused(t *testing.T) {
	addr, sock := activationSocket(t)
	dir := stack(t, strings.Replace(activatedStack, "ADDR", testbin.FreeAddr(t), 1))
	env := append(testEnv(t), "LISTEN_FDS=1", "LISTEN_FDNAMES=stray")
	u := startCmd(t, exec.Command("sh", "-c", `LISTEN_PID=$$ exec "$0" up`, testbin.Recluster(t)), dir, env, []*os.File{sock})
	want := fmt.Sprintf(`inherited socket(s) fd 3 (%s, named "stray") match no listen or proxy address`, addr)
	if err := u.waitExit(); err == nil || !strings.Contains(u.output(), want) {
		t.Errorf("up: %v\n%s\nwant %q", err, u.output(), want)
	}
}

// listeners counts the sockets listening on addr, from /proc/net/tcp.
func listeners(t *testing.T, addr string) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && f[3] == "0A" && strings.HasSuffix(f[1], fmt.Sprintf(":%04X", p)) {
			n++
		}
	}
	return n
}

// activationSocket is a listening socket as systemd would pass it: its
// address, and its file to hand a process as fd 3. Both close with the
// test.
func activationSocket(t *testing.T) (string, *os.File) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	sock, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	return ln.Addr().String(), sock
}
