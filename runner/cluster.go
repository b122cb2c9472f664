package runner

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/recluster/recluster/config"
)

// phase is where a cluster is in its life; the loop switches on it first
// to decide what a request does.
type phase int

const (
	// phaseStopped: no worker of the service runs (none started yet, or
	// all stopped). A start begins a generation.
	phaseStopped phase = iota
	// phaseServing: the current generation serves; a slot whose worker
	// dies is refilled after its backoff.
	phaseServing
	// phaseReloading: a new generation starts beside the serving one
	// (reload.go). Start, restart and scale wait until it ends.
	phaseReloading
	// phaseStopping: every worker was asked to stop; the service is
	// stopped once all are gone.
	phaseStopping
	// phaseShutDown: run's context ended. Everything stops, every request
	// is refused, and run returns once the last worker is gone.
	phaseShutDown
	// phaseFailed: the service could not start (its build failed), its
	// workers crashed startLimit times in a row, or a task exited with a
	// failure; no worker runs. A start, restart or reload tries again.
	phaseFailed
	// phaseCompleted: every worker of a task (restart never or
	// on-failure) exited 0 and none is to run again (tasks.go).
	phaseCompleted
	// phaseBlocked: the service was to start after services that failed,
	// or ended without meeting its `after` condition; it never started.
	phaseBlocked
)

func (p phase) String() string {
	return [...]string{"stopped", "serving", "reloading", "stopping", "shut down", "failed", "completed", "blocked"}[p]
}

// ended says whether nothing of the service runs, nor will by itself.
func (p phase) ended() bool { return p == phaseFailed || p == phaseCompleted || p == phaseBlocked }

// cluster keeps one service's workers at their count. One goroutine, run,
// owns every field below the channels; all else talks to it by message.
type cluster struct {
	name    string
	opts    *Options
	sockets *sockets

	reqs   chan request
	events chan message
	done   chan struct{} // closed when run returns
	// firstReady is closed the first time every worker is ready, for the
	// services that start `after` this one.
	firstReady chan struct{}

	// Owned by run.
	phase phase
	spec  *serviceSpec // what the next generation runs
	held  *lease       // the spec's sockets, held from the first start for as long as the service exists
	// heldRouter is the spec's proxy, held as its sockets are: a client
	// that comes while no worker serves (a restart, a stop) waits for one.
	heldRouter *routerHandle
	size       int // the worker count: the spec's, or what scale set
	maxGen     int
	current    *generation // the serving (or last) generation
	reload     *reloadOp   // in phaseReloading
	// lastReload is the last reload begun, for status.
	lastReload *LastReload
	slots      []*slot // one per worker id of the current generation
	live       map[*worker]struct{}
	goneWaits  []*goneWait
	waiters    []func(error) // callers waiting for every slot to be ready
	deferred   []request     // held until a reload or a stop ends
	onStopped  []func()      // run when phaseStopping ends
	restartAt  *restartReq   // a restart waiting for its stop to end
	readyOnce  bool
	// routers serve the proxy settings of live generations;
	// closedRouters are closed ones whose Serve run waits for.
	routers       map[config.Listen]*routerHandle
	closedRouters []*routerHandle
	ports         map[int]bool // the PORTs of live proxied workers
	// releasing holds gone workers whose proxy has yet to count what
	// their end cut; they are gone for whenGone once it has.
	releasing map[*worker]struct{}
	cutTotal  int // requests and connections cut since the service began
	// failedStarts are workers that could not start, handled as exits
	// once the message that started them is done.
	failedStarts []exitEvent
	// resourceFails counts starts that failed for want of a process,
	// memory or descriptors since that was last said (resourceSaid).
	resourceFails int
	resourceSaid  time.Time
	// resourceShortAt is when a start last failed for want of a
	// resource; for a moment after, starts wait (resourceShort).
	resourceShortAt time.Time
	// room is what taskRoom last said, at roomAt.
	room      int
	roomKnown bool
	roomAt    time.Time
	builders  map[*builder]struct{}
	failure   error // why the service is in phaseFailed or phaseBlocked
	// memoryTicking: a look at the workers' memory is due or running
	// (probe.go); allSickSaid: every worker was sick, and that was said.
	memoryTicking bool
	allSickSaid   bool
	// reloads counts the reloads that ended, by outcome.
	reloads map[string]int
	// everStarted and readyOnce (with firstReady) say what `after`
	// conditions of other services it has met; published tells the
	// Manager what it last heard (tasks.go).
	everStarted bool
	onState     func(serviceState)
	published   serviceState
	// settleWaiters hear the state once the service settles (settleReq).
	settleWaiters []chan serviceState
	// buildingUntil (unix nanoseconds) is read by the Manager's Building
	// from any goroutine: far ahead while a build runs, else 0.
	buildingUntil atomic.Int64
}

func newCluster(spec *serviceSpec, opts *Options, s *sockets) *cluster {
	return &cluster{
		name:       spec.Name,
		opts:       opts,
		sockets:    s,
		reqs:       make(chan request),
		events:     make(chan message, 16),
		done:       make(chan struct{}),
		firstReady: make(chan struct{}),
		spec:       spec,
		size:       spec.Workers,
		live:       map[*worker]struct{}{},
		releasing:  map[*worker]struct{}{},
		builders:   map[*builder]struct{}{},
	}
}

