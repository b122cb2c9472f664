package control

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/recluster/recluster/logmux"
	"github.com/recluster/recluster/runner"
)

// fakeController records calls and answers with set errors.
type fakeController struct {
	calls []string
	err   error
}

func (f *fakeController) record(op string, names []string) error {
	f.calls = append(f.calls, op+" "+strings.Join(names, ","))
	return f.err
}
func (f *fakeController) Reload(_ context.Context, n []string) error  { return f.record("reload", n) }
func (f *fakeController) Restart(_ context.Context, n []string) error { return f.record("restart", n) }
func (f *fakeController) Start(_ context.Context, n []string) error   { return f.record("start", n) }
func (f *fakeController) Stop(_ context.Context, n []string) error    { return f.record("stop", n) }
func (f *fakeController) Scale(_ context.Context, c map[string]int) error {
	return f.record("scale", []string{fmt.Sprint(c["api"])})
}
func (f *fakeController) Status(context.Context) ([]runner.ServiceStatus, error) {
	return []runner.ServiceStatus{{Name: "api", Generation: 3, Workers: []runner.WorkerStatus{{ID: 0, Pid: 42, State: "ready", Generation: 3}}}}, nil
}

// serve runs a server on a real socket in dir and returns a client.
func serve(t *testing.T, dir string, ctl Controller, logs Logs) *Client {
	t.Helper()
	sock := filepath.Join(dir, "control.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(ctl, logs, Info{Pid: 7, Config: "/x/recluster.yml"}, func(context.Context) error { return nil })
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	return NewClient("/x/recluster.yml", sock)
}

func TestRoutesAndErrorsAcrossTheSocket(t *testing.T) {
	ctl := &fakeController{}
	c := serve(t, t.TempDir(), ctl, logmux.New(&bytes.Buffer{}, logmux.Options{}))
	ctx := context.Background()
	if info, err := c.Info(ctx); err != nil || info.Pid != 7 {
		t.Fatalf("info: %+v %v", info, err)
	}
	st, err := c.Status(ctx)
	if err != nil || len(st) != 1 || st[0].Workers[0].Pid != 42 {
		t.Fatalf("status: %+v %v", st, err)
	}
	c.Reload(ctx, []string{"api"})
	c.Restart(ctx, nil)
	c.Stop(ctx, []string{"a", "b"})
	c.Start(ctx, []string{"a"})
	c.Scale(ctx, map[string]int{"api": 3})
	want := []string{"reload api", "restart ", "stop a,b", "start a", "scale 3"}
	if strings.Join(ctl.calls, "|") != strings.Join(want, "|") {
		t.Errorf("calls %q, want %q", ctl.calls, want)
	}
	for _, sentinel := range []error{runner.ErrUnknownService, runner.ErrSuperseded, runner.ErrStopped} {
		ctl.err = &runner.ServiceError{Service: "api", Err: sentinel}
		err := c.Reload(ctx, []string{"api"})
		if !errors.Is(err, sentinel) || !strings.Contains(err.Error(), "api: ") {
			t.Errorf("%v did not cross the socket: %v", sentinel, err)
		}
	}
}

func TestBadRequestsAreRefused(t *testing.T) {
	dir := t.TempDir()
	c := serve(t, dir, &fakeController{}, logmux.New(&bytes.Buffer{}, logmux.Options{}))
	hc := c.http
	for _, body := range []string{`{"services": "api"}`, `{"nope": 1}`, `{} {}`, `not json`} {
		resp, err := hc.Post("http://recluster/v1/reload", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: status %d", body, resp.StatusCode)
		}
	}
	if err := c.Scale(context.Background(), nil); err == nil || !strings.Contains(err.Error(), "SERVICE=N") {
		t.Errorf("empty scale: %v", err)
	}
}

func TestNotRunningNamesTheConfig(t *testing.T) {
	c := NewClient("/some/recluster.yml", filepath.Join(t.TempDir(), "none.sock"))
	_, err := c.Status(context.Background())
	if !errors.Is(err, ErrNotRunning) || !strings.Contains(err.Error(), "/some/recluster.yml") {
		t.Errorf("got %v", err)
	}
}

func TestForeignPeerIsRefused(t *testing.T) {
	if err := allowPeer(1000, 1000); err != nil {
		t.Errorf("own uid refused: %v", err)
	}
	if err := allowPeer(0, 1000); !errors.Is(err, ErrForeignPeer) {
		t.Errorf("root peer of a user's instance accepted: %v", err)
	}
	if err := allowPeer(65534, 0); !errors.Is(err, ErrForeignPeer) {
		t.Errorf("nobody accepted by root's instance: %v", err)
	}
}

// TestMain lets the test binary act as the foreign client: run with
// CONTROL_TEST_DIAL set, it connects there, asks for /v1/info and prints
// what came back.
func TestMain(m *testing.M) {
	if sock := os.Getenv("CONTROL_TEST_DIAL"); sock != "" {
		c, err := net.Dial("unix", sock)
		if err != nil {
			fmt.Println("dial:", err)
			os.Exit(1)
		}
		c.Write([]byte("GET /v1/info HTTP/1.0\r\nHost: x\r\n\r\n"))
		reply, _ := io.ReadAll(c)
		fmt.Printf("%q\n", reply)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestForeignPeerIsRefusedForReal connects as uid nobody through a socket
// whose file mode would let it in: only the credential check stands.
func TestForeignPeerIsRefusedForReal(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a process as another uid")
	}
	dir, err := os.MkdirTemp("", "recluster-peer-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	// A copy of this test binary that uid nobody can run.
	self, _ := os.Executable()
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	client := filepath.Join(dir, "client")
	if err := os.WriteFile(client, data, 0o755); err != nil {
		t.Fatal(err)
	}
	c := serve(t, dir, &fakeController{}, logmux.New(&bytes.Buffer{}, logmux.Options{}))
	sock := filepath.Join(dir, "control.sock")
	os.Chmod(sock, 0o777)
	run := func(uid uint32) string {
		cmd := exec.Command(client)
		cmd.Env = []string{"CONTROL_TEST_DIAL=" + sock}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("client as uid %d: %v\n%s", uid, err, out)
		}
		return string(out)
	}
	if out := run(65534); out != "\"\"\n" {
		t.Errorf("uid nobody got an answer: %s", out)
	}
	if out := run(0); !strings.Contains(out, "200 OK") {
		t.Errorf("own uid got no answer: %s", out)
	}
	if _, err := c.Info(context.Background()); err != nil {
		t.Errorf("the server stopped serving after refusing a peer: %v", err)
	}
}

func TestPathsAreShortAndPrivate(t *testing.T) {
	deep := "/" + strings.Repeat("a-long-folder/", 40) + "recluster.yml"
	tmp := t.TempDir()
	p, err := PathsFor(deep, func(k string) string {
		if k == "XDG_RUNTIME_DIR" {
			return tmp
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Socket) > 104 {
		t.Errorf("socket path is %d bytes: %s", len(p.Socket), p.Socket)
	}
	if err := p.Ensure(); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p.Dir)
	if st.Mode().Perm() != 0o700 {
		t.Errorf("mode %v", st.Mode())
	}
	other, _ := PathsFor("/elsewhere/recluster.yml", func(string) string { return tmp })
	if other.Dir == p.Dir {
		t.Errorf("two configs share %s", p.Dir)
	}
	// A lock is held by one instance at a time, and names its pid.
	l, err := p.TakeLock()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	// flock locks belong to the open file description: a second open in
	// this process conflicts like another process would.
	_, err = p.TakeLock()
	var re *RunningError
	if !errors.As(err, &re) || re.Pid != os.Getpid() {
		t.Errorf("second lock: %v", err)
	}
}

func TestStaleSocketIsReplaced(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, _ := net.Listen("unix", sock)
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ln2, err := Listen(sock)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer ln2.Close()
	if _, err := Listen(sock); err == nil || !strings.Contains(err.Error(), "another recluster answers") {
		t.Errorf("a live socket was taken over: %v", err)
	}
}
