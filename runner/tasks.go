package runner

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/recluster/recluster/config"
)

// What happens when a worker exits by itself, in one place: its restart
// policy decides whether its slot is refilled or done; a slot that keeps
// dying young ends the service (a crash loop); a service whose every slot
// is done has completed, or failed. And what the Manager is told, so that
// services waiting on this one's `after` condition start, or are blocked.

// minBackoffStep is the least delay of a respawn after the first of a run
// of crashes: with `respawn: 0`, the delay still doubles from here, so a
// worker that dies at once never spins.
const minBackoffStep = 100 * time.Millisecond

// afterExit decides what becomes of a serving slot whose worker exited by
// itself.
func (c *cluster) afterExit(s *slot, w *worker, st ExitStatus, wasReady bool) {
	spec := w.gen.spec
	switch {
	case outOfResources(st.Err):
		// The system could not fork or open what a worker needs (a
		// process, memory or descriptor limit): not the program's
		// fault, and no crash loop; it is retried with backoff
		// for as long as it takes, and the workers that run go on.
	case !wasReady || time.Since(w.started) < spec.MinUptime:
		s.fastExits++
	default:
		s.fastExits = 0
	}
	if !st.Success() {
		e := c.event(EventCrashed, w, st.String())
		e.Code = st.ShellCode()
		c.emitEvent(e)
	}
	switch {
	case spec.Restart == config.RestartNever, spec.Restart == config.RestartOnFailure && st.Success():
		s.done = true
		c.checkFinished()
	case spec.StartLimit > 0 && s.fastExits >= spec.StartLimit:
		c.failCrashLoop(w, st, s.fastExits)
	default:
		s.restarts++
		c.scheduleRespawn(s, w, st)
	}
}

