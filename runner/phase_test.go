package runner

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/recluster/recluster/config"
)

// Each phase transition of a cluster, on the fake starter and synctest's
// clock: every step waits until the bubble is idle (synctest.Wait), so
// the assertions see the cluster at rest, with no timing involved.

type phaseFixture struct {
	t       *testing.T
	c       *cluster
	starter *fakeStarter
	stop    context.CancelFunc
	ran     chan struct{}
}

func newPhaseFixture(t *testing.T) *phaseFixture {
	f := &phaseFixture{t: t, starter: &fakeStarter{}, ran: make(chan struct{})}
	f.c = newCluster(f.spec(), &Options{Starter: f.starter, Output: discardOutput{}}, &sockets{})
	ctx, cancel := context.WithCancel(context.Background())
	f.stop = cancel
	go func() { f.c.run(ctx); close(f.ran) }()
	return f
}

// spec returns a fresh spec of two workers that say when they are ready.
func (f *phaseFixture) spec() *serviceSpec {
	return &serviceSpec{Name: "api", Command: config.Command{Args: []string{"x"}}, Workers: 2,
		ReadyWhen: config.ReadyNotified, ReadyTimeout: time.Minute, StopTimeout: time.Second,
		StopSignal: syscall.SIGTERM, Respawn: time.Second}
}

// procs returns the processes of generation gen, by slot.
func (f *phaseFixture) procs(gen int) []*fakeProc {
	f.starter.mu.Lock()
	defer f.starter.mu.Unlock()
	var out []*fakeProc
	for _, st := range f.starter.starts {
		if f.starter.specs[st.pid].Worker.Generation == gen {
			out = append(out, f.starter.procs[st.pid])
		}
	}
	return out
}

// ready has every process of generation gen say READY=1.
func (f *phaseFixture) ready(gen int) {
	for _, p := range f.procs(gen) {
		f.starter.mu.Lock()
		notify := f.starter.specs[p.pid].Notify
		f.starter.mu.Unlock()
		notify(Notification{Ready: true})
	}
	synctest.Wait()
}

// async runs a request and returns where its answer will come.
func async(call func() error) chan error {
	out := make(chan error, 1)
	go func() { out <- call() }()
	synctest.Wait()
	return out
}

func (f *phaseFixture) reload() error {
	_, err := f.c.Reload(context.Background(), f.spec())
	return err
}

func (f *phaseFixture) status() ServiceStatus {
	st, err := f.c.Status(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	return st
}

// serving starts generation 1 and makes it ready.
func (f *phaseFixture) serving() {
	started := async(func() error { return f.c.Start(context.Background()) })
	f.ready(1)
	if err := <-started; err != nil {
		f.t.Fatalf("start: %v", err)
	}
}

func (f *phaseFixture) end() {
	f.stop()
	synctest.Wait()
	<-f.ran
}

func noAnswer(t *testing.T, ch chan error, what string) {
	t.Helper()
	select {
	case err := <-ch:
		t.Fatalf("%s answered already: %v", what, err)
	default:
	}
}

// serving → reloading → serving: the new generation is promoted once all
// its workers are ready, and the old one stopped.
func TestPhaseReloadPromotes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPhaseFixture(t)
		f.serving()
		reloaded := async(f.reload)
		if st := f.status(); !st.Reloading || len(f.procs(2)) != 2 {
			t.Fatalf("reloading: %+v, %d new processes", st, len(f.procs(2)))
		}
		for _, p := range f.procs(1) {
			if p.signalled() {
				t.Errorf("an old worker was signalled before the new generation was ready")
			}
		}
		noAnswer(t, reloaded, "the reload")
		f.ready(2)
		if err := <-reloaded; err != nil {
			t.Fatalf("reload: %v", err)
		}
		st := f.status()
		if st.Reloading || !st.Running || st.Generation != 2 || len(st.Workers) != 2 {
			t.Errorf("after promotion: %+v", st)
		}
		for _, p := range f.procs(1) {
			if !p.signalled() {
				t.Errorf("old worker %d was not stopped", p.pid)
			}
		}
		f.end()
	})
}

