package osproc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/recluster/recluster/config"
	"golang.org/x/sys/unix"
)

// outputChunk is the most of a worker's output read at once: large, so a
// busy worker's lines cross into recluster, and out to the terminal, in
// few system calls. A quiet worker is read quietChunk at a time, and
// reads with a big buffer only while its reads fill the small one; both
// come from pools shared by every worker (idleread.go), so 2,000 workers
// hold no buffers while they are quiet.
const (
	outputChunk = 256 << 10
	quietChunk  = 16 << 10
)

var bigOutputBuffers = sync.Pool{New: func() any { b := make([]byte, outputChunk); return &b }}

// outputDrainCap bounds how long Wait waits for a worker's pipes to reach
// end of file after its process group is gone. Only a process that left
// the group (setsid) and kept the pipe can hold them open that long.
const outputDrainCap = 2 * time.Second

// Starter starts workers as real processes: each in its own process group,
// with the parent-death signal, its output on pipes recluster owns, and the
// sockets and notify channels of README.md's worker protocol.
type Starter struct {
	// runDir is a private folder (0700) for notify sockets.
	runDir string
	// groups, when set, records each worker's process group so that the
	// next run can end what a crashed recluster left.
	groups *GroupLog

	seq     atomic.Int64
	watcher listenWatcher
}

// NewStarter returns a starter whose notify sockets live in runDir.
func NewStarter(runDir string, groups *GroupLog) *Starter {
	return &Starter{runDir: runDir, groups: groups}
}

// Close waits for the starter's own goroutines; call it after
// every process it started has been waited for.
func (s *Starter) Close() { s.watcher.wait() }

type osProcess struct {
	spec StartSpec
	proc *os.Process
	pid  int
	s    *Starter

	mu     sync.Mutex // guards the fields below against Signal racing the shim and Wait
	gone   bool
	stopAt time.Time // when the first stop (or kill) signal was sent
	// inShim is true while the process is still the exec shim;
	// held is the signal asked for meanwhile, sent once the exec is done.
	inShim bool
	held   syscall.Signal
	// kill signals a process group; syscall.Kill, but for tests.
	kill func(pid int, sig syscall.Signal) error

	outputs sync.WaitGroup // the stdout and stderr copiers
	pipes   []*os.File     // read ends, closed once drained
	notes   sync.WaitGroup // goroutines that may call spec.Notify
	notify  *net.UnixConn
	watch   *listenWait
	execErr chan error // the shim's verdict on the exec, when there is a shim
}

func (p *osProcess) Pid() int { return p.pid }

// shimDone records that the exec shim has exec'd (or ended), and sends the
// stop signal held meanwhile.
func (p *osProcess) shimDone() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inShim = false
	if p.held != 0 && !p.gone {
		p.kill(-p.pid, p.held)
	}
}

// Signal sends sig to the worker's group. While the process is still the
// exec shim (shellShim), a stop signal is held and sent once the exec is
// done, so that it reaches the worker and its handler rather than the
// shell, which would die of it before the worker ran. SIGKILL goes at
// once: the kernel delivers it whatever the process does.
func (p *osProcess) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gone {
		return nil
	}
	if p.stopAt.IsZero() {
		p.stopAt = time.Now()
	}
	if p.inShim && sig != syscall.SIGKILL {
		p.held = sig
		return nil
	}
	if err := p.kill(-p.pid, sig); err != nil && err != syscall.ESRCH {
		return err
	}
	return nil
}

