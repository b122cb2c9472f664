package runner

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/recluster/recluster/internal/osproc"
)

// State is a worker's state, as `status` shows it.
type State int

const (
	Starting State = iota
	Ready
	Stopping
	// Backoff is a slot waiting to respawn its worker (no process).
	Backoff
	// Exited is a slot whose worker exited and is not to run again (a
	// task's, or one that restarts on failure and exited 0).
	Exited
)

func (s State) String() string {
	switch s {
	case Starting:
		return "starting"
	case Ready:
		return "ready"
	case Stopping:
		return "stopping"
	case Backoff:
		return "backoff"
	case Exited:
		return "exited"
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// worker is one process of one generation, owned by its cluster's loop.
type worker struct {
	ref     WorkerRef
	gen     *generation
	proc    Process // nil when it could not start
	pid     int
	state   State
	started time.Time
	status  string // its last STATUS= text
	// stopAsked: recluster asked it to stop, so its exit is no crash.
	stopAsked  bool
	signalled  bool // its stop signal went (after a drain, for a proxied worker)
	readyTimer *time.Timer
	// proving is set while a new worker of a reload has been ready for
	// less than minReady: it neither counts as ready nor serves yet.
	proving    *time.Timer
	killTimer  *time.Timer
	drainTimer *time.Timer
	// port is its PORT, for a proxied service; listening is where it was
	// seen listening, when readiness looked.
	port      int
	listening string
	// killed says how its stop ended in SIGKILL, and cut how many
	// requests or connections its end cut, for the reload's answer.
	killed string
	cut    int
	// env is its environment, for its exec probes.
	env []string
	// probeCtx ends its probes' goroutines (endProbes, once it exits);
	// health is what they last said, rss its memory when last looked
	// at, and sick why it is being replaced (probe.go).
	probeCtx      context.Context
	endProbes     context.CancelFunc
	healthProbing bool
	health        *HealthStatus
	rss           int64
	sick          string
}

// backendAddr is where the proxy reaches the worker: where it was seen
// listening (an app that binds ::1 only is reached there), else
// 127.0.0.1:PORT.
func (w *worker) backendAddr() string {
	if a := loopback(w.listening); a != "" {
		return a
	}
	return "127.0.0.1:" + strconv.Itoa(w.port)
}

// loopback turns a listening address into one to connect to: every
// interface (0.0.0.0, ::) is reached on loopback.
func loopback(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	switch host {
	case "0.0.0.0", "":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// spawn starts one worker of gen in slot id. A worker that cannot start
// at all is reported through the same exit path as one that dies, so that
// every failure is handled in one place.
func (c *cluster) spawn(gen *generation, id int) *worker {
	spec := gen.spec
	w := &worker{ref: WorkerRef{Service: c.name, ID: id, Generation: gen.num}, gen: gen, started: time.Now()}
	c.live[w] = struct{}{}
	gen.live[w] = struct{}{}
	c.everStarted = true
	env := append(append([]string(nil), spec.Env...),
		"WORKER_ID="+strconv.Itoa(id), "RECLUSTER_SERVICE="+c.name, "RECLUSTER_GENERATION="+strconv.Itoa(gen.num))
	var portErr error
	if spec.Proxy != nil {
		// Its own PORT replaces any other: runtimes differ on which of
		// two entries they read.
		w.port, portErr = c.freePort()
		env = append(withoutVar(env, "PORT"), "PORT="+strconv.Itoa(w.port))
	}
	w.env = env
	stdout, stderr := c.opts.Output.Open(w.ref)
	if p := spec.ReadyProbe; p != nil && p.Output != "" {
		stdout, stderr = c.matchOutput(w, p, stdout, stderr)
	}
	argv, err := spec.Command.Argv(func(k string) string { return osproc.Getenv(env, k) })
	if err == nil && portErr != nil {
		err = fmt.Errorf("choosing a PORT: %w", portErr)
	}
	if err == nil && c.resourceShort() {
		err = errResourceShort
	}
	var proc Process
	if err == nil {
		proc, err = c.opts.Starter.Start(StartSpec{
			Worker:      w.ref,
			Argv:        argv,
			Dir:         spec.Dir,
			Env:         env,
			Listeners:   gen.lease.files[:len(spec.Listen)],
			Port:        w.port,
			Names:       listenNames(spec),
			ReadyWhen:   spec.ReadyWhen,
			Stdout:      stdout,
			Stderr:      stderr,
			StopSignal:  spec.StopSignal,
			StopTimeout: spec.StopTimeout,
			Notify: func(n Notification) {
				c.events <- noteEvent{w, n}
			},
		})
	} else {
		stdout.Close()
		stderr.Close()
	}
	if err != nil {
		// Handled as an exit once the loop is done with what it is doing:
		// queued in the loop's own memory, not by a goroutine each, which
		// a scale to thousands under a process limit made by the
		// thousand.
		c.failedStarts = append(c.failedStarts, exitEvent{w, ExitStatus{Code: -1, Err: err}})
		if outOfResources(err) {
			c.resourceShortAt = time.Now()
		}
		return w
	}
	w.proc, w.pid = proc, proc.Pid()
	// Owned by the loop: ends when the worker's group is gone, and run
	// does not return before it has received the exit.
	go func() {
		st := proc.Wait()
		c.events <- exitEvent{w, st}
	}()
	c.emit(EventSpawned, w, "")
	if spec.ReadyWhen == "started" || spec.ReadyWhen == "" {
		c.markReady(w)
		return w
	}
	w.readyTimer = c.after(spec.ReadyTimeout, readyTimeoutEvent{w})
	if p := spec.ReadyProbe; p != nil && p.Output == "" {
		c.startProbing(w, p, false)
	}
	return w
}

func listenNames(spec *serviceSpec) []string {
	names := make([]string, len(spec.Listen))
	for i, l := range spec.Listen {
		names[i] = l.Name
	}
	return names
}

// freePort picks a port for a proxied worker: one the kernel has free now
// and no live worker of this service holds. It fails only when the kernel
// has none to give, or recluster no descriptor to ask with.
func (c *cluster) freePort() (int, error) {
	if c.ports == nil {
		c.ports = map[int]bool{}
	}
	for tries := 0; ; tries++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if !c.ports[port] || tries > 100 {
			c.ports[port] = true
			return port, nil
		}
	}
}

// stopTimer stops t, if there is one.
func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}
