package runner

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// A reload, from start to end, in the order it happens. Throughout, the
// serving generation (c.current) is untouched: its workers go on serving,
// and one that dies is not respawned while the reload runs, since the new
// generation will take its slot or, should the reload fail, the slot is
// refilled from the serving spec.
//
//	beginReload       the new generation starts, beside the serving one:
//	                  all its workers at once, or maxSurge of them
//	reloadWorkerReady a new worker is ready; once all are, promote. With
//	                  maxSurge, each ready one first rolls on: an old
//	                  worker stops, and once it is gone the next new one
//	                  starts, so no more than workers + maxSurge run
//	promote           the new generation serves; the old one retires, and
//	                  the callers hear once its workers are gone
//	failReload        the reload is aborted, and the old generation
//	                  serves on, its empty slots refilled. Its three
//	                  causes, each entered from where it is noticed:
//	  reloadWorkerExited   a new worker exited, before it was ready or
//	                       within minReady of it (lifecycle.go's exited)
//	  reloadReadyTimedOut  a new worker missed readyTimeout (lifecycle.go)
//	  reloadBuildFailed    the new generation's build failed or ran past
//	                       buildTimeout (build.go)
//	abortReload       the new generation retires; its callers hear why
//	                  once its workers are gone
//	supersede         a newer reload aborts this one (its callers hear
//	                  ErrSuperseded) and begins; the serving generation
//	                  stays until the newest is ready

// reloadOp is a reload whose new generation is not ready yet.
type reloadOp struct {
	gen     *generation
	workers []*worker // by slot id
	ready   int
	replies []chan reloadResult
}

// beginReload starts a generation of spec beside the serving one.
func (c *cluster) beginReload(spec *serviceSpec, reply chan reloadResult, trigger string) {
	spec = c.keepScale(spec)
	gen, err := c.newGeneration(spec)
	if err != nil {
		c.lastReload = &LastReload{Started: time.Now(), Trigger: trigger, Outcome: "failed", Reason: err.Error()}
		c.countReload("failed")
		reply <- reloadResult{err: err}
		return
	}
	c.lastReload = &LastReload{Started: time.Now(), Trigger: trigger, Outcome: "running", Generation: gen.num}
	op := &reloadOp{gen: gen, replies: []chan reloadResult{reply}}
	c.reload = op
	c.phase = phaseReloading
	c.emit(EventReloading, nil, strconv.Itoa(gen.num))
	if gen.needsBuild() {
		return // build.go starts the workers once it is built
	}
	c.spawnReload(op)
}

// surge is how many new workers start at once.
func (op *reloadOp) surge() int {
	n := op.gen.spec.Workers
	if k := op.gen.spec.MaxSurge; k > 0 && k < n {
		return k
	}
	return n
}

// rolling says whether the reload replaces workers a few at a time.
func (op *reloadOp) rolling() bool { return op.surge() < op.gen.spec.Workers }

// spawnReload starts the new generation's workers, as many as it may at
// once.
func (c *cluster) spawnReload(op *reloadOp) {
	spec := op.gen.spec
	for id := 0; id < op.surge() && c.reload == op; id++ {
		op.workers = append(op.workers, c.spawn(op.gen, id))
	}
	// Workers ready as they start (readyWhen: started) may have made
	// every one ready already.
	if c.reload == op && op.ready == spec.Workers {
		c.promote()
	}
}

// reloadWorkerReady counts a ready worker of the new generation, and
// promotes the generation once every one of its workers is.
func (c *cluster) reloadWorkerReady(w *worker) {
	op := c.reload
	op.ready++
	if op.ready == op.gen.spec.Workers && len(op.workers) == op.gen.spec.Workers {
		c.promote()
		return
	}
	if op.rolling() {
		// It serves beside the old ones from now: markReady syncs the
		// proxy's backends once this returns.
		c.rollOn(op)
	}
}

// rollOn stops one old worker for a new one that is ready and, once the
// old one is gone, starts the next new one. Should the reload end first
// (failed, superseded), the old worker's slot is refilled from the
// serving spec when the service serves again, as failReload does.
func (c *cluster) rollOn(op *reloadOp) {
	startNext := func() {
		if next := len(op.workers); c.reload == op && next < op.gen.spec.Workers {
			op.workers = append(op.workers, c.spawn(op.gen, next))
		}
	}
	var s *slot
	for i := len(c.slots) - 1; i >= 0 && s == nil; i-- {
		if w := c.slots[i].worker; w != nil && !w.stopAsked {
			s = c.slots[i]
		}
	}
	if s == nil {
		startNext() // the old generation was smaller: nothing to stop
		return
	}
	old := s.worker
	c.retireWorker(old)
	c.whenGone([]*worker{old}, func() {
		if s.worker == old {
			s.worker = nil
		}
		switch {
		case c.reload == op:
			startNext()
		case c.phase == phaseServing && c.current == old.gen:
			c.refillOne() // the reload failed meanwhile: back to full size
		}
	})
}