// Start forks and execs one worker. Without inherited sockets it returns
// once the program runs (the exec succeeded) or with the reason it could
// not; with them the worker starts through the shim, Start returns once
// the shim runs, and a failed exec of the command comes out of Wait as
// the worker's exit (follow reads the shim's result on the side).
func (s *Starter) Start(spec StartSpec) (proc Process, err error) {
	p := &osProcess{spec: spec, s: s, kill: syscall.Kill}
	var parentEnds, childEnds []*os.File
	defer func() {
		for _, f := range childEnds {
			f.Close()
		}
		if err != nil {
			for _, f := range parentEnds {
				f.Close()
			}
			if p.notify != nil {
				p.notify.Close()
			}
			spec.Stdout.Close()
			spec.Stderr.Close()
		}
	}()
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err == nil {
			parentEnds, childEnds = append(parentEnds, r), append(childEnds, w)
		}
		return
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	childEnds = append(childEnds, devnull)
	outR, outW, err := pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := pipe()
	if err != nil {
		return nil, err
	}
	growPipe(outW)
	growPipe(errW)
	files := append([]*os.File{devnull, outW, errW}, spec.Listeners...)
	env := append([]string(nil), spec.Env...)
	if n := len(spec.Listeners); n > 0 {
		env = append(env, "LISTEN_FDS="+strconv.Itoa(n), "LISTEN_FDNAMES="+strings.Join(spec.Names, ":"))
	}
	var readyR *os.File
	if spec.ReadyWhen == config.ReadyNotified {
		addr := filepath.Join(s.runDir, fmt.Sprintf("n%d-%d", os.Getpid(), s.seq.Add(1)))
		os.Remove(addr)
		p.notify, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
		if err != nil {
			return nil, fmt.Errorf("notify socket: %w", err)
		}
		passCredentials(p.notify)
		var readyW *os.File
		if readyR, readyW, err = pipe(); err != nil {
			return nil, err
		}
		env = append(env, "NOTIFY_SOCKET="+addr, "RECLUSTER_READY_FD="+strconv.Itoa(len(files)))
		files = append(files, readyW)
	}
	path, argv := "", spec.Argv
	if path, err = LookPath(spec.Argv[0], Getenv(env, "PATH"), spec.Dir); err != nil {
		return nil, err
	}
	var shimR *os.File
	if len(spec.Listeners) > 0 {
		var shimW *os.File
		if shimR, shimW, err = pipe(); err != nil {
			return nil, err
		}
		path, argv = shellShim(len(files), spec.Argv)
		files = append(files, shimW)
	}
	p.proc, err = startProcess(path, argv, &os.ProcAttr{Dir: spec.Dir, Env: env, Files: files})
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", spec.Argv[0], unwrap(err))
	}
	p.pid = p.proc.Pid
	for _, f := range childEnds {
		f.Close()
	}
	childEnds = nil
	p.follow(outR, errR, shimR, readyR)
	return p, nil
}

// follow starts what watches a process just started: the shim's exec
// result, its output pipes, its readiness (notify socket and ready fd,
// or its listening sockets), and records it in the group log.
func (p *osProcess) follow(outR, errR, shimR, readyR *os.File) {
	if shimR != nil {
		// The shim's error pipe is close-on-exec: EOF with nothing read means
		// the command's exec succeeded. It is read on the side, so that a
		// generation's workers start together rather than one exec at a
		// time; a failure comes out of Wait as the worker's exit. The
		// goroutine ends at EOF, by the exec or by the shim's exit.
		p.execErr = make(chan error, 1)
		p.inShim = true
		go func() {
			msg, _ := io.ReadAll(shimR)
			shimR.Close()
			p.shimDone()
			if len(msg) > 0 {
				p.execErr <- errors.New(string(msg))
			} else {
				p.execErr <- nil
			}
		}()
	}
	if p.s.groups != nil {
		p.s.groups.add(p.pid)
	}
	p.pipes = []*os.File{outR, errR}
	p.outputs.Add(2)
	go p.copyOutput(outR, p.spec.Stdout)
	go p.copyOutput(errR, p.spec.Stderr)
	if p.notify != nil {
		p.notes.Add(2)
		go p.readNotify()
		go p.readReadyFD(readyR)
	}
	if p.spec.ReadyWhen == config.ReadyListening {
		p.watch = p.s.watcher.add(p.pid, p.spec.Listeners, p.spec.Port)
		p.notes.Add(1)
		go p.awaitListening()
	}
}

// Getenv is name's value in env (NAME=value entries, the last one wins),
// or "".
func Getenv(env []string, name string) string {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == name {
			return v
		}
	}
	return ""
}

