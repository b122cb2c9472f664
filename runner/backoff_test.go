package runner

import (
	"context"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/recluster/recluster/config"
)

// fakeStarter starts fake processes that live until the test ends them,
// so the cluster's timing runs on synctest's fake clock.
type fakeStarter struct {
	mu     sync.Mutex
	starts []fakeStart
	procs  map[int]*fakeProc
	specs  map[int]StartSpec
	next   int
	// hold keeps signalled processes alive until release.
	hold bool
	held []*fakeProc
}

// release ends every process held since hold was set, and stops holding.
func (s *fakeStarter) release() {
	s.mu.Lock()
	held := s.held
	s.hold, s.held = false, nil
	s.mu.Unlock()
	for _, p := range held {
		p.end(ExitStatus{Code: -1, Signal: syscall.SIGTERM})
	}
}

type fakeStart struct {
	id  int
	at  time.Time
	pid int
}

type fakeProc struct {
	s       *fakeStarter
	pid     int
	exit    chan ExitStatus
	once    sync.Once
	mu      sync.Mutex
	signals []syscall.Signal
}

func (p *fakeProc) Pid() int { return p.pid }
func (p *fakeProc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	p.signals = append(p.signals, sig)
	p.mu.Unlock()
	p.s.mu.Lock()
	if p.s.hold {
		p.s.held = append(p.s.held, p)
		p.s.mu.Unlock()
		return nil
	}
	p.s.mu.Unlock()
	p.end(ExitStatus{Code: -1, Signal: sig})
	return nil
}

func (p *fakeProc) signalled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.signals) > 0
}
func (p *fakeProc) Wait() ExitStatus { return <-p.exit }
func (p *fakeProc) end(st ExitStatus) {
	p.once.Do(func() { p.exit <- st })
}

func (s *fakeStarter) Start(spec StartSpec) (Process, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next++
	p := &fakeProc{s: s, pid: s.next, exit: make(chan ExitStatus, 1)}
	if s.procs == nil {
		s.procs = map[int]*fakeProc{}
		s.specs = map[int]StartSpec{}
	}
	s.procs[p.pid] = p
	s.specs[p.pid] = spec
	s.starts = append(s.starts, fakeStart{id: spec.Worker.ID, at: time.Now(), pid: p.pid})
	spec.Stdout.Close()
	spec.Stderr.Close()
	return p, nil
}

// crash ends the newest process of slot id.
func (s *fakeStarter) crash(id int) {
	s.mu.Lock()
	var p *fakeProc
	for _, st := range s.starts {
		if st.id == id {
			p = s.procs[st.pid]
		}
	}
	s.mu.Unlock()
	p.end(ExitStatus{Code: 1})
}

func (s *fakeStarter) startsOf(id int) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []time.Time
	for _, st := range s.starts {
		if st.id == id {
			out = append(out, st.at)
		}
	}
	return out
}

func TestBackoffDoublesPerSlotAndResets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		starter := &fakeStarter{}
		cfg := &config.Config{Services: []*config.Service{{
			Name: "api", Command: config.Command{Args: []string{"x"}}, Workers: 2,
			ReadyWhen: config.ReadyStarted, ReadyTimeout: time.Minute, Timeout: time.Second,
			Respawn: time.Second, Backoff: 8 * time.Second, StopSignal: syscall.SIGTERM,
		}}}
		m, err := New(cfg, Options{Starter: starter, Environ: []string{}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- m.Run(ctx, nil) }()
		synctest.Wait()

		// Slot 0 dies as soon as it is back, five times; slot 1 stays up.
		var delays []time.Duration
		for i := 0; i < 5; i++ {
			delays = append(delays, starter.crashAndAwaitRespawn(0))
		}
		want := []time.Duration{1, 2, 4, 8, 8}
		for i, w := range want {
			if delays[i] != w*time.Second {
				t.Errorf("delay %d: %s, want %s (all: %v)", i+1, delays[i], w*time.Second, delays)
			}
		}
		if n := len(starter.startsOf(1)); n != 1 {
			t.Errorf("slot 1 was started %d times; one slot's crashes must not touch another", n)
		}

		// The worker now stays up for longer than backoff: the delay is back
		// to respawn.
		time.Sleep(9 * time.Second)
		if got := starter.crashAndAwaitRespawn(0); got != time.Second {
			t.Errorf("after staying up past backoff: delay %s, want 1s", got)
		}

		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// crashAndAwaitRespawn ends slot id's process and lets fake time run, in
// small steps, until the slot is started again; it returns the delay.
func (s *fakeStarter) crashAndAwaitRespawn(id int) time.Duration {
	n := len(s.startsOf(id))
	crashed := time.Now()
	s.crash(id)
	synctest.Wait()
	for len(s.startsOf(id)) == n {
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
	}
	starts := s.startsOf(id)
	return starts[len(starts)-1].Sub(crashed)
}

func TestBackoffZeroKeepsTheRespawnDelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		starter := &fakeStarter{}
		cfg := &config.Config{Services: []*config.Service{{
			Name: "api", Command: config.Command{Args: []string{"x"}}, Workers: 1,
			ReadyWhen: config.ReadyStarted, ReadyTimeout: time.Minute, Timeout: time.Second,
			Respawn: 500 * time.Millisecond, StopSignal: syscall.SIGTERM,
		}}}
		m, _ := New(cfg, Options{Starter: starter, Environ: []string{}})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- m.Run(ctx, nil) }()
		synctest.Wait()
		var crashes []time.Time
		for i := 0; i < 4; i++ {
			crashes = append(crashes, time.Now())
			starter.crash(0)
			synctest.Wait()
			time.Sleep(time.Minute)
			synctest.Wait()
		}
		starts := starter.startsOf(0)
		for i := 1; i < len(starts); i++ {
			if got := starts[i].Sub(crashes[i-1]); got != 500*time.Millisecond {
				t.Errorf("delay %d: %s, want 500ms", i, got)
			}
		}
		cancel()
		<-done
	})
}
