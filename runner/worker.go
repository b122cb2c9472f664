package runner

import (
	"strconv"
	"syscall"
	"time"
)

// State is a worker's state, as `status` shows it.
type State int

const (
	Starting State = iota
	Ready
	Stopping
	// Backoff is a slot waiting to respawn its worker (no process).
	Backoff
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
	readyTimer *time.Timer
	killTimer  *time.Timer
}

// spawn starts one worker of gen in slot id. A worker that cannot start
// at all is reported through the same exit path as one that dies, so that
// every failure is handled in one place.
func (c *cluster) spawn(gen *generation, id int) *worker {
	spec := gen.spec
	w := &worker{ref: WorkerRef{Service: c.name, ID: id, Generation: gen.num}, gen: gen, started: time.Now()}
	c.live[w] = struct{}{}
	gen.live[w] = struct{}{}
	env := append(append([]string(nil), spec.Env...),
		"WORKER_ID="+strconv.Itoa(id), "RECLUSTER_SERVICE="+c.name, "RECLUSTER_GENERATION="+strconv.Itoa(gen.num))
	stdout, stderr := c.opts.Output.Open(w.ref)
	argv, err := spec.Command.Argv(func(k string) string { return getenv(env, k) })
	var proc Process
	if err == nil {
		proc, err = c.opts.Starter.Start(StartSpec{
			Worker:      w.ref,
			Argv:        argv,
			Dir:         spec.Dir,
			Env:         env,
			Listeners:   gen.lease.files,
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
		// Owned by the loop: delivers the failure as an exit, which run
		// waits for before it returns.
		go func() { c.events <- exitEvent{w, ExitStatus{Code: -1, Err: err}} }()
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
	} else {
		w.readyTimer = c.after(spec.ReadyTimeout, readyTimeoutEvent{w})
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

// stopWorker asks a worker to stop: its stop signal to the group, SIGKILL
// after its timeout. Its exit is then no crash.
func (c *cluster) stopWorker(w *worker) {
	if w.stopAsked {
		return
	}
	w.stopAsked = true
	stopTimer(w.readyTimer)
	c.signalStop(w)
}

// retireWorker stops a worker whose place another has taken, marking its
// remaining lines as those of a retiring worker.
func (c *cluster) retireWorker(w *worker) {
	c.opts.Output.Retire(w.ref)
	c.stopWorker(w)
}

// signalStop sends the worker its stop signal, and SIGKILL after its
// timeout. Unlike stopWorker it leaves stopAsked alone, so a worker
// stopped for failing to get ready dies as a crash and is respawned.
func (c *cluster) signalStop(w *worker) {
	w.state = Stopping
	if w.proc == nil {
		return // never ran; its exit event is on its way
	}
	spec := w.gen.spec
	if spec.StopTimeout <= 0 {
		w.proc.Signal(syscall.SIGKILL)
		return
	}
	w.proc.Signal(spec.StopSignal)
	w.killTimer = c.after(spec.StopTimeout, killTimeoutEvent{w})
}

// stopTimer stops t, if there is one.
func stopTimer(t *time.Timer) {
	if t != nil {
		t.Stop()
	}
}
