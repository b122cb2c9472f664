package runner

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// What happens to a request in flight through the proxy during a reload,
// in the order it happens. The words: a worker *drains* (it is out of the
// proxy's backends, and waits for what it serves to end before its stop
// signal), is *stopped* (its stop signal, then SIGKILL after `timeout`),
// is *released* (it exited, and the proxy counts what its end cut), and
// is *gone* (all of that is over: whenGone's callers run).
//
//	syncBackends  where new work goes: the ready workers of the serving
//	              generation, plus a rolling reload's proven new ones. A
//	              request or connection goes to the least loaded of them;
//	              one a backend refuses (it died a moment ago) is tried on
//	              another. During a reload the old generation serves until
//	              the new one is ready and has stayed so for minReady, so
//	              a new request never waits; when none is ready (a restart,
//	              the first start) it waits up to readyTimeout, then gets
//	              503 with Retry-After (tcp: the connection is closed).
//	stopWorker    an old worker leaves the backends (promote, or one step
//	              of a rolling reload) and drains: nothing new reaches it,
//	              and what it already has goes on. In http mode that is
//	              its requests in flight, each on its own exchange (a
//	              keep-alive client's next request goes to a new worker);
//	              in tcp mode, every connection it holds, which lasts as
//	              long as the client keeps it. WebSockets and other
//	              upgraded connections do not hold the drain up: they last
//	              as long as the worker keeps them, and its stop signal is
//	              how the app learns to close them.
//	drained       the drain ends when nothing but upgraded connections is
//	              left, or at drainTimeout (30s) with the count said; the
//	              worker then gets its stop signal (signalStop), and
//	              SIGKILL after timeout (1s; killTimedOut).
//	release       once its process group is gone, the proxy counts what
//	              its end cut (tcp: connections still open; http: requests
//	              that failed after reaching it), waiting up to 5 s for
//	              the ones in flight to fail; released says the count, and
//	              the worker is gone. A reload whose old workers cut
//	              anything says so, and `recluster reload` exits 3.
//
// So the worst case: a request that reached an old worker has drainTimeout
// (30s by default) to end before the worker's stop signal, and then the
// app's own grace (timeout, 1s) before it is cut. Nothing reaches a worker
// after its drain begins. A `listen` service (a socket the workers share,
// no proxy) has no drain: the old workers get their stop signal at
// promote, and finishing what they accepted is the app's part; what waits
// in the socket's backlog is accepted by the new ones.

// syncBackends gives each router the ready workers of the current
// generation that are not stopping, and the serving generation's
// settings.
func (c *cluster) syncBackends() {
	if len(c.routers) == 0 {
		return
	}
	backends := map[*routerHandle]map[string]string{}
	for _, h := range c.routers {
		backends[h] = map[string]string{}
		// The spec in force sets the router of its address, until a
		// generation of it serves there.
		if c.current == nil || c.current.router != h {
			h.configure(c.spec)
		}
	}
	if c.current != nil && c.current.router != nil {
		c.current.router.configure(c.current.spec)
	}
	if c.current != nil && c.current.router != nil && c.phase != phaseStopping && c.phase != phaseShutDown {
		for _, s := range c.slots {
			if w := s.worker; w != nil && w.state == Ready && !w.stopAsked {
				backends[c.current.router][backendKey(w)] = w.backendAddr()
			}
		}
		// A rolling reload (maxSurge) serves with both generations, or
		// it would shrink as the old one stops.
		if op := c.reload; op != nil && op.rolling() && op.gen.router != nil {
			for _, w := range op.workers {
				if w.state == Ready && !w.stopAsked && w.proving == nil {
					backends[op.gen.router][backendKey(w)] = w.backendAddr()
				}
			}
		}
	}
	for h, b := range backends {
		h.router.SetBackends(b)
	}
}

// stopWorker asks a worker to stop: its stop signal to the group, SIGKILL
// after its timeout. Its exit is then no crash. A worker behind a proxy is
// first taken out of the proxy's backends and gets its signal only once
// nothing it serves is in flight but upgraded connections (or after
// drainTimeout), so an app that handles no signal at all loses nothing,
// and one that does can close its WebSockets cleanly.
func (c *cluster) stopWorker(w *worker) {
	if w.stopAsked {
		return
	}
	w.stopAsked = true
	w.stopProbing()
	stopTimer(w.readyTimer)
	stopTimer(w.proving)
	if h := w.gen.router; h != nil && w.proc != nil && w.state == Ready {
		w.state = Stopping
		c.syncBackends()
		h.router.Drain(backendKey(w), func() {
			// Owned by the loop: delivers the drain's end, or gives up
			// once run has returned.
			go func() {
				select {
				case c.events <- drainedEvent{w: w}:
				case <-c.done:
				}
			}()
		})
		w.drainTimer = c.after(w.gen.spec.DrainTimeout, drainedEvent{w: w, timedOut: true})
		return
	}
	c.signalStop(w)
}

// drained sends a proxied worker its stop signal once its drain has ended.
func (c *cluster) drained(w *worker, timedOut bool) {
	if _, alive := c.live[w]; !alive || w.signalled {
		return
	}
	stopTimer(w.drainTimer)
	if timedOut {
		c.logf("%s still had %d request(s) or connection(s) in flight after drainTimeout %s; sending %s anyway", w.ref, w.gen.router.router.InFlight(backendKey(w)), w.gen.spec.DrainTimeout, unix.SignalName(w.gen.spec.StopSignal))
	}
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
	w.signalled = true
	w.stopProbing()
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

// killTimedOut kills a worker that outlived its stop signal by its
// timeout, and says so: which worker, after how long, and what it still
// held.
func (c *cluster) killTimedOut(w *worker) {
	if _, alive := c.live[w]; !alive || w.proc == nil {
		return
	}
	spec := w.gen.spec
	w.killed = fmt.Sprintf("%s (pid %d) did not exit within %s of %s: killed", w.ref, w.pid, spec.StopTimeout, unix.SignalName(spec.StopSignal))
	if h := w.gen.router; h != nil {
		if n := h.router.InFlight(backendKey(w)); n > 0 {
			w.killed += fmt.Sprintf(" with %d connection(s) still in flight", n)
		}
	}
	c.logf("%s", w.killed)
	w.proc.Signal(syscall.SIGKILL)
}

// release asks the proxy, for a worker that served behind one, what its
// end cut; the worker is gone for whenGone once it has answered, so that
// a reload's answer counts it. It reports false for a worker that served
// behind no proxy.
func (c *cluster) release(w *worker) bool {
	h := w.gen.router
	if h == nil || w.proc == nil {
		return false
	}
	c.releasing[w] = struct{}{}
	h.router.Release(backendKey(w), func(cut int) {
		// Owned by the loop: delivers the count, or gives up once run
		// has returned.
		go func() {
			select {
			case c.events <- releasedEvent{w: w, cut: cut}:
			case <-c.done:
			}
		}()
	})
	return true
}

// released ends a worker's release: what its end cut is said and
// counted, and it is gone.
func (c *cluster) released(w *worker, cut int) {
	if _, ok := c.releasing[w]; !ok {
		return
	}
	delete(c.releasing, w)
	if cut > 0 {
		w.cut = cut
		c.cutTotal += cut
		c.logf("%s (pid %d) ended with %d request(s) or connection(s) it had not finished: cut", w.ref, w.pid, cut)
	}
	c.workerGone(w)
	c.checkStopped()
}