// reloading → serving by abort: a new worker fails, the new generation is
// stopped, the old one is untouched.
func TestPhaseReloadAbortsAndLeavesTheOldGeneration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPhaseFixture(t)
		f.serving()
		before := f.status()
		reloaded := async(f.reload)
		f.procs(2)[0].end(ExitStatus{Code: 3})
		synctest.Wait()
		var wf *WorkerFailedError
		if err := <-reloaded; !errors.As(err, &wf) || wf.Exit == nil || wf.Exit.Code != 3 {
			t.Fatalf("reload with a failing new worker: %v", err)
		}
		for _, p := range f.procs(1) {
			if p.signalled() {
				t.Errorf("the abort touched old worker %d", p.pid)
			}
		}
		if !f.procs(2)[1].signalled() {
			t.Errorf("the new generation's other worker was not stopped")
		}
		after := f.status()
		if after.Reloading || after.Generation != 1 || !samePids(before, after) {
			t.Errorf("the old generation changed:\nbefore %+v\nafter  %+v", before, after)
		}
		f.end()
	})
}

// reloading → reloading: a newer reload supersedes the one under way,
// whose callers hear so; the old generation serves until the newest is
// ready.
func TestPhaseReloadIsSuperseded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPhaseFixture(t)
		f.serving()
		first := async(f.reload)
		second := async(f.reload)
		if err := <-first; !errors.Is(err, ErrSuperseded) {
			t.Fatalf("the superseded reload: %v", err)
		}
		for _, p := range f.procs(2) {
			if !p.signalled() {
				t.Errorf("the superseded generation's worker %d was not stopped", p.pid)
			}
		}
		for _, p := range f.procs(1) {
			if p.signalled() {
				t.Errorf("the serving worker %d was stopped before the newest generation was ready", p.pid)
			}
		}
		if st := f.status(); !st.Reloading || len(f.procs(3)) != 2 {
			t.Fatalf("after supersession: %+v", st)
		}
		f.ready(3)
		if err := <-second; err != nil {
			t.Fatalf("the newest reload: %v", err)
		}
		if st := f.status(); st.Generation != 3 || len(st.Workers) != 2 {
			t.Errorf("after the newest reload: %+v", st)
		}
		f.end()
	})
}

// reloading → stopping → stopped: a stop during a reload aborts it (its
// caller hears ErrStopped) and stops both generations.
func TestPhaseStopDuringAReload(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPhaseFixture(t)
		f.serving()
		reloaded := async(f.reload)
		stopped := async(func() error { return f.c.Stop(context.Background()) })
		if err := <-reloaded; !errors.Is(err, ErrStopped) {
			t.Errorf("the reload under a stop: %v", err)
		}
		if err := <-stopped; err != nil {
			t.Errorf("stop: %v", err)
		}
		for gen := 1; gen <= 2; gen++ {
			for _, p := range f.procs(gen) {
				if !p.signalled() {
					t.Errorf("generation %d's worker %d was not stopped", gen, p.pid)
				}
			}
		}
		if st := f.status(); st.Running || st.Reloading || len(st.Workers) != 0 {
			t.Errorf("after the stop: %+v", st)
		}
		// Stopped, a reload only adopts the spec; a start runs it.
		if err := <-async(f.reload); err != nil {
			t.Errorf("reload while stopped: %v", err)
		}
		if n := len(f.procs(3)); n != 0 {
			t.Errorf("a reload of a stopped service started %d workers", n)
		}
		f.end()
	})
}

// serving → stopping → serving: restart stops every worker, then starts a
// generation; a stop that comes while it waits wins.
func TestPhaseRestartAndAStopThatWins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newPhaseFixture(t)
		f.serving()
		restarted := async(func() error { return f.c.Restart(context.Background(), nil) })
		f.ready(2)
		if err := <-restarted; err != nil {
			t.Fatalf("restart: %v", err)
		}
		if st := f.status(); st.Generation != 2 || !st.Running {
			t.Fatalf("after restart: %+v", st)
		}
		// The old workers end only when the test says so, so the
		// restart waits in phaseStopping when the stop comes.
		f.starter.mu.Lock()
		f.starter.hold = true
		f.starter.mu.Unlock()
		restarted = async(func() error { return f.c.Restart(context.Background(), nil) })
		stopped := async(func() error { return f.c.Stop(context.Background()) })
		if err := <-restarted; !errors.Is(err, ErrStopped) {
			t.Errorf("a restart overtaken by a stop: %v", err)
		}
		f.starter.release()
		synctest.Wait()
		if err := <-stopped; err != nil {
			t.Errorf("stop: %v", err)
		}
		if st := f.status(); st.Running || len(f.procs(3)) != 0 {
			t.Errorf("the stop did not win: %+v, %d new workers", st, len(f.procs(3)))
		}
		f.end()
	})
}
