package runner

import (
	"fmt"
	"runtime/debug"
	"slices"
	"syscall"
	"time"

	"github.com/recluster/recluster/config"
)

// The life of a service outside reloads: start, readiness, exits, stop and
// scale, each run by the cluster's loop.

// adopt makes spec the one the next generation runs; nil keeps the spec in
// force. Once the service has started, it holds the new spec's sockets
// before letting go of the old ones, so an address that stays is never
// closed.
func (c *cluster) adopt(spec *serviceSpec) error {
	if spec == nil || spec == c.spec {
		return nil
	}
	spec = c.keepScale(spec)
	if c.held != nil {
		l, err := c.acquire(spec)
		if err != nil {
			return err
		}
		r, err := c.routerFor(spec, l)
		if err != nil {
			l.release()
			return err
		}
		c.held.release()
		c.releaseRouter(c.heldRouter)
		c.held, c.heldRouter = l, r
	}
	c.spec, c.size = spec, spec.Workers
	return nil
}

// acquire takes a lease on spec's sockets, saying which ones it opened.
func (c *cluster) acquire(spec *serviceSpec) (*lease, error) {
	l, err := c.sockets.acquire(spec.sockets())
	if err != nil {
		return nil, err
	}
	for _, opened := range l.opened {
		c.logf("%s listening on %s", c.name, c.sockets.boundAddr(opened))
	}
	return l, nil
}

// start begins a generation of the spec in force, from phaseStopped; done
// hears once every worker is ready, or why one was not.
func (c *cluster) start(done func(error)) {
	if c.held == nil {
		l, err := c.acquire(c.spec)
		if err != nil {
			done(err)
			return
		}
		r, err := c.routerFor(c.spec, l)
		if err != nil {
			l.release()
			done(err)
			return
		}
		c.held, c.heldRouter = l, r
	}
	gen, err := c.newGeneration(c.spec)
	if err != nil {
		done(err)
		return
	}
	c.current = gen
	c.phase = phaseServing
	c.slots = make([]*slot, c.size)
	for i := range c.slots {
		c.slots[i] = &slot{id: i}
	}
	c.waiters = append(c.waiters, done)
	c.emit(EventStarted, nil, "")
	if gen.needsBuild() {
		return // its workers start once it is built
	}
	c.spawnGeneration(gen)
}

// failStart ends a start that cannot succeed (its build failed): the
// service waits in phaseFailed, saying why, until it is asked to try
// again.
func (c *cluster) failStart(err error) {
	c.logf("%v; %s waits for a fix: save, reload or start to try again", err, c.name)
	c.answerWaiters(err)
	c.current.retire()
	c.slots = nil
	c.phase, c.failure = phaseFailed, err
	e := c.event(EventFailed, nil, err.Error())
	e.Code = 1
	c.emitEvent(e)
	c.replayDeferred()
}

// checkAllReady answers the waiters once every slot has a ready worker.
func (c *cluster) checkAllReady() {
	if c.phase != phaseServing {
		return
	}
	for _, s := range c.slots {
		if s.worker == nil || s.worker.state != Ready {
			return
		}
	}
	if !c.readyOnce {
		c.readyOnce = true
		close(c.firstReady)
	}
	c.answerWaiters(nil)
	c.emit(EventAllReady, nil, "")
}

func (c *cluster) answerWaiters(err error) {
	for _, done := range c.waiters {
		done(err)
	}
	c.waiters = nil
}

// stopAll asks every worker to stop and moves to phaseStopping; callers
// waiting for readiness hear err. phaseStopped follows once all are gone,
// and then, when not nil, stopped runs.
func (c *cluster) stopAll(err error, stopped func()) {
	c.phase = phaseStopping
	if stopped != nil {
		c.onStopped = append(c.onStopped, stopped)
	}
	c.answerWaiters(err)
	for _, s := range c.slots {
		s.cancelRespawn()
	}
	if c.current != nil {
		c.stopBuild(c.current)
		c.current.retire()
	}
	for w := range c.live {
		c.stopWorker(w)
	}
	c.checkStopped()
}

// checkStopped ends phaseStopping once the last worker is gone: the stop's
// callers hear, a waiting restart starts, and deferred requests run.
func (c *cluster) checkStopped() {
	if c.phase != phaseStopping || len(c.live) > 0 || len(c.builders) > 0 {
		return
	}
	c.phase = phaseStopped
	c.slots = nil
	done := c.onStopped
	c.onStopped = nil
	for _, f := range done {
		f()
	}
	if r := c.restartAt; r != nil {
		c.restartAt = nil
		c.whileStopped(*r)
	}
	c.replayDeferred()
}

