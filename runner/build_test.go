package runner

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"

	"github.com/recluster/recluster/config"
)

// buildFixture is a phaseFixture whose spec builds first.
func newBuildFixture(t *testing.T, onEvent func(Event)) *phaseFixture {
	f := &phaseFixture{t: t, starter: &fakeStarter{}, ran: make(chan struct{})}
	f.c = newCluster(f.buildSpec(), &Options{Starter: f.starter, Output: discardOutput{}, OnEvent: onEvent}, &sockets{})
	ctx, cancel := context.WithCancel(context.Background())
	f.stop = cancel
	go func() { f.c.run(ctx); close(f.ran) }()
	return f
}

func (f *phaseFixture) buildSpec() *serviceSpec {
	s := f.spec()
	s.Build = &config.Command{Args: []string{"make"}}
	s.BuildTimeout = 600e9
	return s
}

// builds returns the build processes started, by generation.
func (f *phaseFixture) builds() map[int]*fakeProc {
	f.starter.mu.Lock()
	defer f.starter.mu.Unlock()
	out := map[int]*fakeProc{}
	for _, st := range f.starter.starts {
		if spec := f.starter.specs[st.pid]; spec.Worker.ID == BuildID {
			out[spec.Worker.Generation] = f.starter.procs[st.pid]
		}
	}
	return out
}

// finishBuild ends generation gen's build with code.
func (f *phaseFixture) finishBuild(gen, code int) {
	f.t.Helper()
	b := f.builds()[gen]
	if b == nil {
		f.t.Fatalf("generation %d has no build", gen)
	}
	b.end(ExitStatus{Code: code})
	synctest.Wait()
}

// TestBuildRunsOncePerGeneration: a start and a reload each build once,
// before any of their workers starts.
func TestBuildRunsOncePerGeneration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newBuildFixture(t, nil)
		started := async(func() error { return f.c.Start(context.Background()) })
		if n := len(f.procs(1)); n != 1 || len(f.builds()) != 1 {
			t.Fatalf("before the build ended: %d processes, builds %v", n, f.builds())
		}
		if st := f.status(); st.State != "building" {
			t.Errorf("state while building: %q", st.State)
		}
		f.finishBuild(1, 0)
		f.ready(1)
		if err := <-started; err != nil {
			t.Fatalf("start: %v", err)
		}
		if n := len(f.procs(1)); n != 3 { // the build and two workers
			t.Errorf("generation 1 ran %d processes, want the build and 2 workers", n)
		}
		reloaded := async(func() error { _, err := f.c.Reload(context.Background(), f.buildSpec()); return err })
		f.finishBuild(2, 0)
		f.ready(2)
		if err := <-reloaded; err != nil {
			t.Fatalf("reload: %v", err)
		}
		if n := len(f.builds()); n != 2 {
			t.Errorf("%d builds for two generations", n)
		}
		f.end()
	})
}

// TestASupersededGenerationNeverBuilds: a reload superseded by one already
// waiting when it began never starts its build.
func TestASupersededGenerationNeverBuilds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		hold := make(chan struct{})
		f := newBuildFixture(t, func(e Event) {
			if e.Kind == EventReloading && e.Detail == "2" {
				<-hold // the loop waits here while a newer reload queues
			}
		})
		started := async(func() error { return f.c.Start(context.Background()) })
		f.finishBuild(1, 0)
		f.ready(1)
		<-started
		first := async(func() error { _, err := f.c.Reload(context.Background(), f.buildSpec()); return err })
		second := async(func() error { _, err := f.c.Reload(context.Background(), f.buildSpec()); return err })
		close(hold)
		synctest.Wait()
		if err := <-first; !errors.Is(err, ErrSuperseded) {
			t.Fatalf("the first reload: %v", err)
		}
		if b := f.builds(); b[2] != nil || b[3] == nil {
			t.Fatalf("builds: %v; want generation 3's only", b)
		}
		f.finishBuild(3, 0)
		f.ready(3)
		if err := <-second; err != nil {
			t.Fatalf("the second reload: %v", err)
		}
		f.end()
	})
}

// TestAFailedBuildLeavesTheOldGeneration: a reload whose build fails
// changes nothing, and says why.
func TestAFailedBuildLeavesTheOldGeneration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newBuildFixture(t, nil)
		started := async(func() error { return f.c.Start(context.Background()) })
		f.finishBuild(1, 0)
		f.ready(1)
		<-started
		before := f.status()
		reloaded := async(func() error { _, err := f.c.Reload(context.Background(), f.buildSpec()); return err })
		f.finishBuild(2, 2)
		var bf *BuildFailedError
		if err := <-reloaded; !errors.As(err, &bf) || bf.Exit.Code != 2 || bf.Generation != 2 {
			t.Fatalf("reload with a failing build: %v", err)
		}
		for _, p := range f.procs(1) {
			if p.signalled() {
				t.Errorf("a failed build touched the serving worker %d", p.pid)
			}
		}
		if after := f.status(); !samePids(before, after) || after.Generation != 1 || after.State != "running" {
			t.Errorf("after a failed build: %+v", after)
		}
		f.end()
	})
}

// TestAFailedBuildAtStartWaitsForAFix: a service whose first build fails
// waits in failed, with the reason; a reload tries again.
func TestAFailedBuildAtStartWaitsForAFix(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newBuildFixture(t, nil)
		started := async(func() error { return f.c.Start(context.Background()) })
		f.finishBuild(1, 1)
		var bf *BuildFailedError
		if err := <-started; !errors.As(err, &bf) {
			t.Fatalf("start with a failing build: %v", err)
		}
		if st := f.status(); st.State != "failed" || st.Reason == "" || len(st.Workers) != 0 {
			t.Fatalf("after a failed first build: %+v", st)
		}
		reloaded := async(func() error { _, err := f.c.Reload(context.Background(), f.buildSpec()); return err })
		f.finishBuild(2, 0)
		f.ready(2)
		if err := <-reloaded; err != nil {
			t.Fatalf("the reload that retried: %v", err)
		}
		if st := f.status(); st.State != "running" || len(st.Workers) != 2 {
			t.Errorf("after the retry: %+v", st)
		}
		f.end()
	})
}
