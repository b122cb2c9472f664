package runner

import (
	"fmt"
	"syscall"
	"time"

	"github.com/recluster/recluster/internal/osproc"
)

// slot is one worker id of the current generation: its worker, a
// replacement the worker asked for (STOPPING=1), and what survives the
// worker: its restarts, last exit and respawn delay.
type slot struct {
	id          int
	worker      *worker // nil while waiting to respawn
	replacement *worker
	restarts    int
	lastExit    *ExitStatus
	delay       time.Duration
	delayed     bool // delay holds the last respawn's delay
	timer       *time.Timer
	token       int // tells the live respawn timer from stale ones
	backoff     bool
	// fastExits counts its workers that died young in a row (tasks.go);
	// done says its worker is not to run again.
	fastExits int
	done      bool
	// replacing says why replacement was started; replaced is the last
	// replacement that took the slot, for status; replaceFails counts
	// the replacements that ended before they were ready, in a row.
	replacing    string
	replaced     *Replacement
	replaceFails int
}

// Replacement is one worker replaced by a new one started beside it,
// before it stopped: it asked (STOPPING=1), failed its health check or
// outgrew maxMemory.
type Replacement struct {
	At     time.Time
	Reason string
}

// scheduleRespawn waits the slot's delay, then refills it: respawn at
// first, doubling with each death up to backoff (from minBackoffStep at
// least, so `respawn: 0` never spins), back to respawn once a worker
// stayed up for backoff. Each slot backs off on its own.
func (c *cluster) scheduleRespawn(s *slot, w *worker, st ExitStatus) {
	spec := c.current.spec
	uptime := time.Since(w.started)
	switch {
	case !s.delayed || (spec.Backoff > 0 && uptime >= spec.Backoff):
		s.delay = spec.Respawn
	case spec.Backoff > 0:
		s.delay = min(max(2*s.delay, minBackoffStep), spec.Backoff)
	default:
		s.delay = max(spec.Respawn, minBackoffStep)
	}
	s.delayed = true
	s.token++
	s.backoff = true
	s.timer = c.after(s.delay, respawnEvent{s, s.token})
	switch {
	case outOfResources(st.Err):
		c.resourceFailed(st)
	case spec.LogRespawns:
		c.logf("%s (pid %d) ended: %s; respawning in %s", w.ref, w.pid, st, s.delay)
	}
	c.emit(EventBackoff, w, s.delay.String())
}

// respawn refills a slot whose delay has passed, unless the slot has been
// dropped (scale), refilled or its timer cancelled since.
func (c *cluster) respawn(s *slot, token int) {
	if s.token != token || c.phase != phaseServing || s.id >= len(c.slots) || c.slots[s.id] != s || s.worker != nil {
		return
	}
	if c.resourceShort() {
		// Another start just failed for want of a process, memory or
		// descriptors: this one waits its delay again rather than fork
		// to fail, so thousands of slots cost a fork a second, not
		// thousands.
		s.timer = c.after(s.delay, respawnEvent{s, s.token})
		return
	}
	s.backoff = false
	s.worker = c.spawn(c.current, s.id)
}

// resourceShortFor is how long after a start failed for want of a
// resource other starts wait.
const resourceShortFor = time.Second

// taskReserve is how many tasks recluster leaves the user under a
// process limit once it has met it: a `recluster status` (a Go program
// needs a few threads) must still start, or the user is locked out.
const taskReserve = 16

// resourceShort says whether a start should wait: one failed for want
// of a resource a moment ago, or the user's process limit leaves no more
// than taskReserve tasks (counted at most once a second).
func (c *cluster) resourceShort() bool {
	if time.Since(c.resourceShortAt) < resourceShortFor {
		return true
	}
	if time.Since(c.roomAt) >= time.Second {
		c.room, c.roomKnown = osproc.TaskRoom(4 * taskReserve)
		c.roomAt = time.Now()
	}
	if c.roomKnown && c.room <= taskReserve {
		return true
	}
	c.room-- // this start takes one
	return false
}

// deferStart leaves a new slot empty, to be filled after its respawn
// delay, while resources are short.
func (c *cluster) deferStart(s *slot) {
	s.delay, s.delayed = max(c.current.spec.Respawn, minBackoffStep), true
	s.token++
	s.backoff = true
	s.timer = c.after(s.delay, respawnEvent{s, s.token})
}

func (s *slot) cancelRespawn() {
	s.token++
	s.backoff = false
	stopTimer(s.timer)
	s.timer = nil
}

// refillOne starts a worker in the first slot that has none, as a
// rolling reload that failed does one at a time.
func (c *cluster) refillOne() { c.refillUpTo(1) }

// refill starts a worker in every slot of the current generation that has
// none, as after a failed reload, during which old workers that died were
// not respawned.
func (c *cluster) refill() { c.refillUpTo(len(c.slots)) }

// refillUpTo starts a worker in each of the first n slots that have none.
func (c *cluster) refillUpTo(n int) {
	for _, s := range c.slots {
		if n == 0 {
			return
		}
		if s.worker == nil {
			s.cancelRespawn()
			s.worker = c.spawn(c.current, s.id)
			n--
		}
	}
}

// resourceSaidEvery is how often starts that fail for want of a process,
// memory or descriptors are said: one line for them all, however many.
const resourceSaidEvery = 5 * time.Second

// resourceFailed says that a worker could not start for want of a
// resource: the first time at once, then at most one line for all of
// them every resourceSaidEvery (a scale to thousands under a process
// limit made a line per fork).
func (c *cluster) resourceFailed(st ExitStatus) {
	c.resourceFails++
	if time.Since(c.resourceSaid) < resourceSaidEvery {
		return
	}
	c.logf("%s: %d worker(s) could not start: %v (a limit of the system's, not the program's fault); each retries with backoff, and this is said at most every %s",
		c.name, c.resourceFails, st.Err, resourceSaidEvery)
	c.resourceFails, c.resourceSaid = 0, time.Now()
}

// errResourceShort fails a start that would take one of the last tasks
// the user's process limit allows, or come right after one that found
// none: it is retried with backoff, as a fork that failed would be.
var errResourceShort = fmt.Errorf("%w: the user's process limit is (nearly) reached; recluster keeps %d tasks of it free for the user's own commands", syscall.EAGAIN, taskReserve)
