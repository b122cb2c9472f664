package runner

import (
	"context"
	"fmt"
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

type role int

const (
	roleCurrent     role = iota // serves in its slot
	roleNext                    // part of a reload's new generation, not yet promoted
	roleReplacement             // replaces a current worker that sent STOPPING=1
)

// worker is one process, owned by its cluster's loop.
type worker struct {
	ref        WorkerRef
	spec       *ServiceSpec
	proc       Process
	pid        int
	role       role
	state      State
	started    time.Time
	status     string
	stopping   bool
	exited     bool
	readyTimer *time.Timer
	killTimer  *time.Timer
}

// slot is one worker id of the serving generation.
type slot struct {
	id       int
	cur      *worker
	next     *worker // a STOPPING=1 replacement on its way
	delay    time.Duration
	timer    *time.Timer
	token    int // tells a live respawn timer from a stale one
	restarts int
	lastExit *ExitStatus
	backoff  bool
}

// reloadOp is a reload whose new generation is not ready yet.
type reloadOp struct {
	gen     int
	spec    *ServiceSpec
	workers []*worker
	ready   int
	replies []chan error
}

// drain waits for a set of workers to be gone, then finishes.
type drain struct {
	waiting map[*worker]bool
	done    func()
}

// Cluster keeps one service's workers at their count. One goroutine, Run,
// owns every field below the channels; all else talks to it by message.
type Cluster struct {
	name    string
	starter Starter
	out     Output
	onEvent func(Event)
	acquire func(*ServiceSpec) error
	release func(*ServiceSpec)

	reqs   chan any
	events chan any
	done   chan struct{} // closed when Run returns

	// firstReady is closed the first time every worker is ready, for the
	// services that start `after` this one.
	firstReady chan struct{}

	// Owned by Run.
	spec      *ServiceSpec
	specUsers map[*ServiceSpec]int
	gen       int
	maxGen    int
	size      int // the worker count: the spec's, or what scale set
	running   bool
	shutdown  bool
	slots     []*slot
	live      map[*worker]bool
	op        *reloadOp
	drains    []*drain
	waiters   []chan error // callers waiting for every worker to be ready
	deferred  []any        // requests held while a reload runs
	stops     int          // counts stop requests, so a restart knows one came
	readyOnce bool
}

func newCluster(spec *ServiceSpec, opts *Options) *Cluster {
	return &Cluster{
		name:       spec.Name,
		starter:    opts.Starter,
		out:        opts.Output,
		onEvent:    opts.OnEvent,
		acquire:    opts.acquire,
		release:    opts.release,
		reqs:       make(chan any),
		events:     make(chan any, 16),
		done:       make(chan struct{}),
		firstReady: make(chan struct{}),
		spec:       spec,
		size:       spec.Workers,
		specUsers:  map[*ServiceSpec]int{},
		live:       map[*worker]bool{},
	}
}

type (
	startReq   struct{ reply chan error }
	stopReq    struct{ reply chan error }
	restartReq struct {
		spec  *ServiceSpec
		reply chan error
	}
	reloadReq struct {
		spec  *ServiceSpec
		reply chan error
	}
	scaleReq struct {
		n     int
		reply chan error
	}
	statusReq struct{ reply chan ServiceStatus }
	killReq   struct{}

	exitEvent struct {
		w      *worker
		status ExitStatus
	}
	noteEvent struct {
		w    *worker
		note Notification
	}
	readyTimeoutEvent struct{ w *worker }
	killEvent         struct{ w *worker }
	respawnEvent      struct {
		s     *slot
		token int
	}
)

// request sends req to the loop; it fails once Run has returned.
func (c *Cluster) request(ctx context.Context, req any) error {
	select {
	case c.reqs <- req:
		return nil
	case <-c.done:
		return ErrShuttingDown
	case <-ctx.Done():
		return ctx.Err()
	}
}

// call sends a request carrying reply and waits for the answer.
func (c *Cluster) call(ctx context.Context, req any, reply chan error) error {
	if err := c.request(ctx, req); err != nil {
		return err
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Start starts the workers of a stopped service and returns once every one
// is ready, or with why one was not.
func (c *Cluster) Start(ctx context.Context) error {
	reply := make(chan error, 1)
	return c.call(ctx, startReq{reply}, reply)
}

// Stop stops every worker and returns once all are gone.
func (c *Cluster) Stop(ctx context.Context) error {
	reply := make(chan error, 1)
	return c.call(ctx, stopReq{reply}, reply)
}

// Restart stops every worker, then starts a new generation of spec (nil
// keeps the current one): not zero-downtime.
func (c *Cluster) Restart(ctx context.Context, spec *ServiceSpec) error {
	reply := make(chan error, 1)
	return c.call(ctx, restartReq{spec, reply}, reply)
}

// Reload starts a generation of spec beside the serving one and replaces
// it once every new worker is ready. It returns when the old generation is
// gone, or with why the new one failed (the old one then serves on), or
// ErrSuperseded when a newer reload took its place.
func (c *Cluster) Reload(ctx context.Context, spec *ServiceSpec) error {
	reply := make(chan error, 1)
	return c.call(ctx, reloadReq{spec, reply}, reply)
}

// Scale changes the worker count live: new ids start, the highest ids stop
// gracefully. It returns when the change is done.
func (c *Cluster) Scale(ctx context.Context, n int) error {
	reply := make(chan error, 1)
	return c.call(ctx, scaleReq{n, reply}, reply)
}

// Status returns a snapshot of the service.
func (c *Cluster) Status(ctx context.Context) (ServiceStatus, error) {
	reply := make(chan ServiceStatus, 1)
	if err := c.request(ctx, statusReq{reply}); err != nil {
		return ServiceStatus{}, err
	}
	select {
	case s := <-reply:
		return s, nil
	case <-ctx.Done():
		return ServiceStatus{}, ctx.Err()
	}
}

// Kill sends SIGKILL to every worker's group at once.
func (c *Cluster) Kill() { c.request(context.Background(), killReq{}) }

// Run is the cluster's loop. It starts no worker by itself (Start does);
// when ctx is done it stops every worker gracefully and returns once all
// are gone. A Cluster runs once.
func (c *Cluster) Run(ctx context.Context) error {
	defer close(c.done)
	c.specUsers[c.spec]++ // the current spec is in use while current
	ctxDone := ctx.Done()
	for {
		select {
		case <-ctxDone:
			ctxDone = nil
			c.shutdown = true
			c.stopAll(ErrShuttingDown)
		case req := <-c.reqs:
			c.handleRequest(req)
		case ev := <-c.events:
			c.handleEvent(ev)
		}
		if c.shutdown && len(c.live) == 0 && len(c.drains) == 0 {
			c.unuse(c.spec)
			return nil
		}
	}
}

func (c *Cluster) handleRequest(req any) {
	if _, ok := req.(killReq); ok {
		c.kill() // also while shutting down: that is when a second Ctrl-C comes
		return
	}
	if c.shutdown {
		c.refuse(req, ErrShuttingDown)
		return
	}
	switch r := req.(type) {
	case statusReq:
		r.reply <- c.status()
	case reloadReq:
		c.reload(r.spec, r.reply)
	case stopReq:
		c.stops++
		c.stopAll(ErrStopped)
		c.afterGone(func() { r.reply <- nil })
	default:
		if c.op != nil {
			c.deferred = append(c.deferred, req)
			return
		}
		switch r := req.(type) {
		case startReq:
			c.start(nil, r.reply)
		case restartReq:
			c.stopAll(ErrStopped)
			stops := c.stops
			c.afterGone(func() {
				if c.stops != stops {
					// A stop came while the restart waited: it wins.
					c.releaseUnused(r.spec)
					r.reply <- ErrStopped
					return
				}
				c.start(r.spec, r.reply)
			})
		case scaleReq:
			c.scale(r.n, r.reply)
		}
	}
}

// refuse answers a request that cannot run.
func (c *Cluster) refuse(req any, err error) {
	switch r := req.(type) {
	case statusReq:
		r.reply <- c.status()
	case startReq:
		r.reply <- err
	case stopReq:
		r.reply <- err
	case restartReq:
		c.releaseUnused(r.spec)
		r.reply <- err
	case reloadReq:
		c.releaseUnused(r.spec)
		r.reply <- err
	case scaleReq:
		r.reply <- err
	}
}

func (c *Cluster) handleEvent(ev any) {
	switch e := ev.(type) {
	case exitEvent:
		c.exited(e.w, e.status)
	case noteEvent:
		c.noted(e.w, e.note)
	case readyTimeoutEvent:
		c.readyTimedOut(e.w)
	case killEvent:
		if !e.w.exited && e.w.proc != nil {
			e.w.proc.Signal(syscall.SIGKILL)
		}
	case respawnEvent:
		s := e.s
		if s.token != e.token || !c.running || c.op != nil || c.slotIndex(s) < 0 || s.cur != nil {
			return
		}
		s.backoff = false
		s.cur = c.spawn(s.id, c.gen, c.spec, roleCurrent)
	}
}

func (c *Cluster) slotIndex(s *slot) int {
	if s.id < len(c.slots) && c.slots[s.id] == s {
		return s.id
	}
	return -1
}

// after delivers ev to the loop after d. The timer's goroutine gives up
// once the loop has returned.
func (c *Cluster) after(d time.Duration, ev any) *time.Timer {
	return time.AfterFunc(d, func() {
		select {
		case c.events <- ev:
		case <-c.done:
		}
	})
}

func (c *Cluster) emit(kind EventKind, w *worker, detail string) {
	if c.onEvent == nil {
		return
	}
	e := Event{Kind: kind, Service: c.name, Generation: c.gen, Detail: detail}
	if w != nil {
		e.Worker, e.Generation, e.Pid = w.ref.ID, w.ref.Generation, w.pid
	}
	c.onEvent(e)
}

func (c *Cluster) logf(format string, args ...any) {
	c.out.System(c.name, fmt.Sprintf(format, args...))
}

// spawn starts one worker. A worker that cannot start at all is reported
// through the same exit path as one that dies, so every failure is handled
// in one place.
func (c *Cluster) spawn(id, gen int, spec *ServiceSpec, r role) *worker {
	w := &worker{ref: WorkerRef{Service: c.name, ID: id, Generation: gen}, spec: spec, role: r, started: time.Now()}
	c.live[w] = true
	c.specUsers[spec]++
	env := append(append([]string(nil), spec.Env...),
		"WORKER_ID="+strconv.Itoa(id), "RECLUSTER_SERVICE="+c.name, "RECLUSTER_GENERATION="+strconv.Itoa(gen))
	stdout, stderr := c.out.Open(w.ref)
	argv, err := spec.Command.Argv(func(k string) string { return getenv(env, k) })
	var proc Process
	if err == nil {
		proc, err = c.starter.Start(StartSpec{
			Worker:      w.ref,
			Argv:        argv,
			Dir:         spec.Dir,
			Env:         env,
			Listeners:   spec.files,
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
		go func() { c.events <- exitEvent{w, ExitStatus{Code: -1, Err: err}} }()
		return w
	}
	w.proc, w.pid = proc, proc.Pid()
	// Owned by the loop: it ends when the worker's group is gone, and the
	// loop does not return before it has received the exit.
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

func listenNames(spec *ServiceSpec) []string {
	names := make([]string, len(spec.Listen))
	for i, l := range spec.Listen {
		names[i] = l.Name
	}
	return names
}

// stop asks a worker to stop: its stop signal to the group, SIGKILL after
// its timeout.
func (c *Cluster) stop(w *worker) {
	if w.stopping || w.exited {
		return
	}
	w.stopping = true
	w.state = Stopping
	if w.readyTimer != nil {
		w.readyTimer.Stop()
	}
	c.signalStop(w)
}

// signalStop sends the worker its stop signal, and SIGKILL after its
// timeout. Unlike stop it leaves w.stopping alone, so a worker stopped for
// failing to get ready dies as a crash and is respawned.
func (c *Cluster) signalStop(w *worker) {
	w.state = Stopping
	if w.proc == nil {
		return // never ran; its exit event is on its way
	}
	if w.spec.StopTimeout <= 0 {
		w.proc.Signal(syscall.SIGKILL)
		return
	}
	w.proc.Signal(w.spec.StopSignal)
	w.killTimer = c.after(w.spec.StopTimeout, killEvent{w})
}

func (c *Cluster) kill() {
	c.running = false
	for w := range c.live {
		w.stopping = true
		w.state = Stopping
		if w.proc != nil {
			w.proc.Signal(syscall.SIGKILL)
		}
	}
}

// afterGone runs done once every worker alive now is gone.
func (c *Cluster) afterGone(done func()) {
	d := &drain{waiting: map[*worker]bool{}, done: done}
	for w := range c.live {
		d.waiting[w] = true
	}
	c.addDrain(d)
}

func (c *Cluster) addDrain(d *drain) {
	if len(d.waiting) == 0 {
		d.done()
		return
	}
	c.drains = append(c.drains, d)
}

// stopAll ends the service: no reload, no respawn, every worker asked to
// stop. Callers waiting for readiness or a reload get err.
func (c *Cluster) stopAll(err error) {
	c.running = false
	if c.op != nil {
		c.abortReload(err)
	}
	c.failWaiters(err)
	for _, s := range c.slots {
		c.cancelRespawn(s)
	}
	for w := range c.live {
		c.stop(w)
	}
	for _, req := range c.deferred {
		c.refuse(req, err)
	}
	c.deferred = nil
}

func (c *Cluster) cancelRespawn(s *slot) {
	s.token++
	s.backoff = false
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
}

// start begins a new generation, of spec when not nil.
func (c *Cluster) start(spec *ServiceSpec, reply chan error) {
	if c.shutdown {
		c.releaseUnused(spec)
		reply <- ErrShuttingDown
		return
	}
	target := c.spec
	if spec != nil {
		target = spec
	}
	if err := c.acquireSockets(target); err != nil {
		c.releaseUnused(spec)
		reply <- err
		return
	}
	if spec != nil {
		c.size = spec.Workers
	}
	if spec != nil && spec != c.spec {
		c.specUsers[spec]++
		old := c.spec
		c.spec = spec
		c.unuse(old)
	}
	if c.running {
		c.waiters = append(c.waiters, reply)
		c.checkAllReady()
		return
	}
	c.running = true
	c.maxGen++
	c.gen = c.maxGen
	c.slots = make([]*slot, c.size)
	c.waiters = append(c.waiters, reply)
	for i := range c.slots {
		c.slots[i] = &slot{id: i}
	}
	for _, s := range c.slots {
		s.cur = c.spawn(s.id, c.gen, c.spec, roleCurrent)
	}
	c.emit(EventStarted, nil, "")
	c.checkAllReady()
}

func (c *Cluster) failWaiters(err error) {
	for _, r := range c.waiters {
		r <- err
	}
	c.waiters = nil
}

// checkAllReady answers the waiters once every slot has a ready worker.
func (c *Cluster) checkAllReady() {
	if !c.running || c.op != nil {
		return
	}
	for _, s := range c.slots {
		if s.cur == nil || s.cur.state != Ready {
			return
		}
	}
	if !c.readyOnce {
		c.readyOnce = true
		close(c.firstReady)
	}
	for _, r := range c.waiters {
		r <- nil
	}
	c.waiters = nil
	c.emit(EventAllReady, nil, "")
}

func (c *Cluster) markReady(w *worker) {
	if w.state != Starting || w.stopping || w.exited {
		return
	}
	w.state = Ready
	if w.readyTimer != nil {
		w.readyTimer.Stop()
	}
	c.emit(EventReady, w, "")
	switch w.role {
	case roleNext:
		if op := c.op; op != nil && w.ref.Generation == op.gen {
			if op.ready++; op.ready == len(op.workers) && len(op.workers) == op.spec.Workers {
				c.promote()
			}
		}
	case roleReplacement:
		s := c.slots[w.ref.ID]
		old := s.cur
		s.cur, s.next = w, nil
		w.role = roleCurrent
		if old != nil {
			c.out.Retire(old.ref)
			c.stop(old)
		}
		c.checkAllReady()
	case roleCurrent:
		c.checkAllReady()
	}
}

func (c *Cluster) noted(w *worker, n Notification) {
	if w.exited {
		return
	}
	if n.HasStatus {
		w.status = n.Status
	}
	if n.Ready {
		c.markReady(w)
	}
	if n.Stopping && w.role == roleCurrent && !w.stopping && c.op == nil && c.running {
		s := c.slots[w.ref.ID]
		if s.cur == w && s.next == nil {
			c.logf("%s asked to be replaced (STOPPING=1)", w.ref)
			s.next = c.spawn(s.id, c.gen, c.spec, roleReplacement)
		}
	}
}

func (c *Cluster) readyTimedOut(w *worker) {
	if w.state != Starting || w.stopping || w.exited {
		return
	}
	err := &WorkerFailedError{Worker: w.ref, Pid: w.pid, Timeout: w.spec.ReadyTimeout, Tail: c.out.Tail(w.ref, 10)}
	switch w.role {
	case roleNext:
		c.failReload(err)
	default:
		// A worker that never gets ready would hold back `after` and
		// `start` forever: it is stopped and, as any failed worker, respawned.
		c.logf("%s", err)
		c.failWaiters(err)
		c.signalStop(w)
	}
}

func (c *Cluster) exited(w *worker, st ExitStatus) {
	delete(c.live, w)
	w.exited = true
	for _, t := range []*time.Timer{w.readyTimer, w.killTimer} {
		if t != nil {
			t.Stop()
		}
	}
	wasReady := w.state == Ready
	c.emit(EventExited, w, st.String())
	// Deferred in this order so that sockets nothing uses are released
	// before any caller waiting on w hears it is gone.
	defer c.workerGone(w)
	defer c.unuse(w.spec)

	if w.stopping {
		return
	}
	switch w.role {
	case roleNext:
		c.failReload(&WorkerFailedError{Worker: w.ref, Pid: w.pid, Exit: &st, Tail: c.out.Tail(w.ref, 10)})
		return
	case roleReplacement:
		s := c.slots[w.ref.ID]
		if s.next == w {
			s.next = nil
		}
		c.logf("%s, the replacement for a worker that sent STOPPING=1, ended: %s; the old worker serves on", w.ref, st)
		return
	}
	idx := w.ref.ID
	if idx >= len(c.slots) || c.slots[idx].cur != w {
		return
	}
	s := c.slots[idx]
	s.cur = nil
	s.restarts++
	s.lastExit = &st
	if s.next != nil {
		// Its STOPPING=1 replacement takes the slot when ready.
		s.next.role = roleCurrent
		s.cur, s.next = s.next, nil
		return
	}
	if !wasReady && len(c.waiters) > 0 {
		c.failWaiters(&WorkerFailedError{Worker: w.ref, Pid: w.pid, Exit: &st, Tail: c.out.Tail(w.ref, 10)})
	}
	if !c.running || c.op != nil {
		// During a reload an old worker is not respawned: the new
		// generation takes its slot, or the slot is refilled if the reload
		// fails.
		return
	}
	c.scheduleRespawn(s, w, st)
}

// scheduleRespawn waits the slot's delay, then refills it: respawn at
// first, doubling with each death up to backoff, back to respawn once a
// worker stayed up for backoff. Each slot backs off on its own.
func (c *Cluster) scheduleRespawn(s *slot, w *worker, st ExitStatus) {
	spec := c.spec
	uptime := time.Since(w.started)
	switch {
	case s.delay == 0 || (spec.Backoff > 0 && uptime >= spec.Backoff):
		s.delay = spec.Respawn
	case spec.Backoff > 0:
		s.delay = min(2*s.delay, spec.Backoff)
	default:
		s.delay = spec.Respawn
	}
	s.token++
	s.backoff = true
	s.timer = c.after(s.delay, respawnEvent{s, s.token})
	if spec.LogRespawns {
		c.logf("%s (pid %d) ended: %s; respawning in %s", w.ref, w.pid, st, s.delay)
	}
	c.emit(EventBackoff, w, s.delay.String())
}

// workerGone advances every drain that waited for w.
func (c *Cluster) workerGone(w *worker) {
	var keep []*drain
	var finished []*drain
	for _, d := range c.drains {
		delete(d.waiting, w)
		if len(d.waiting) == 0 {
			finished = append(finished, d)
		} else {
			keep = append(keep, d)
		}
	}
	c.drains = keep
	for _, d := range finished {
		d.done()
	}
}

// unuse drops one use of spec and releases its sockets when nothing uses it.
func (c *Cluster) unuse(spec *ServiceSpec) {
	if c.specUsers[spec]--; c.specUsers[spec] <= 0 {
		delete(c.specUsers, spec)
		if c.release != nil {
			c.release(spec)
		}
	}
}

func (c *Cluster) acquireSockets(spec *ServiceSpec) error {
	if c.acquire == nil {
		return nil
	}
	return c.acquire(spec)
}

// releaseUnused releases a spec handed to a request that never ran.
func (c *Cluster) releaseUnused(spec *ServiceSpec) {
	if spec != nil && c.specUsers[spec] == 0 && spec != c.spec && c.release != nil {
		c.release(spec)
	}
}

func (c *Cluster) reload(spec *ServiceSpec, reply chan error) {
	if !c.running {
		// Nothing serves, and a stopped service stays stopped: the new
		// settings apply when it starts.
		c.specUsers[spec]++
		old := c.spec
		c.spec, c.size = spec, spec.Workers
		c.unuse(old)
		c.logf("%s is stopped; its new settings apply when it starts", c.name)
		reply <- nil
		return
	}
	if err := c.acquireSockets(spec); err != nil {
		reply <- err
		return
	}
	if c.op != nil {
		c.abortReload(ErrSuperseded)
	}
	c.maxGen++
	op := &reloadOp{gen: c.maxGen, spec: spec, replies: []chan error{reply}}
	c.specUsers[spec]++ // held by the op until it ends
	c.op = op
	c.emit(EventReloading, nil, strconv.Itoa(op.gen))
	for i := 0; i < spec.Workers && c.op == op; i++ {
		op.workers = append(op.workers, c.spawn(i, op.gen, spec, roleNext))
	}
	if c.op == op && op.ready == len(op.workers) && op.ready == spec.Workers {
		c.promote()
	}
}

// abortReload stops a reload's new generation; the serving one is
// untouched. Its callers hear err once that generation is gone.
func (c *Cluster) abortReload(err error) {
	op := c.op
	c.op = nil
	d := &drain{waiting: map[*worker]bool{}, done: func() {
		for _, r := range op.replies {
			r <- err
		}
	}}
	for _, w := range op.workers {
		if !w.exited {
			c.stop(w)
			d.waiting[w] = true
		}
	}
	c.unuse(op.spec)
	c.addDrain(d)
	// Slots whose old worker died while the reload ran are refilled now.
	for _, s := range c.slots {
		if s.cur == nil && c.running {
			c.cancelRespawn(s)
			s.cur = c.spawn(s.id, c.gen, c.spec, roleCurrent)
		}
	}
	c.runDeferred()
}

func (c *Cluster) failReload(err error) {
	if c.op == nil {
		return
	}
	c.logf("%s reload to generation %d failed: %v", c.name, c.op.gen, err)
	c.emit(EventReloadFailed, nil, err.Error())
	c.abortReload(err)
}

// promote makes a ready new generation the serving one and stops the old;
// the reload's callers are answered once the old workers are gone.
func (c *Cluster) promote() {
	op := c.op
	c.op = nil
	var retiring []*worker
	for _, s := range c.slots {
		c.cancelRespawn(s)
		for _, w := range []*worker{s.cur, s.next} {
			if w != nil {
				retiring = append(retiring, w)
			}
		}
	}
	old := c.slots
	c.slots = make([]*slot, len(op.workers))
	for i, w := range op.workers {
		w.role = roleCurrent
		s := &slot{id: i, cur: w}
		if i < len(old) {
			s.restarts, s.lastExit = old[i].restarts, old[i].lastExit
		}
		c.slots[i] = s
	}
	prev := c.spec
	c.size = len(op.workers)
	c.spec, c.gen = op.spec, op.gen // the op's use of spec passes to "current"
	c.unuse(prev)
	d := &drain{waiting: map[*worker]bool{}, done: func() {
		for _, r := range op.replies {
			r <- nil
		}
	}}
	for _, w := range retiring {
		if !w.exited {
			c.out.Retire(w.ref)
			c.stop(w)
			d.waiting[w] = true
		}
	}
	c.logf("%s generation %d is ready; stopping %d old worker(s)", c.name, op.gen, len(d.waiting))
	c.emit(EventReloaded, nil, strconv.Itoa(op.gen))
	c.addDrain(d)
	c.checkAllReady()
	c.runDeferred()
}

// runDeferred replays requests held while a reload ran.
func (c *Cluster) runDeferred() {
	reqs := c.deferred
	c.deferred = nil
	for _, r := range reqs {
		c.handleRequest(r)
	}
}

func (c *Cluster) scale(n int, reply chan error) {
	if n < 1 {
		reply <- fmt.Errorf("cannot scale %s to %d; a service has at least 1 worker (stop it to run none)", c.name, n)
		return
	}
	c.size = n
	if !c.running {
		reply <- nil
		return
	}
	switch {
	case n > len(c.slots):
		for i := len(c.slots); i < n; i++ {
			s := &slot{id: i}
			c.slots = append(c.slots, s)
			s.cur = c.spawn(i, c.gen, c.spec, roleCurrent)
		}
		c.waiters = append(c.waiters, reply)
		c.checkAllReady()
	case n < len(c.slots):
		d := &drain{waiting: map[*worker]bool{}, done: func() { reply <- nil }}
		for _, s := range c.slots[n:] {
			c.cancelRespawn(s)
			for _, w := range []*worker{s.cur, s.next} {
				if w != nil && !w.exited {
					c.stop(w)
					d.waiting[w] = true
				}
			}
		}
		c.slots = c.slots[:n]
		c.addDrain(d)
		c.checkAllReady()
	default:
		reply <- nil
	}
}
