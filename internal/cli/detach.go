package cli

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/recluster/recluster/config"
	"github.com/recluster/recluster/internal/control"
	"github.com/recluster/recluster/internal/logfile"
)

// `up -d`: the command line starts a second `up` in a session of its own
// (the background instance) and waits, on a pipe the instance inherits,
// for one word: ready, or failed with why. The background instance writes
// its log stream to a rotated file; `logs`, `status` and `down` reach it
// through its control socket like any `up`.

// detachedEnv names the fd of the pipe in the background instance.
const detachedEnv = "RECLUSTER_DETACHED_FD"

// passedListenEnv, in the background instance, is the pid of the `up -d`
// that passed its activation sockets on (LISTEN_PID names it).
const passedListenEnv = "RECLUSTER_LISTEN_FROM"

// activationFiles are the sockets this process was given by socket
// activation, at fds 3 and on; none when LISTEN_PID is another's.
func activationFiles(getenv func(string) string) []*os.File {
	n, err := strconv.Atoi(getenv("LISTEN_FDS"))
	if err != nil || n < 1 || n > 4096 || getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
		return nil
	}
	files := make([]*os.File, n)
	for i := range files {
		files[i] = os.NewFile(uintptr(3+i), "activation")
	}
	return files
}

// listenPID is the pid that LISTEN_PID must name for this process to
// take the sockets: its own, or, in a background instance, that of the
// `up -d` that passed them on.
func listenPID(getenv func(string) string) int {
	from := getenv(passedListenEnv)
	os.Unsetenv(passedListenEnv) // the workers must not see it
	if from != "" && from == strconv.Itoa(os.Getppid()) && from == getenv("LISTEN_PID") {
		return os.Getppid()
	}
	return os.Getpid()
}

// logPath is where the background instance writes its log stream.
func logPath(cfg *config.Config, paths control.Paths) string {
	if cfg.LogFile != "" {
		return cfg.LogFile
	}
	return filepath.Join(paths.Dir, "up.log")
}

// detachedChild is the background instance's side of the pipe. Until it
// is ready, any failure ends it (as --exit-on-failure would), so that
// `up -d` either returns with everything ready or leaves nothing running.
type detachedChild struct {
	mu       sync.Mutex
	pipe     *os.File // nil once it said ready or failed
	notReady chan struct{}
}

// detachedChildFromEnv is the pipe of a background instance, or nil.
func detachedChildFromEnv(getenv func(string) string) *detachedChild {
	v := getenv(detachedEnv)
	if v == "" {
		return nil
	}
	os.Unsetenv(detachedEnv) // the workers must not see it
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil
	}
	return &detachedChild{pipe: os.NewFile(uintptr(fd), "up -d"), notReady: make(chan struct{})}
}

// failingFast says whether a failure must still end the instance.
func (d *detachedChild) failingFast() bool {
	if d == nil {
		return false
	}
	select {
	case <-d.notReady:
		return false
	default:
		return true
	}
}

func (d *detachedChild) ready() { d.say("ready\n", true) }

func (d *detachedChild) failed(err error) {
	d.say("failed\n"+err.Error()+"\n", false)
}

func (d *detachedChild) say(msg string, ready bool) {
	if d == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pipe == nil {
		return
	}
	if ready {
		close(d.notReady)
	}
	d.pipe.SetWriteDeadline(time.Now().Add(5 * time.Second))
	d.pipe.WriteString(msg)
	d.pipe.Close()
	d.pipe = nil
}

// openBackgroundLog is the background instance's stdout and stderr.
func openBackgroundLog(cfg *config.Config, paths control.Paths) (*logfile.File, error) {
	path := logPath(cfg, paths)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	return logfile.Open(path, cfg.LogSize)
}

