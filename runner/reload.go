package runner

import "strconv"

// A reload, from start to end, in the order it happens. Throughout, the
// serving generation (c.current) is untouched: its workers go on serving,
// and one that dies is not respawned while the reload runs, since the new
// generation will take its slot or, should the reload fail, the slot is
// refilled from the serving spec.
//
//	beginReload       the new generation starts, beside the serving one
//	reloadWorkerReady a new worker is ready; once all are, promote
//	promote           the new generation serves; the old one retires, and
//	                  the callers hear once its workers are gone
//	failReload        a new worker exited, or missed readyTimeout: the
//	                  reload is aborted, and the old generation serves on,
//	                  its empty slots refilled
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
func (c *cluster) beginReload(spec *serviceSpec, reply chan reloadResult) {
	gen, err := c.newGeneration(spec)
	if err != nil {
		reply <- reloadResult{err: err}
		return
	}
	op := &reloadOp{gen: gen, replies: []chan reloadResult{reply}}
	c.reload = op
	c.phase = phaseReloading
	c.emit(EventReloading, nil, strconv.Itoa(gen.num))
	if gen.needsBuild() {
		return // build.go starts the workers once it is built
	}
	c.spawnReload(op)
}

// spawnReload starts the new generation's workers.
func (c *cluster) spawnReload(op *reloadOp) {
	spec := op.gen.spec
	for id := 0; id < spec.Workers && c.reload == op; id++ {
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
	}
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
	c.logf("%s generation %d is ready; stopping %d old worker(s)", c.name, op.gen.num, len(retiring))
	c.emit(EventReloaded, nil, strconv.Itoa(op.gen.num))
	c.whenGone(retiring, func() {
		var notes []string
		for _, w := range retiring {
			if w.killed != "" {
				notes = append(notes, w.killed)
			}
		}
		for _, r := range op.replies {
			r <- reloadResult{notes: notes}
		}
	})
	c.checkAllReady()
	c.replayDeferred()
}

// failReload aborts the reload for err and has the old generation serve
// on at full size.
func (c *cluster) failReload(err error) {
	c.logf("%s reload to generation %d failed: %v", c.name, c.reload.gen.num, err)
	c.emit(EventReloadFailed, nil, err.Error())
	c.abortReload(err)
	c.refill()
	c.replayDeferred()
}

// abortReload retires the new generation; the serving one is untouched.
// The reload's callers hear err once the new workers are gone.
func (c *cluster) abortReload(err error) {
	op := c.reload
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
func (c *cluster) supersede(spec *serviceSpec, reply chan reloadResult) {
	c.abortReload(ErrSuperseded)
	c.beginReload(spec, reply)
	if c.phase == phaseServing {
		// The newer generation could not even begin (its sockets): the
		// old one serves on at full size.
		c.refill()
		c.replayDeferred()
	}
}