// outOfResources says whether a start failed for want of a process,
// memory or file descriptors rather than because of the program: such a
// start is retried with backoff and never counts towards startLimit, so
// a shortage (another service's flood of clients, say) cannot fail a
// healthy service.
func outOfResources(err error) bool {
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// checkFinished ends a service whose every slot is done: completed when
// every worker exited 0, failed otherwise. Its slots stay, for status to
// show their exits.
func (c *cluster) checkFinished() {
	if c.phase != phaseServing {
		return
	}
	var failed *slot
	for _, s := range c.slots {
		if !s.done || s.worker != nil || s.replacement != nil {
			return
		}
		if failed == nil && !s.lastExit.Success() {
			failed = s
		}
	}
	c.current.retire()
	if failed == nil {
		c.phase = phaseCompleted
		c.logf("%s completed: every worker exited 0", c.name)
		c.answerWaiters(nil)
		c.emit(EventCompleted, nil, "")
	} else {
		ref := WorkerRef{Service: c.name, ID: failed.id, Generation: c.current.num}
		err := &TaskFailedError{Worker: ref, Exit: *failed.lastExit, Tail: c.opts.Output.Tail(ref, 10)}
		c.phase, c.failure = phaseFailed, err
		c.logf("%v", err)
		c.answerWaiters(err)
		e := c.event(EventFailed, nil, err.Error())
		e.Code = failed.lastExit.ShellCode()
		c.emitEvent(e)
	}
	c.replayDeferred()
}

// failCrashLoop ends a service whose worker died young too many times in
// a row: respawning stops, the other workers are stopped, and the service
// waits in phaseFailed, with the last exit and lines, for a start,
// restart or reload.
func (c *cluster) failCrashLoop(w *worker, st ExitStatus, times int) {
	err := &CrashLoopError{Worker: w.ref, Pid: w.pid, Exit: st, Times: times, MinUptime: w.gen.spec.MinUptime,
		Tail: c.opts.Output.Tail(w.ref, 10)}
	c.logf("%v", err)
	c.stopAll(err, func() {
		c.phase, c.failure = phaseFailed, err
		e := c.event(EventFailed, nil, err.Error())
		e.Code = st.ShellCode()
		c.emitEvent(e)
	})
}

// whileEnded: a completed, failed or blocked service runs nothing. A stop
// makes it stopped; a start or restart runs it again (a task runs once
// more); a reload runs the new settings, but a blocked service keeps
// waiting for what it starts after.
func (c *cluster) whileEnded(r request) {
	switch r := r.(type) {
	case stopReq:
		c.phase, c.failure, c.slots = phaseStopped, nil, nil
		r.reply <- nil
	case reloadReq:
		if err := c.adopt(r.spec); err != nil {
			r.refuse(err)
			return
		}
		if c.phase == phaseBlocked {
			c.logf("%s is blocked (%v); its new settings apply when it starts", c.name, c.failure)
			r.reply <- reloadResult{}
			return
		}
		c.phase, c.failure, c.slots = phaseStopped, nil, nil
		c.start(func(err error) { r.reply <- reloadResult{err: err} })
	default:
		c.phase, c.failure, c.slots = phaseStopped, nil, nil
		c.whileStopped(r)
	}
}

// block marks a service that never started as blocked by what it starts
// after, saying why once. A service that runs, or ran, is left alone.
func (c *cluster) block(r blockReq) {
	switch c.phase {
	case phaseStopped:
	case phaseBlocked:
		if c.failure.Error() == r.reason {
			r.reply <- nil
			return
		}
	default:
		r.reply <- nil
		return
	}
	c.phase, c.failure = phaseBlocked, blockedError(r.reason)
	c.logf("%s is blocked: %s; it starts once that changes, or with `recluster start %s`", c.name, r.reason, c.name)
	c.emit(EventBlocked, nil, r.reason)
	r.reply <- nil
}

type blockedError string

func (e blockedError) Error() string { return string(e) }

// serviceState is what a cluster tells the Manager of itself: enough to
// decide the `after` conditions of the services that wait for it.
type serviceState struct {
	phase   phase
	started bool // its workers were started, once
	ready   bool // every worker was ready, once
	reason  string
}

// publish tells the Manager of a change of state, from the loop.
func (c *cluster) publish() {
	st := serviceState{phase: c.phase, started: c.everStarted, ready: c.readyOnce}
	if c.failure != nil && c.phase.ended() {
		st.reason = c.failure.Error()
	}
	if settled := st.phase.ended() || st.phase == phaseStopped || st.phase == phaseShutDown; settled {
		for _, w := range c.settleWaiters {
			w <- st
		}
		c.settleWaiters = nil
	}
	if st == c.published {
		return
	}
	c.published = st
	if c.onState != nil {
		c.onState(st)
	}
}

// settle waits until the service runs nothing by itself (settleReq) and
// returns its state then.
func (c *cluster) settle(ctx context.Context) (serviceState, error) {
	return ask(ctx, c, settleReq{make(chan serviceState, 1)})
}

// condition says whether st meets an `after` condition: met, or, when it
// never can as things are, why not; neither while it may yet.
func (st serviceState) condition(dep, when string) (met bool, never string) {
	switch {
	case when == config.AfterCompleted && st.phase == phaseCompleted,
		when == config.AfterReady && st.ready,
		when == config.AfterStarted && st.started:
		return true, ""
	case st.phase == phaseFailed:
		return false, fmt.Sprintf("%s failed", dep)
	case st.phase == phaseBlocked:
		return false, fmt.Sprintf("%s is blocked", dep)
	case st.phase == phaseCompleted:
		return false, fmt.Sprintf("%s completed without being %s", dep, when)
	}
	return false, ""
}

// TaskFailedError says how a service that was not to run again ended:
// one of its workers exited with a failure.
type TaskFailedError struct {
	Worker WorkerRef
	Exit   ExitStatus
	Tail   []string
}

func (e *TaskFailedError) Error() string {
	return fmt.Sprintf("%s failed: %s ended: %s%s", e.Worker.Service, e.Worker, e.Exit, tailLines(e.Tail))
}

// CrashLoopError says why recluster stopped respawning a service.
type CrashLoopError struct {
	Worker    WorkerRef
	Pid       int
	Exit      ExitStatus
	Times     int
	MinUptime time.Duration
	Tail      []string
}

func (e *CrashLoopError) Error() string {
	return fmt.Sprintf("%s failed: its workers exited %d times in a row before they were ready or within minUptime (%s), the last %s: %s; respawning stopped (startLimit)%s",
		e.Worker.Service, e.Times, e.MinUptime, e.Worker, e.Exit, tailLines(e.Tail))
}

func tailLines(tail []string) string {
	if len(tail) == 0 {
		return ""
	}
	return "; its last lines:\n    " + strings.Join(tail, "\n    ")
}