// shutDown stops everything for good: run's context has ended.
func (c *cluster) shutDown() {
	if c.reload != nil {
		c.abortReload(ErrShuttingDown)
	}
	if c.restartAt != nil {
		c.restartAt.reply <- ErrShuttingDown
		c.restartAt = nil
	}
	for _, r := range c.deferred {
		r.refuse(ErrShuttingDown)
	}
	c.deferred = nil
	c.stopAll(ErrShuttingDown, nil)
	c.phase = phaseShutDown
	// Callers waiting for a stop hear once the workers are gone, as run
	// returns: they are answered here so that none is left waiting.
	done := c.onStopped
	c.onStopped = nil
	c.whenGone(c.liveWorkers(), func() {
		for _, f := range done {
			f()
		}
	})
}

// kill sends SIGKILL to every worker at once; none is respawned.
func (c *cluster) kill() {
	if c.phase == phaseServing || c.phase == phaseReloading {
		if c.reload != nil {
			c.abortReload(ErrStopped)
		}
		c.stopAll(ErrStopped, nil)
	}
	for w := range c.live {
		w.stopAsked = true
		w.state = Stopping
		if w.proc != nil {
			w.proc.Signal(syscall.SIGKILL)
		}
	}
}

// keepScale carries a live scale over to spec, the file's next version
// of the service, unless the file's own count changed: `scale web=3` and
// then a save serves on with 3 workers, as PM2 keeps a scale across a
// reload, while a file that now says `workers: 4` is what the user asked
// for last.
func (c *cluster) keepScale(spec *serviceSpec) *serviceSpec {
	if c.spec == nil || spec.FileWorkers != c.spec.FileWorkers || spec.Workers == c.size {
		return spec
	}
	scaled := *spec
	scaled.Workers = c.size
	return &scaled
}

// scale changes the worker count: new ids start, the highest stop.
func (c *cluster) scale(n int, reply chan error) {
	if n < 1 {
		reply <- fmt.Errorf("cannot scale %s to %d; a service has at least 1 worker (stop it to run none)", c.name, n)
		return
	}
	c.size = n
	if c.phase != phaseServing {
		reply <- nil // applies when it starts
		return
	}
	switch {
	case n > len(c.slots):
		for i := len(c.slots); i < n; i++ {
			s := &slot{id: i}
			c.slots = append(c.slots, s)
			if c.resourceShort() {
				c.deferStart(s) // the last start found no process (or fd) to spare
				continue
			}
			s.worker = c.spawn(c.current, i)
		}
		c.waiters = append(c.waiters, func(err error) { reply <- err })
		c.checkAllReady()
	case n < len(c.slots):
		var stopping []*worker
		for _, s := range c.slots[n:] {
			s.cancelRespawn()
			for _, w := range []*worker{s.worker, s.replacement} {
				if w != nil {
					c.stopWorker(w)
					stopping = append(stopping, w)
				}
			}
		}
		freed := len(c.slots) - n
		c.slots = slices.Clip(c.slots[:n])
		c.whenGone(stopping, func() {
			reply <- nil
			if freed >= 1000 {
				// What thousands of slots held goes back to the system
				// now, not when the scavenger gets to it.
				go debug.FreeOSMemory()
			}
		})
		c.checkAllReady()
	default:
		reply <- nil
	}
}

// slotOf returns the slot whose worker or replacement w is, or nil.
func (c *cluster) slotOf(w *worker) *slot {
	if id := w.ref.ID; id < len(c.slots) && w.gen == c.current {
		if s := c.slots[id]; s.worker == w || s.replacement == w {
			return s
		}
	}
	return nil
}

func (c *cluster) markReady(w *worker) {
	if w.state != Starting || w.stopAsked {
		return
	}
	w.state = Ready
	stopTimer(w.readyTimer)
	c.emit(EventReady, w, "")
	defer c.syncBackends()
	if c.reload != nil && w.gen == c.reload.gen {
		if d := w.gen.spec.MinReady; d > 0 {
			// A program that says it is ready before it has loaded
			// the code (gunicorn's master, before its workers import
			// the app) is held to it for minReady first.
			w.proving = c.after(d, provenEvent{w})
			return
		}
		c.reloadWorkerReady(w)
		return
	}
	if s := c.slotOf(w); s != nil && s.replacement == w {
		// A replacement is ready: it takes the slot.
		old := s.worker
		s.worker, s.replacement = w, nil
		s.replaced = &Replacement{At: time.Now(), Reason: s.replacing}
		s.replaceFails = 0
		if old != nil {
			c.logf("%s (pid %d) is ready in place of %s (pid %d), which %s: stopping it", w.ref, w.pid, old.ref, old.pid, s.replacing)
			c.retireWorker(old)
		}
		c.allSickSaid = false
	}
	if h := w.gen.spec.Health; h != nil && !w.healthProbing {
		w.healthProbing = true
		c.startProbing(w, h, true)
	}
	c.watchMemory()
	c.checkAllReady()
}

// proven counts a new worker of a reload ready once it has stayed ready
// for minReady.
func (c *cluster) proven(w *worker) {
	if w.proving == nil || w.stopAsked || c.reload == nil || w.gen != c.reload.gen {
		return
	}
	if _, alive := c.live[w]; !alive {
		return
	}
	w.proving = nil
	defer c.syncBackends()
	c.reloadWorkerReady(w)
}

