package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/recluster/recluster/logmux"
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
func (f *fakeController) Reload(_ context.Context, n []string) (Outcome, error) {
	return Outcome{}, f.record("reload", n)
}
func (f *fakeController) Restart(_ context.Context, n []string) error { return f.record("restart", n) }
func (f *fakeController) Start(_ context.Context, n []string) error   { return f.record("start", n) }
func (f *fakeController) Stop(_ context.Context, n []string) error    { return f.record("stop", n) }
func (f *fakeController) Scale(_ context.Context, c map[string]int) error {
	return f.record("scale", []string{fmt.Sprint(c["api"])})
}
func (f *fakeController) Status(context.Context) ([]ServiceStatus, error) {
	return []ServiceStatus{{Name: "api", Generation: 3, Workers: []WorkerStatus{{ID: 0, Pid: 42, State: "ready", Generation: 3}}}}, nil
}

// serve runs a server on a real socket in dir and returns a client.
func serve(t *testing.T, dir string, ctl Controller, logs Logs) *Client {
	t.Helper()
	c, _ := serveWith(t, dir, ctl, logs, nil)
	return c
}

func serveWith(t *testing.T, dir string, ctl Controller, logs Logs, tune func(*Server)) (*Client, *Server) {
	t.Helper()
	sock := filepath.Join(dir, "control.sock")
	os.Chmod(dir, 0o700) // the client talks only through a private folder
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(ctl, logs, Info{Pid: 7, Config: "/x/recluster.yml"}, func(context.Context) error { return nil })
	if tune != nil {
		tune(srv)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	return NewClient("/x/recluster.yml", Paths{Socket: sock}), srv
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
	for _, sentinel := range []error{ErrUnknownService, ErrSuperseded, ErrStopped, ErrWorkerFailed, ErrInvalidConfig} {
		ctl.err = fmt.Errorf("api: %w", sentinel)
		_, err := c.Reload(ctx, []string{"api"})
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
	c := NewClient("/some/recluster.yml", Paths{Socket: filepath.Join(t.TempDir(), "none.sock")})
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
	if sock := os.Getenv("CONTROL_TEST_SQUAT"); sock != "" {
		// A squatter: answers every request as if it were recluster, and
		// says which it got.
		ln, err := net.Listen("unix", sock)
		if err != nil {
			fmt.Println("listen:", err)
			os.Exit(1)
		}
		os.Chmod(sock, 0o777)
		fmt.Println("listening")
		http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Println("GOT", r.URL.Path)
			w.Write([]byte(`{"ok":true,"services":[{"name":"\u001b[2Jpwned"}]}`))
		}))
	}
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
	top, err := os.MkdirTemp("", "recluster-peer-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(top)
	os.Chmod(top, 0o755)
	dir := filepath.Join(top, "run")
	os.Mkdir(dir, 0o700)
	// A copy of this test binary that uid nobody can run.
	self, _ := os.Executable()
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	client := filepath.Join(top, "client")
	if err := os.WriteFile(client, data, 0o755); err != nil {
		t.Fatal(err)
	}
	c := serve(t, dir, &fakeController{}, logmux.New(&bytes.Buffer{}, logmux.Options{}))
	sock := filepath.Join(dir, "control.sock")
	// Open the folder and the socket to everyone for the length of the
	// foreign call: only the credential check stands.
	os.Chmod(dir, 0o755)
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
	os.Chmod(dir, 0o700)
	os.Chmod(sock, 0o600)
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

// copyOfSelf writes a copy of this test binary that any uid can run.
func copyOfSelf(t *testing.T, dir string) string {
	self, _ := os.Executable()
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "self")
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// squat runs a process as uid nobody that answers on sock, and returns
// what it has printed so far.
func squat(t *testing.T, bin, sock string) func() string {
	cmd := exec.Command(bin)
	cmd.Env = []string{"CONTROL_TEST_SQUAT=" + sock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var out lockedWriter
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "listening") {
		if time.Now().After(deadline) {
			t.Fatalf("the squatter did not listen: %s", out.String())
		}
		// Waiting for a process of another uid to print: no event to
		// wait on but its output, read here.
		time.Sleep(10 * time.Millisecond)
	}
	return out.String
}

type lockedWriter struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// TestClientRefusesASquatter: another user who made the instance's folder
// first, or whose process listens on the socket, is told nothing: the
// client checks the folder, the socket and the peer before it sends.
func TestClientRefusesASquatter(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a process as another uid")
	}
	top, err := os.MkdirTemp("", "recluster-squat-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(top)
	os.Chmod(top, 0o755)
	bin := copyOfSelf(t, top)

	// 1. The folder is the squatter's.
	theirs := filepath.Join(top, "theirs")
	os.Mkdir(theirs, 0o700)
	os.Chown(theirs, 65534, 65534)
	printed := squat(t, bin, filepath.Join(theirs, "control.sock"))
	c := NewClient("/x/recluster.yml", Paths{Socket: filepath.Join(theirs, "control.sock")})
	_, err = c.Status(context.Background())
	if err == nil || !strings.Contains(err.Error(), "belongs to uid 65534") {
		t.Errorf("a squatter's folder: %v", err)
	}
	if strings.Contains(printed(), "GOT") {
		t.Errorf("the squatter got a request: %s", printed())
	}

	// 2. Our folder and a socket file of ours, but the process behind it
	// is the squatter's: only SO_PEERCRED tells.
	open := filepath.Join(top, "open")
	os.Mkdir(open, 0o700)
	os.Chmod(open, 0o777)
	printed = squat(t, bin, filepath.Join(open, "s.sock"))
	ours := filepath.Join(top, "ours")
	os.Mkdir(ours, 0o700)
	sock := filepath.Join(ours, "control.sock")
	if err := os.Rename(filepath.Join(open, "s.sock"), sock); err != nil {
		t.Fatal(err)
	}
	os.Chown(sock, 0, 0)
	os.Chmod(sock, 0o600)
	c = NewClient("/x/recluster.yml", Paths{Socket: sock})
	_, err = c.Reload(context.Background(), nil)
	if err == nil || !errors.Is(err, ErrForeignPeer) {
		t.Errorf("a squatter's process: %v", err)
	}
	if strings.Contains(printed(), "GOT") {
		t.Errorf("the squatter got a request: %s", printed())
	}
}

// TestRunFolderIsRefusedNotRepaired: a folder open to others, or a lock
// planted as a symlink, stops `up` with what is wrong, and nothing is
// changed.
func TestRunFolderIsRefusedNotRepaired(t *testing.T) {
	tmp := t.TempDir()
	p, _ := PathsFor("/x/recluster.yml", func(k string) string {
		if k == "XDG_RUNTIME_DIR" {
			return tmp
		}
		return ""
	})
	p.Also = nil
	os.MkdirAll(filepath.Dir(p.Dir), 0o700)
	os.Mkdir(p.Dir, 0o700)
	os.Chmod(p.Dir, 0o755)
	err := p.Ensure()
	if err == nil || !strings.Contains(err.Error(), "other users may use it") {
		t.Errorf("an open folder: %v", err)
	}
	if st, _ := os.Stat(p.Dir); st.Mode().Perm() != 0o755 {
		t.Errorf("the folder was changed to %v", st.Mode())
	}
	os.Chmod(p.Dir, 0o700)
	if err := p.Ensure(); err != nil {
		t.Fatal(err)
	}
	victim := filepath.Join(tmp, "victim")
	os.WriteFile(victim, []byte("precious\n"), 0o600)
	os.Symlink(victim, p.Lock)
	if _, err := p.TakeLock(); err == nil || !strings.Contains(err.Error(), "symlink") {
		t.Errorf("a symlinked lock: %v", err)
	}
	if data, _ := os.ReadFile(victim); string(data) != "precious\n" {
		t.Errorf("the symlink's target was changed: %q", data)
	}
	os.Remove(p.Lock)
	os.WriteFile(p.Lock, nil, 0o644)
	if _, err := p.TakeLock(); err == nil || !strings.Contains(err.Error(), "other users may use it") {
		t.Errorf("a lock others may write: %v", err)
	}
}

// TestSecondUpIsRefusedWhateverTheEnvironment: an instance holds its lock
// in every place a command could look, and a client in another setting
// finds its socket.
func TestLockIsHeldInEveryPlace(t *testing.T) {
	xdg, tmpdir := t.TempDir(), t.TempDir()
	withXDG, _ := PathsFor("/x/recluster.yml", func(k string) string {
		return map[string]string{"XDG_RUNTIME_DIR": xdg, "TMPDIR": tmpdir}[k]
	})
	without, _ := PathsFor("/x/recluster.yml", func(k string) string {
		return map[string]string{"TMPDIR": tmpdir}[k]
	})
	if without.Dir == withXDG.Dir || !contains(withXDG.Also, without.Dir) {
		t.Fatalf("the places do not meet: %v / %v", withXDG, without)
	}
	if err := withXDG.Ensure(); err != nil {
		t.Fatal(err)
	}
	l, err := withXDG.TakeLock()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	without.Ensure()
	var re *RunningError
	if _, err := without.TakeLock(); !errors.As(err, &re) {
		t.Errorf("an up without XDG_RUNTIME_DIR was not refused: %v", err)
	}
	serve(t, withXDG.Dir, &fakeController{}, logmux.New(&bytes.Buffer{}, logmux.Options{}))
	l.Advertise(withXDG.Socket)
	if _, err := NewClient("/x/recluster.yml", without).Status(context.Background()); err != nil {
		t.Errorf("a client without XDG_RUNTIME_DIR did not find the instance: %v", err)
	}
}

// TestStalledBodiesAreCutOff: connections that send a header and then
// nothing are closed after the body timeout, and never take more than
// MaxConns at once, so other clients are still served.
func TestStalledBodiesAreCutOff(t *testing.T) {
	dir := t.TempDir()
	c, _ := serveWith(t, dir, &fakeController{}, logmux.New(&bytes.Buffer{}, logmux.Options{}), func(s *Server) {
		s.bodyTimeout = 200 * time.Millisecond
	})
	c.StatusTimeout = 60 * time.Second
	sock := filepath.Join(dir, "control.sock")
	var conns []net.Conn
	for i := 0; i < 3*MaxConns; i++ {
		conn, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		conn.Write([]byte("POST /v1/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"))
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// Each stalled request is answered (with an error) and closed after
	// the body timeout; then the others get their turn, and so does a
	// real client.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := c.Status(ctx); err != nil {
		t.Fatalf("a client behind %d stalled ones: %v", len(conns), err)
	}
	conns[0].SetReadDeadline(time.Now().Add(30 * time.Second))
	reply, _ := io.ReadAll(conns[0])
	if !strings.Contains(string(reply), "400") {
		t.Errorf("a stalled body got %q", reply)
	}
}

// TestFollowersLeaveRoomForCommands: with more `logs -f` followers than
// the server takes, each past MaxFollowers is refused at once, and
// commands (down among them) are answered at once all the while.
func TestFollowersLeaveRoomForCommands(t *testing.T) {
	ctl := &fakeController{}
	c := serve(t, t.TempDir(), ctl, logmux.New(&bytes.Buffer{}, logmux.Options{}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	following := make(chan error, MaxConns)
	for range MaxConns {
		// Owned by the test; ends when ctx does, or the follow is refused.
		go func() {
			following <- c.Logs(ctx, nil, 0, true, func(LogEvent) error { return nil })
		}()
	}
	// Every one past MaxFollowers is refused, and says why.
	for range MaxConns - MaxFollowers {
		err := <-following
		if err == nil || !strings.Contains(err.Error(), "followers already") {
			t.Fatalf("a follower past the bound: %v", err)
		}
	}
	quick, stop := context.WithTimeout(context.Background(), 2*time.Second)
	defer stop()
	for range 2 * MaxConns {
		if _, err := c.Status(quick); err != nil {
			t.Fatalf("status with %d followers: %v", MaxFollowers, err)
		}
	}
	if err := c.Down(quick); err != nil {
		t.Fatalf("down with %d followers: %v", MaxFollowers, err)
	}
}

// TestARacingLockNamesNoPidZero: a lock taken but not yet written says
// the instance is starting, not that it runs as pid 0.
func TestARacingLockNamesNoPidZero(t *testing.T) {
	if msg := (&RunningError{}).Error(); strings.Contains(msg, "pid 0") || !strings.Contains(msg, "already starting") {
		t.Errorf("%q", msg)
	}
}

// TestALogLineIsControlsOwnOnTheWire: GET /v1/logs sends control's
// LogLine, whose text is a JSON string (not logmux's base64 bytes), and
// the client turns it back into the line logmux formats.
func TestALogLineIsControlsOwnOnTheWire(t *testing.T) {
	mux := logmux.New(&bytes.Buffer{}, logmux.Options{})
	out, _ := mux.Open(logmux.Source{Service: "api", ID: 1, Generation: 2})
	io.WriteString(out, "hello, wire\n")
	mux.Flush(context.Background())
	c := serve(t, t.TempDir(), &fakeController{}, mux)
	var got []*LogLine
	err := c.Logs(context.Background(), []string{"api"}, 10, false, func(ev LogEvent) error {
		got = append(got, ev.Line)
		return nil
	})
	if err != nil || len(got) != 1 {
		t.Fatalf("logs: %v, %d lines", err, len(got))
	}
	l := got[0]
	if l.Service != "api" || l.Worker != 1 || l.Generation != 2 || l.Text != "hello, wire" {
		t.Fatalf("the line on the wire: %+v", l)
	}
	raw, _ := json.Marshal(l)
	if !strings.Contains(string(raw), `"text":"hello, wire"`) {
		t.Errorf("the text is not a string on the wire: %s", raw)
	}
	if back := l.Line(); string(back.Text) != "hello, wire" || back.Source.ID != 1 {
		t.Errorf("back to logmux: %+v", back)
	}
}
