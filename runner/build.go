package runner

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/recluster/recluster/internal/osproc"
	"github.com/recluster/recluster/logmux"
)

// BuildID is the worker id of a generation's build in its output: its
// lines show as SERVICE.build.
const BuildID = logmux.Build

// A generation whose spec has a build runs it once, before any of its
// workers starts: the build's exit decides whether the generation's
// workers start (exit 0) or the generation fails (anything else, or
// buildTimeout). A build is started only once the loop has no request
// waiting, so a generation that a newer reload supersedes at once never
// builds at all.

// builder is one generation's build process.
type builder struct {
	gen     *generation
	proc    Process
	pid     int
	started time.Time
	timer   *time.Timer // buildTimeout
	stopped bool        // asked to stop: superseded, stopped or timed out
	timeout bool
}

// buildEvent: a build has ended.
type buildEvent struct {
	b      *builder
	status ExitStatus
}

// buildTimeoutEvent: a build ran past buildTimeout.
type buildTimeoutEvent struct{ b *builder }

func (buildEvent) isMessage()        {}
func (buildTimeoutEvent) isMessage() {}

// BuildFailedError says why a generation's build did not succeed.
type BuildFailedError struct {
	Service    string
	Generation int
	Exit       ExitStatus
	Timeout    time.Duration // set when it ran past buildTimeout
	Tail       []string
}

func (e *BuildFailedError) Error() string {
	var b strings.Builder
	if e.Timeout > 0 {
		fmt.Fprintf(&b, "%s: the build for generation %d ran past its buildTimeout (%s)", e.Service, e.Generation, e.Timeout)
	} else {
		fmt.Fprintf(&b, "%s: the build for generation %d failed: %s", e.Service, e.Generation, e.Exit)
	}
	if len(e.Tail) > 0 {
		b.WriteString("; its last lines:")
		for _, l := range e.Tail {
			b.WriteString("\n    " + l)
		}
	}
	return b.String()
}

// needsBuild says whether gen must build before its workers start.
func (g *generation) needsBuild() bool { return g.spec.Build != nil && !g.built }

// startPendingBuild starts the build of the generation waiting for one,
// if any: the current one starting, or the reload's new one. The loop
// calls it when no request is waiting.
func (c *cluster) startPendingBuild() {
	var gen *generation
	switch {
	case c.reload != nil && c.reload.gen.needsBuild() && c.reload.gen.build == nil:
		gen = c.reload.gen
	case c.phase == phaseServing && c.current != nil && c.current.needsBuild() && c.current.build == nil:
		gen = c.current
	default:
		return
	}
	spec := gen.spec
	ref := WorkerRef{Service: c.name, ID: BuildID, Generation: gen.num}
	b := &builder{gen: gen, started: time.Now()}
	gen.build = b
	c.buildingUntil.Store(math.MaxInt64)
	env := append(append([]string(nil), spec.Env...), "RECLUSTER_SERVICE="+c.name, "RECLUSTER_GENERATION="+strconv.Itoa(gen.num))
	stdout, stderr := c.opts.Output.Open(ref)
	argv, err := spec.Build.Argv(func(k string) string { return osproc.Getenv(env, k) })
	if err == nil {
		c.logf("%s: building generation %d: %s", c.name, gen.num, spec.Build)
		b.proc, err = c.opts.Starter.Start(StartSpec{Worker: ref, Argv: argv, Dir: spec.Dir, Env: env,
			ReadyWhen: "started", Stdout: stdout, Stderr: stderr, StopSignal: spec.StopSignal, StopTimeout: spec.StopTimeout,
			Notify: func(Notification) {}})
	} else {
		stdout.Close()
		stderr.Close()
	}
	c.builders[b] = struct{}{}
	if err != nil {
		// Owned by the loop: delivers the failure as the build's end.
		go c.deliver(buildEvent{b, ExitStatus{Code: -1, Err: err}})
		return
	}
	b.pid = b.proc.Pid()
	// Owned by the loop: ends when the build's group is gone; run waits
	// for it before it returns.
	go func() {
		st := b.proc.Wait()
		c.deliver(buildEvent{b, st})
	}()
	b.timer = c.after(spec.BuildTimeout, buildTimeoutEvent{b})
}

// deliver sends an event to the loop, or gives up once run has returned.
func (c *cluster) deliver(e message) {
	select {
	case c.events <- e:
	case <-c.done:
	}
}

// stopBuild stops a generation's build under way, if any.
func (c *cluster) stopBuild(gen *generation) {
	b := gen.build
	if b == nil || b.stopped || b.proc == nil {
		return
	}
	b.stopped = true
	b.proc.Signal(gen.spec.StopSignal)
	b.timer = c.after(gen.spec.StopTimeout, buildTimeoutEvent{b})
}

func (c *cluster) buildTimedOut(b *builder) {
	if b.gen.build != b || b.proc == nil {
		return
	}
	if b.stopped {
		b.proc.Signal(syscall.SIGKILL)
		return
	}
	b.timeout = true
	c.stopBuild(b.gen)
}

// buildEnded starts the generation's workers after a successful build,
// or fails the generation.
func (c *cluster) buildEnded(b *builder, st ExitStatus) {
	stopTimer(b.timer)
	delete(c.builders, b)
	if len(c.builders) == 0 {
		c.buildingUntil.Store(0)
	}
	gen := b.gen
	gen.build = nil
	if gen.retired {
		gen.releaseIfDone()
		return // superseded, or stopped: nothing waits for it
	}
	if st.Code == 0 && st.Err == nil && !b.timeout {
		gen.built = true
		c.logf("%s: generation %d built in %s", c.name, gen.num, time.Since(b.started).Round(time.Millisecond))
		c.spawnGeneration(gen)
		return
	}
	err := &BuildFailedError{Service: c.name, Generation: gen.num, Exit: st,
		Tail: c.failureLines(WorkerRef{Service: c.name, ID: BuildID, Generation: gen.num})}
	if b.timeout {
		err.Timeout = gen.spec.BuildTimeout
	}
	if c.reload != nil && c.reload.gen == gen {
		c.reloadBuildFailed(err)
		return
	}
	if c.current == gen && c.phase == phaseServing {
		c.failStart(err)
	}
}

// spawnGeneration starts a built generation's workers: the reload's new
// workers, or the slots of a starting service.
func (c *cluster) spawnGeneration(gen *generation) {
	if op := c.reload; op != nil && op.gen == gen {
		c.spawnReload(op)
		return
	}
	for _, s := range c.slots {
		if s.worker == nil {
			s.worker = c.spawn(gen, s.id)
		}
	}
	c.checkAllReady()
}