// promote makes the ready new generation the serving one and retires the
// old; the reload's callers hear once the old workers are gone.
func (c *cluster) promote() {
	op := c.reload
	c.reload = nil
	c.phase = phaseServing
	old := c.current
	var retiring []*worker
	for _, s := range c.slots {
		s.cancelRespawn()
		for _, w := range []*worker{s.worker, s.replacement} {
			if w != nil {
				retiring = append(retiring, w)
			}
		}
	}
	prev := c.slots
	c.slots = make([]*slot, len(op.workers))
	for id, w := range op.workers {
		s := &slot{id: id, worker: w}
		if id < len(prev) {
			s.restarts, s.lastExit = prev[id].restarts, prev[id].lastExit
		}
		c.slots[id] = s
	}
	c.current = op.gen
	c.adopt(op.gen.spec) // its sockets are held by the generation already: this cannot fail
	c.syncBackends()     // new work goes to the new generation from here
	if old != nil {
		old.retire()
	}
	for _, w := range retiring {
		c.retireWorker(w)
	}
	c.reloadEnded("succeeded", nil)
	c.logf("%s generation %d is ready; stopping %d old worker(s)", c.name, op.gen.num, len(retiring))
	c.emit(EventReloaded, nil, strconv.Itoa(op.gen.num))
	c.whenGone(retiring, func() {
		var report ReloadReport
		for _, w := range retiring {
			switch {
			case w.killed != "":
				report.Notes = append(report.Notes, w.killed)
			case w.cut > 0:
				report.Notes = append(report.Notes, fmt.Sprintf("%s (pid %d) ended with %d request(s) or connection(s) it had not finished", w.ref, w.pid, w.cut))
			}
			report.Cut += w.cut
		}
		for _, r := range op.replies {
			r <- reloadResult{report: report}
		}
	})
	c.checkAllReady()
	c.replayDeferred()
}

// reloadWorkerExited fails the reload for a new worker that exited before
// it was ready, or while it was proving itself (minReady).
func (c *cluster) reloadWorkerExited(w *worker, st ExitStatus) {
	err := &WorkerFailedError{Worker: w.ref, Pid: w.pid, Exit: &st, Tail: c.failureLines(w.ref)}
	if w.proving != nil {
		err.MinReady = w.gen.spec.MinReady
	}
	c.failReload(err)
}

// reloadReadyTimedOut fails the reload for a new worker that was not ready
// within readyTimeout.
func (c *cluster) reloadReadyTimedOut(w *worker) {
	c.failReload(&WorkerFailedError{Worker: w.ref, Pid: w.pid, Timeout: w.gen.spec.ReadyTimeout, Probe: w.lastReadyProbe(), Tail: c.failureLines(w.ref)})
}

// reloadBuildFailed fails the reload whose new generation's build failed.
func (c *cluster) reloadBuildFailed(err *BuildFailedError) { c.failReload(err) }

// failReload aborts the reload for err and has the old generation serve
// on at full size.
func (c *cluster) failReload(err error) {
	op := c.reload
	c.reloadEnded("failed", err)
	c.logf("%s reload to generation %d failed: %v", c.name, op.gen.num, err)
	c.emit(EventReloadFailed, nil, err.Error())
	c.abortReload(err)
	if op.rolling() {
		// One old worker for each new one gone, so that the service
		// never runs more than workers + maxSurge even now.
		for _, w := range op.workers {
			c.whenGone([]*worker{w}, func() {
				if c.phase == phaseServing && c.reload == nil {
					c.refillOne()
				}
			})
		}
		// And every slot still empty once they are all gone: those an
		// earlier, superseded reload emptied.
		c.whenGone(op.workers, func() {
			if c.phase == phaseServing && c.reload == nil {
				c.refill()
			}
		})
	} else {
		c.refill()
	}
	c.replayDeferred()
}

// abortReload retires the new generation; the serving one is untouched.
// The reload's callers hear err once the new workers are gone.
func (c *cluster) abortReload(err error) {
	op := c.reload
	switch {
	case errors.Is(err, ErrSuperseded):
		c.reloadEnded("superseded", nil)
	default:
		c.reloadEnded("failed", err) // a stop or shutdown, or failReload's cause (said already)
	}
	c.reload = nil
	c.phase = phaseServing
	c.stopBuild(op.gen)
	op.gen.retire()
	for _, w := range op.workers {
		c.stopWorker(w)
	}
	c.whenGone(op.workers, func() {
		for _, r := range op.replies {
			r <- reloadResult{err: err}
		}
	})
}

// supersede replaces the reload under way with a newer one.
func (c *cluster) supersede(spec *serviceSpec, reply chan reloadResult, trigger string) {
	c.abortReload(ErrSuperseded)
	c.beginReload(spec, reply, trigger)
	if c.phase == phaseServing {
		// The newer generation could not even begin (its sockets): the
		// old one serves on at full size.
		c.refill()
		c.replayDeferred()
	}
}