// copyOutput moves a worker's output to its log stream in large chunks;
// the stream splits lines. It ends at EOF: every writer of the pipe, the
// worker and anything it forked, has closed it.
func (p *osProcess) copyOutput(r *os.File, w io.Writer) {
	defer p.outputs.Done()
	rc, err := r.SyscallConn()
	if err != nil {
		return
	}
	pool := &smallBuffers
	for {
		b, n, err := readWhenReady(rc, pool, syscall.Read)
		if err != nil || n == 0 {
			return
		}
		w.Write((*b)[:n]) // which copies what it keeps
		full := n == len(*b)
		pool.Put(b)
		switch {
		case full && pool == &smallBuffers: // busy: read in big chunks
			pool = &bigOutputBuffers
		case n < quietChunk: // quiet again
			pool = &smallBuffers
		}
	}
}

// endOfNotify is sent by recluster itself to the worker's notify socket
// once the worker is gone: datagrams are delivered in order, so reading it
// means every message the worker sent has been read.
var endOfNotify = []byte("\x00recluster-end")

// NotifyMax is the longest notification read; the rest of a longer
// datagram is dropped, as systemd drops what does not fit its buffer.
const NotifyMax = 4096

// readNotify reads the worker's datagrams until recluster's own end
// marker. The socket's folder is private to the user, but any process of
// the user could still write to it; as systemd's NotifyAccess= does, a
// datagram counts only when the kernel says its sender is a process of
// the worker's group (senderOK).
func (p *osProcess) readNotify() {
	defer p.notes.Done()
	rc, err := p.notify.SyscallConn()
	if err != nil {
		return
	}
	oob := make([]byte, credSpace)
	refused := false
	for {
		var oobn int
		b, n, err := readWhenReady(rc, &smallBuffers, func(fd int, buf []byte) (int, error) {
			// As net.UnixConn.ReadMsgUnix does, so that no fd sent
			// along could leak into a worker; with room for the
			// credentials only, none can arrive anyway.
			n, on, _, _, err := unix.Recvmsg(fd, buf[:NotifyMax], oob, recvmsgFlags)
			oobn = on
			return n, err
		})
		if err != nil {
			return
		}
		msg := append([]byte(nil), (*b)[:n]...)
		smallBuffers.Put(b)
		sender, known := senderPid(oob[:oobn])
		if string(msg) == string(endOfNotify) && (!known || sender == os.Getpid()) {
			return
		}
		if known && !p.senderOK(sender) {
			if !refused {
				refused = true
				p.spec.Notify(Notification{Notice: fmt.Sprintf("ignored a notification from pid %d, which is not a process of %s (pid %d's group)", sender, p.spec.Worker, p.pid)})
			}
			continue
		}
		if note := parseNotification(msg); note.Ready || note.Stopping || note.HasStatus {
			p.spec.Notify(note)
		}
	}
}

// senderOK accepts the worker's leader and any process of its group.
func (p *osProcess) senderOK(pid int) bool {
	if pid == p.pid {
		return true
	}
	pgid, err := syscall.Getpgid(pid)
	return err == nil && pgid == p.pid
}

func (p *osProcess) readReadyFD(r *os.File) {
	defer p.notes.Done()
	defer r.Close()
	rc, err := r.SyscallConn()
	if err != nil {
		return
	}
	var partial []byte // a line begun by an earlier read
	skipping := false  // the rest of a line too long to keep
	for {
		b, n, err := readWhenReady(rc, &smallBuffers, syscall.Read)
		if err != nil || n == 0 {
			if len(partial) > 0 {
				p.spec.Notify(readyLine(partial))
			}
			return
		}
		data := (*b)[:n]
		for len(data) > 0 {
			line, rest, ended := bytes.Cut(data, []byte{'\n'})
			data = rest
			switch {
			case skipping:
				skipping = !ended
			case len(partial)+len(line) > NotifyMax:
				// A long line still counts once; the rest of it is
				// skipped.
				p.spec.Notify(Notification{Ready: true})
				partial, skipping = nil, !ended
			case !ended:
				partial = append(partial, line...)
			default:
				p.spec.Notify(readyLine(append(partial, line...)))
				partial = nil
			}
		}
		smallBuffers.Put(b)
	}
}