// call sends a request and waits for its answer; it fails once run has
// returned.
func (c *cluster) call(ctx context.Context, r request, reply chan error) error {
	select {
	case c.reqs <- r:
	case <-c.done:
		return ErrShuttingDown
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *cluster) Start(ctx context.Context) error {
	reply := make(chan error, 1)
	return c.call(ctx, startReq{reply}, reply)
}

func (c *cluster) Stop(ctx context.Context) error {
	reply := make(chan error, 1)
	return c.call(ctx, stopReq{reply}, reply)
}

// Restart stops every worker, then starts a generation of spec (nil keeps
// the spec in force): not zero-downtime.
func (c *cluster) Restart(ctx context.Context, spec *serviceSpec) error {
	reply := make(chan error, 1)
	return c.call(ctx, restartReq{spec, reply}, reply)
}

// Reload replaces the serving generation with one of spec (reload.go). On
// success it reports what the old generation's stop cut short.
func (c *cluster) Reload(ctx context.Context, spec *serviceSpec) (ReloadReport, error) {
	r, err := ask(ctx, c, reloadReq{spec, make(chan reloadResult, 1), triggerOf(ctx)})
	if err != nil {
		return ReloadReport{}, err
	}
	return r.report, r.err
}

func (c *cluster) Scale(ctx context.Context, n int) error {
	reply := make(chan error, 1)
	return c.call(ctx, scaleReq{n, reply}, reply)
}

func (c *cluster) Status(ctx context.Context) (ServiceStatus, error) {
	return ask(ctx, c, statusReq{make(chan ServiceStatus, 1)})
}

// ask sends a request whose reply is a value to the loop and waits for
// that reply; it fails once run has returned, or ctx ends.
func ask[T any, R interface {
	request
	replies() chan T
}](ctx context.Context, c *cluster, r R) (T, error) {
	var zero T
	select {
	case c.reqs <- r:
	case <-c.done:
		return zero, ErrShuttingDown
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	select {
	case v := <-r.replies():
		return v, nil
	case <-c.done:
		select {
		case v := <-r.replies(): // answered just before run returned
			return v, nil
		default:
			return zero, ErrShuttingDown
		}
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

// Kill sends SIGKILL to every worker's group at once.
func (c *cluster) Kill() {
	select {
	case c.reqs <- killReq{}:
	case <-c.done:
	}
}

// run is the cluster's loop. It starts no worker by itself (a start
// request does); when ctx ends it stops every worker gracefully and
// returns once all are gone. A cluster runs once.
func (c *cluster) run(ctx context.Context) {
	defer close(c.done)
	defer func() {
		c.held.release()
		c.releaseRouter(c.heldRouter)
	}()
	defer func() {
		for _, h := range c.closedRouters {
			<-h.served
		}
	}()
	ctxDone := ctx.Done()
	for {
		select {
		case <-ctxDone:
			ctxDone = nil
			c.shutDown()
		case r := <-c.reqs:
			c.handleRequest(r)
		case e := <-c.events:
			c.handleEvent(e)
		}
		c.handleFailedStarts()
		if c.phase == phaseShutDown && len(c.live) == 0 && len(c.builders) == 0 && len(c.releasing) == 0 {
			return
		}
		c.buildWhenIdle()
		c.handleFailedStarts()
		c.publish()
	}
}

func (c *cluster) handleRequest(r request) {
	switch r := r.(type) {
	case statusReq:
		r.reply <- c.status()
		return
	case killReq:
		c.kill() // in every phase: a second Ctrl-C comes while shutting down
		return
	case blockReq:
		c.block(r) // in every phase: only a stopped service blocks
		return
	case settleReq:
		c.settleWaiters = append(c.settleWaiters, r.reply) // answered by publish
		return
	}
	switch c.phase {
	case phaseStopped:
		c.whileStopped(r)
	case phaseServing:
		c.whileServing(r)
	case phaseReloading:
		c.whileReloading(r)
	case phaseStopping:
		c.whileStopping(r)
	case phaseShutDown:
		r.refuse(ErrShuttingDown)
	case phaseFailed, phaseCompleted, phaseBlocked:
		c.whileEnded(r)
	}
}

// buildWhenIdle starts a pending build once no request waits: a request
// already sent (a newer reload, a stop) is handled first, so a generation
// it cancels never builds.
func (c *cluster) buildWhenIdle() {
	for {
		select {
		case r := <-c.reqs:
			c.handleRequest(r)
			continue
		default:
		}
		c.startPendingBuild()
		return
	}
}

func (c *cluster) whileStopped(r request) {
	switch r := r.(type) {
	case startReq:
		c.start(reply(r.reply))
	case restartReq:
		if err := c.adopt(r.spec); err != nil {
			r.reply <- err
			return
		}
		c.start(reply(r.reply))
	case stopReq:
		r.reply <- nil
	case reloadReq:
		// Nothing serves, and a stopped service stays stopped.
		if err := c.adopt(r.spec); err != nil {
			r.refuse(err)
			return
		}
		c.logf("%s is stopped; its new settings apply when it starts", c.name)
		r.reply <- reloadResult{}
	case scaleReq:
		c.scale(r.n, r.reply)
	default:
		r.refuse(fmt.Errorf("%s: %T while %s", c.name, r, c.phase))
	}
}

func (c *cluster) whileServing(r request) {
	switch r := r.(type) {
	case startReq:
		c.waiters = append(c.waiters, reply(r.reply))
		c.checkAllReady()
	case stopReq:
		c.stopAll(ErrStopped, func() { r.reply <- nil })
	case restartReq:
		c.restartAt = &r
		c.stopAll(ErrStopped, nil)
	case reloadReq:
		c.beginReload(r.spec, r.reply, r.trigger)
	case scaleReq:
		c.scale(r.n, r.reply)
	default:
		r.refuse(fmt.Errorf("%s: %T while %s", c.name, r, c.phase))
	}
}

func (c *cluster) whileReloading(r request) {
	switch r := r.(type) {
	case reloadReq:
		c.supersede(r.spec, r.reply, r.trigger)
	case stopReq:
		c.abortReload(ErrStopped)
		c.stopAll(ErrStopped, func() { r.reply <- nil })
	case startReq, restartReq, scaleReq:
		c.deferred = append(c.deferred, r) // once the reload has ended
	default:
		r.refuse(fmt.Errorf("%s: %T while %s", c.name, r, c.phase))
	}
}

func (c *cluster) whileStopping(r request) {
	switch r := r.(type) {
	case stopReq:
		if c.restartAt != nil {
			// A stop that comes while a restart waits for its stop wins.
			c.restartAt.reply <- ErrStopped
			c.restartAt = nil
		}
		c.onStopped = append(c.onStopped, func() { r.reply <- nil })
	case reloadReq:
		if err := c.adopt(r.spec); err != nil {
			r.refuse(err)
			return
		}
		c.logf("%s is stopping; its new settings apply when it starts", c.name)
		r.reply <- reloadResult{}
	case scaleReq:
		c.scale(r.n, r.reply)
	case startReq, restartReq:
		c.deferred = append(c.deferred, r) // once stopped
	default:
		r.refuse(fmt.Errorf("%s: %T while %s", c.name, r, c.phase))
	}
}

func (c *cluster) handleEvent(e message) {
	switch e := e.(type) {
	case exitEvent:
		c.exited(e.w, e.status)
	case noteEvent:
		c.noted(e.w, e.note)
	case readyTimeoutEvent:
		c.readyTimedOut(e.w)
	case provenEvent:
		c.proven(e.w)
	case killTimeoutEvent:
		c.killTimedOut(e.w)
	case drainedEvent:
		c.drained(e.w, e.timedOut)
	case releasedEvent:
		c.released(e.w, e.cut)
	case probeEvent:
		c.probed(e)
	case memoryTickEvent:
		c.memoryTick()
	case memoryEvent:
		c.memorySampled(e)
	case respawnEvent:
		c.respawn(e.s, e.token)
	case buildEvent:
		c.buildEnded(e.b, e.status)
	case buildTimeoutEvent:
		c.buildTimedOut(e.b)
	}
}

// handleFailedStarts handles the workers that could not start as exits,
// and those that failing starts bring, until none is left.
func (c *cluster) handleFailedStarts() {
	for len(c.failedStarts) > 0 {
		e := c.failedStarts[0]
		c.failedStarts = c.failedStarts[1:]
		c.exited(e.w, e.status)
	}
	c.failedStarts = nil // let a large queue's array go
}

// replayDeferred hands the requests held during a reload or a stop to the
// phase that follows.
func (c *cluster) replayDeferred() {
	reqs := c.deferred
	c.deferred = nil
	for _, r := range reqs {
		c.handleRequest(r)
	}
}

// after delivers e to the loop after d. The timer's goroutine gives up
// once the loop has returned.
func (c *cluster) after(d time.Duration, e message) *time.Timer {
	return time.AfterFunc(d, func() {
		select {
		case c.events <- e:
		case <-c.done:
		}
	})
}

func (c *cluster) emit(kind EventKind, w *worker, detail string) {
	if c.opts.OnEvent != nil {
		c.emitEvent(c.event(kind, w, detail))
	}
}

// event makes an event of the cluster, of w when not nil.
func (c *cluster) event(kind EventKind, w *worker, detail string) Event {
	e := Event{Kind: kind, Service: c.name, Detail: detail}
	if c.current != nil {
		e.Generation = c.current.num
	}
	if w != nil {
		e.Worker, e.Generation, e.Pid = w.ref.ID, w.ref.Generation, w.pid
	}
	return e
}

func (c *cluster) emitEvent(e Event) {
	if c.opts.OnEvent != nil {
		c.opts.OnEvent(e)
	}
}

func (c *cluster) logf(format string, args ...any) {
	c.opts.Output.System(c.name, fmt.Sprintf(format, args...))
}

// reply answers a caller's channel.
func reply(ch chan error) func(error) { return func(err error) { ch <- err } }
