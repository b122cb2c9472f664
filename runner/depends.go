package runner

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/recluster/recluster/config"
)

// Starting in `after` order. A service that waits for others is pending
// until every condition is met (a dependency ready, started, or
// completed), then started; while one can never be met as things are (a
// dependency failed, is blocked, or completed without being ready), it is
// blocked, and it starts after all should that change (a failed task run
// again that now completes). Clusters tell the Manager of their changes
// (serviceState, from their loops); the Manager decides with its mutex
// held and acts after letting go, so that no cluster's loop ever waits on
// another's.

// pendingStart is a service waiting for its `after` conditions.
type pendingStart struct {
	c       *cluster
	after   []string
	when    map[string]string
	done    chan<- error // told Start's result, when someone waits for it
	blocked string       // why it was last blocked
}

// newCluster makes the cluster of spec, which tells the Manager of its
// changes; the caller holds mu or owns m alone.
func (m *Manager) newCluster(spec *serviceSpec) *cluster {
	c := newCluster(spec, &m.opts, &m.sockets)
	c.onState = func(st serviceState) { m.stateChanged(c, st) }
	return c
}

// wait makes c pending on its `after` conditions; with done, the caller
// hears Start's result. The caller holds mu, and calls act with what
// decide returns once it has let go.
func (m *Manager) wait(c *cluster, spec *serviceSpec, done chan<- error) {
	m.pending[c] = &pendingStart{c: c, after: spec.After, when: spec.AfterWhen, done: done}
	m.members[c] = true
}

// stateChanged records a cluster's news and acts on what it changes. It
// is called from the cluster's loop.
func (m *Manager) stateChanged(c *cluster, st serviceState) {
	m.mu.Lock()
	m.states[c] = st
	acts := m.decide()
	m.checkSettled()
	m.mu.Unlock()
	m.act(acts)
}

// startAction is a start or a block decided with mu held.
type startAction struct {
	p     *pendingStart
	start bool
	why   string
}

// decide goes over the pending services: each whose conditions are all
// met is to start, each that cannot start is to be blocked (once per
// reason). The caller holds mu; each action is counted in bg here, so
// that Run, which sets stopping under mu before it waits for bg, waits
// for every one.
func (m *Manager) decide() []startAction {
	if m.stopping || m.runCtx == nil {
		return nil
	}
	var acts []startAction
	for c, p := range m.pending {
		var never []string
		waiting := false
		for _, dep := range p.after {
			dc := m.clusters[dep]
			if dc == nil {
				continue // gone from the file
			}
			when := p.when[dep]
			if when == "" {
				when = config.AfterReady
			}
			met, why := m.states[dc].condition(dep, when)
			switch {
			case why != "":
				never = append(never, why)
			case !met:
				waiting = true
			}
		}
		switch {
		case len(never) > 0:
			why := strings.Join(never, "; ")
			if why != p.blocked {
				p.blocked = why
				acts = append(acts, startAction{p: p, why: why})
			}
		case !waiting:
			delete(m.pending, c)
			acts = append(acts, startAction{p: p, start: true})
		}
	}
	m.bg.Add(len(acts))
	return acts
}

// act carries out decide's starts and blocks, each on a goroutine that
// Run joins, so that none holds up the loop that called.
func (m *Manager) act(acts []startAction) {
	for _, a := range acts {
		// Owned by the Manager; ends once the cluster has answered, or
		// Run's context ends.
		go func() {
			defer m.bg.Done()
			if !a.start {
				reply := make(chan error, 1)
				a.p.c.call(m.runCtx, blockReq{a.why, reply}, reply)
				return
			}
			err := a.p.c.Start(m.runCtx)
			if err != nil && !alreadySaid(err) {
				m.opts.Output.System(a.p.c.name, fmt.Sprintf("%s is not ready: %v", a.p.c.name, err))
				var wf *WorkerFailedError
				if !errors.As(err, &wf) && m.opts.OnEvent != nil {
					// It could not even begin (its address is taken,
					// say): `up -d` and --exit-on-failure end on it
					// rather than wait for a start that will not come.
					m.opts.OnEvent(Event{Kind: EventFailed, Service: a.p.c.name, Detail: err.Error(), Code: 1})
				}
			}
			if a.p.done != nil {
				a.p.done <- err
			}
		}()
	}
}

// alreadySaid tells the errors a cluster has logged itself, or that mean
// recluster is stopping.
func alreadySaid(err error) bool {
	var task *TaskFailedError
	var loop *CrashLoopError
	var build *BuildFailedError
	return errors.Is(err, context.Canceled) || errors.Is(err, ErrShuttingDown) || errors.Is(err, ErrStopped) ||
		errors.As(err, &task) || errors.As(err, &loop) || errors.As(err, &build)
}

// checkSettled closes settled once every service up runs has ended by
// itself: completed, failed or blocked. The caller holds mu.
func (m *Manager) checkSettled() {
	if m.stopping || m.settledDone || len(m.members) == 0 {
		return
	}
	for c := range m.members {
		if !m.states[c].phase.ended() {
			return
		}
	}
	m.settledDone = true
	close(m.settled)
}

// Settled is closed once every service that Run started (or a reload
// added) has ended by itself: each completed, failed or blocked. Nothing
// is left to run then, unless a command starts something.
func (m *Manager) Settled() <-chan struct{} { return m.settled }

// forget drops what the Manager knows of a cluster that leaves; the
// caller holds mu.
func (m *Manager) forget(c *cluster) {
	delete(m.pending, c)
	delete(m.members, c)
	delete(m.states, c)
}

// unpend takes the named services out of the pending ones: a command
// started or stopped them, which overrides waiting.
func (m *Manager) unpend(cs []*cluster) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range cs {
		delete(m.pending, c)
	}
}