func (p *osProcess) awaitListening() {
	defer p.notes.Done()
	addr, ok := p.watch.await(func(elsewhere string) {
		p.spec.Notify(Notification{Notice: listenNotice(elsewhere, p.spec.Port)})
	})
	if ok {
		p.spec.Notify(Notification{Ready: true, Listening: addr})
	}
}

func (p *osProcess) Wait() ExitStatus {
	awaitExit(p.pid)
	state, err := p.proc.Wait()
	status := ExitStatus{Err: err}
	if err == nil {
		ws := state.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			status = ExitStatus{Code: -1, Signal: ws.Signal()}
		} else {
			status = ExitStatus{Code: ws.ExitStatus()}
		}
	}
	if p.execErr != nil {
		if err := <-p.execErr; err != nil {
			status = ExitStatus{Code: -1, Err: err}
		}
	}
	p.endGroup()
	p.mu.Lock()
	p.gone = true
	p.mu.Unlock()
	if p.s.groups != nil {
		p.s.groups.remove(p.pid)
	}
	if p.watch != nil {
		p.s.watcher.remove(p.watch)
	}
	p.drainOutput()
	if p.notify != nil {
		// Unblocks readNotify after the worker's own datagrams.
		if c, err := net.DialUnix("unixgram", nil, p.notify.LocalAddr().(*net.UnixAddr)); err == nil {
			c.Write(endOfNotify)
			c.Close()
		} else {
			p.notify.Close()
		}
	}
	p.notes.Wait()
	if p.notify != nil {
		p.notify.Close()
		os.Remove(p.notify.LocalAddr().String())
	}
	p.spec.Stdout.Close()
	p.spec.Stderr.Close()
	return status
}

// minDrain is the least time a worker's output gets to be handed on after
// its group is gone, even past its stop deadline.
const minDrain = 100 * time.Millisecond

// drainOutput waits for the output pipes to reach EOF, which they do once
// the group is gone and the log stream has taken every line. Neither is
// certain: a process that escaped the group keeps the pipes open, and a
// log stream that nobody reads takes nothing. So the wait ends at the stop
// deadline (the stop signal's time plus the worker's timeout) or, for a
// worker that was not asked to stop, after outputDrainCap; then the
// streams are abandoned (what they still held is dropped and counted) and
// the pipes closed.
func (p *osProcess) drainOutput() {
	drained := make(chan struct{})
	// Owned by drainOutput; ends once both copiers have, which closing
	// the pipes and abandoning the streams brings about.
	go func() { p.outputs.Wait(); close(drained) }()
	timer := time.NewTimer(p.drainBudget())
	defer timer.Stop()
	select {
	case <-drained:
	case <-timer.C:
		for _, w := range []io.Writer{p.spec.Stdout, p.spec.Stderr} {
			if a, ok := w.(interface{ Abandon() }); ok {
				a.Abandon()
			}
		}
		for _, f := range p.pipes {
			f.Close() // unblocks a copier waiting to read
		}
		<-drained
	}
	for _, f := range p.pipes {
		f.Close()
	}
}

func (p *osProcess) drainBudget() time.Duration {
	p.mu.Lock()
	stopAt := p.stopAt
	p.mu.Unlock()
	if stopAt.IsZero() {
		return outputDrainCap
	}
	return max(time.Until(stopAt.Add(p.spec.StopTimeout)), minDrain)
}

// endGroup stops whatever the leader left behind in its group (children of
// a shell, a cluster's forks), so that a respawn finds its port free and a
// stop is done only when no process of the worker is left.
func (p *osProcess) endGroup() {
	if !groupAlive(p.pid) {
		return
	}
	syscall.Kill(-p.pid, p.spec.StopSignal)
	if !waitGroupGone(p.pid, p.spec.StopTimeout) {
		syscall.Kill(-p.pid, syscall.SIGKILL)
		waitGroupGone(p.pid, 10*time.Second)
	}
}