// startDetached is `up -d` on the command line: it starts the background
// instance with the same arguments and waits for its word.
func startDetached(io IO, cfg *config.Config, paths control.Paths, args []string) error {
	lock, err := takeLock(cfg, paths)
	if err != nil {
		return err
	}
	lock.Unlock() // the background instance takes it
	self, err := os.Executable()
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	null, err := os.Open(os.DevNull)
	if err != nil {
		w.Close()
		return err
	}
	defer null.Close()
	wd, err := io.Getwd()
	if err != nil {
		w.Close()
		return err
	}
	cmd := exec.Command(self, append([]string{"up", "-f", cfg.Path}, withoutDetach(args)...)...)
	cmd.Dir = wd
	// Sockets given to this recluster (socket activation) go on to the
	// background instance as fds 3 and on, as they came; its pid is not
	// known before it starts, so LISTEN_PID names this one and the
	// instance checks that it is its parent's.
	passed := activationFiles(io.Getenv)
	env := os.Environ()
	if len(passed) > 0 {
		env = append(env, passedListenEnv+"="+strconv.Itoa(os.Getpid()))
	}
	cmd.Env = append(env, detachedEnv+"="+strconv.Itoa(3+len(passed)))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, null, null
	cmd.ExtraFiles = append(passed, w)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return err
	}
	w.Close()
	exited := make(chan error, 1)
	// Owned by startDetached; ends when the instance exits, which the
	// pipe's EOF precedes or follows.
	go func() { exited <- cmd.Wait() }()

	// Ctrl-C while waiting ends the instance too: nothing is left behind.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	word := make(chan string, 1)
	// Owned by startDetached; ends at the pipe's EOF.
	go func() {
		data, _ := readBounded(r, 64<<10)
		word <- string(data)
	}()
	var said string
	select {
	case said = <-word:
	case sig := <-sigs:
		cmd.Process.Signal(syscall.SIGTERM)
		<-exited
		return fmt.Errorf("%s: the background instance was stopped before it was ready", signalName(sig))
	}
	if said == "ready\n" {
		return printBackground(io, cfg, paths, cmd.Process.Pid)
	}
	err = <-exited // a failed instance stops its workers first
	why, ok := strings.CutPrefix(said, "failed\n")
	if !ok {
		why = fmt.Sprintf("the background instance ended (%v) before it was ready", err)
		if tail := lastLines(logPath(cfg, paths), 10); tail != "" {
			why += "; the end of its log:\n" + tail
		}
	}
	return &exitError{code: ExitFailed, msg: strings.TrimRight(why, "\n") + "\nnothing is left running"}
}

// withoutDetach drops -d and --detach from up's arguments.
func withoutDetach(args []string) []string {
	var out []string
	for i, a := range args {
		if a == "--" {
			return append(out, args[i:]...)
		}
		switch strings.TrimLeft(a, "-") {
		case "d", "detach", "d=true", "detach=true":
			continue
		}
		out = append(out, a)
	}
	return out
}

// printBackground prints what runs in the background and how to reach it.
func printBackground(io IO, cfg *config.Config, paths control.Paths, pid int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := control.NewClient(cfg.Path, paths).Status(ctx)
	if err != nil {
		return fmt.Errorf("the background instance (pid %d) is ready but does not answer: %w", pid, err)
	}
	workers := 0
	for _, s := range st {
		workers += len(s.Workers)
	}
	fmt.Fprintf(io.Out, "recluster is running %s in the background (pid %d): %s, %s ready\n", cfg.Path, pid, plural(len(st), "service"), plural(workers, "worker"))
	for _, s := range st {
		addrs := append([]string(nil), s.Listen...)
		if s.Proxy != "" {
			addrs = append(addrs, s.Proxy)
		}
		line := fmt.Sprintf("  %-12s %s", printable(s.Name), plural(len(s.Workers), "worker"))
		if len(addrs) > 0 {
			line += " on " + strings.Join(addrs, ", ")
		}
		if s.State != "running" {
			line += " (" + printable(s.State) + ")"
		}
		fmt.Fprintln(io.Out, line)
	}
	fmt.Fprintf(io.Out, "log: %s; follow it with `recluster logs -f`, stop with `recluster down`\n", logPath(cfg, paths))
	return nil
}

// lastLines is the end of a file, for when the instance could not say why
// it ended.
func lastLines(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(io.LimitReader(f, 8<<20))
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// readBounded reads what the instance says, bounded: it is another
// process. (Inside startDetached, io names its IO parameter.)
func readBounded(r io.Reader, n int64) ([]byte, error) {
	return io.ReadAll(io.LimitReader(r, n))
}