func (c *cluster) noted(w *worker, n Notification) {
	if _, alive := c.live[w]; !alive {
		return
	}
	if n.Notice != "" {
		c.logf("%s: %s", w.ref, n.Notice)
	}
	if n.Listening != "" {
		w.listening = n.Listening
	}
	if n.HasStatus {
		w.status = n.Status
	}
	if n.Ready {
		c.markReady(w)
	}
	if n.Stopping {
		c.replace(w, fmt.Sprintf("%s asked to be replaced (STOPPING=1)", w.ref), "asked to be replaced (STOPPING=1)")
	}
}

func (c *cluster) readyTimedOut(w *worker) {
	if w.state != Starting || w.stopAsked {
		return
	}
	if c.reload != nil && w.gen == c.reload.gen {
		c.reloadReadyTimedOut(w)
		return
	}
	err := &WorkerFailedError{Worker: w.ref, Pid: w.pid, Timeout: w.gen.spec.ReadyTimeout, Probe: w.lastReadyProbe(), Tail: c.failureLines(w.ref)}
	// A worker that never gets ready would hold back `after` and `start`
	// forever: it is stopped and, as any failed worker, respawned.
	c.logf("%s", err)
	c.answerWaiters(err)
	c.signalStop(w)
}

// exited handles a worker's end, whatever it was: asked for, a crash of a
// serving worker (respawned after its backoff), or a new worker's failure
// (which fails its reload).
func (c *cluster) exited(w *worker, st ExitStatus) {
	delete(c.live, w)
	w.stopProbing()
	stopTimer(w.readyTimer)
	stopTimer(w.proving)
	stopTimer(w.killTimer)
	stopTimer(w.drainTimer)
	delete(c.ports, w.port)
	defer c.syncBackends()
	wasReady := w.state == Ready
	w.gen.workerGone(w) // sockets nothing uses are released first
	c.emit(EventExited, w, st.String())
	defer c.checkStopped()
	if !c.release(w) {
		defer c.workerGone(w)
	}

	if w.stopAsked {
		return
	}
	if c.reload != nil && w.gen == c.reload.gen {
		c.reloadWorkerExited(w, st)
		return
	}
	s := c.slotOf(w)
	switch {
	case s == nil:
		return // a worker no slot holds: retired already
	case s.replacement == w:
		s.replacement = nil
		s.replaceFails++
		c.logf("%s, the replacement for a worker that %s, ended: %s; the old worker serves on", w.ref, s.replacing, st)
		if limit := w.gen.spec.StartLimit; limit > 0 && s.replaceFails >= limit {
			c.logf("%s: %d replacements in a row ended before they were ready (startLimit); no more are tried until the service is reloaded or restarted", w.ref, s.replaceFails)
		}
		if old := s.worker; old != nil {
			old.sick = "" // tried again at its next failed probe
			if old.health != nil {
				old.health.Failures = 0
			}
		}
		return
	}
	s.worker = nil
	s.lastExit = &st
	if s.replacement != nil {
		// Its STOPPING=1 replacement takes the slot.
		s.worker, s.replacement = s.replacement, nil
		s.restarts++
		return
	}
	spec := w.gen.spec
	finished := spec.Restart == config.RestartNever || spec.Restart == config.RestartOnFailure && st.Success()
	if !wasReady && len(c.waiters) > 0 && !(finished && st.Success()) {
		c.answerWaiters(&WorkerFailedError{Worker: w.ref, Pid: w.pid, Exit: &st, Tail: c.failureLines(w.ref)})
	}
	if c.phase == phaseServing {
		// During a reload an old worker is not respawned: the new
		// generation takes its slot, or failReload refills it.
		c.afterExit(s, w, st, wasReady)
	}
}

// goneWait waits for a set of workers to be gone, then runs done.
type goneWait struct {
	waiting map[*worker]struct{}
	done    func()
}

// whenGone runs done once every worker of ws has exited.
func (c *cluster) whenGone(ws []*worker, done func()) {
	d := &goneWait{waiting: map[*worker]struct{}{}, done: done}
	for _, w := range ws {
		if _, alive := c.live[w]; alive {
			d.waiting[w] = struct{}{}
		}
	}
	if len(d.waiting) == 0 {
		done()
		return
	}
	c.goneWaits = append(c.goneWaits, d)
}

// workerGone advances every goneWait that waited for w.
func (c *cluster) workerGone(w *worker) {
	var keep, finished []*goneWait
	for _, d := range c.goneWaits {
		delete(d.waiting, w)
		if len(d.waiting) == 0 {
			finished = append(finished, d)
		} else {
			keep = append(keep, d)
		}
	}
	c.goneWaits = keep
	for _, d := range finished {
		d.done()
	}
}

func (c *cluster) liveWorkers() []*worker {
	out := make([]*worker, 0, len(c.live))
	for w := range c.live {
		out = append(out, w)
	}
	return out
}
