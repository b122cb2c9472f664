package runner

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/recluster/recluster/config"
)

// Restart policies, crash loops and `after` conditions, on the fake
// starter and synctest's clock.

// task returns a service of one worker, ready once started.
func task(name string, edit func(*config.Service)) *config.Service {
	s := &config.Service{Name: name, Command: config.Command{Args: []string{name}}, Workers: 1,
		ReadyWhen: config.ReadyStarted, ReadyTimeout: time.Minute, Timeout: time.Second,
		Respawn: time.Second, Backoff: 30 * time.Second, StopSignal: syscall.SIGTERM,
		Restart: config.RestartAlways, StartLimit: 5, MinUptime: 5 * time.Second, AfterWhen: map[string]string{}}
	if edit != nil {
		edit(s)
	}
	return s
}

// stack runs a Manager over services on the fake starter until the test
// ends; the bubble is idle when it returns.
func stack(t *testing.T, services ...*config.Service) (*Manager, *fakeStarter) {
	starter := &fakeStarter{}
	m, err := New(&config.Config{Services: services}, Options{Starter: starter, Environ: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- m.Run(ctx, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	synctest.Wait()
	return m, starter
}

// startsOfService counts the processes started for a service.
func (s *fakeStarter) startsOfService(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, st := range s.starts {
		if s.specs[st.pid].Worker.Service == name {
			n++
		}
	}
	return n
}

// exit ends the newest process of a service with st.
func (s *fakeStarter) exit(name string, st ExitStatus) {
	s.mu.Lock()
	var p *fakeProc
	for _, start := range s.starts {
		if s.specs[start.pid].Worker.Service == name {
			p = s.procs[start.pid]
		}
	}
	s.mu.Unlock()
	p.end(st)
	synctest.Wait()
}

func stateOf(t *testing.T, m *Manager, name string) ServiceStatus {
	t.Helper()
	sts, err := m.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sts {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no service %s", name)
	return ServiceStatus{}
}

func TestRestartPolicies(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, starter := stack(t,
			task("never-ok", func(s *config.Service) { s.Restart = config.RestartNever }),
			task("never-fails", func(s *config.Service) { s.Restart = config.RestartNever }),
			task("onfail-ok", func(s *config.Service) { s.Restart = config.RestartOnFailure }),
			task("onfail-fails", func(s *config.Service) { s.Restart = config.RestartOnFailure }),
			task("always", nil))
		time.Sleep(10 * time.Second) // every worker is past minUptime
		for _, name := range []string{"never-ok", "onfail-ok", "always"} {
			starter.exit(name, ExitStatus{Code: 0})
		}
		for _, name := range []string{"never-fails", "onfail-fails"} {
			starter.exit(name, ExitStatus{Code: 3})
		}
		time.Sleep(time.Minute) // every respawn delay has passed
		synctest.Wait()
		for name, want := range map[string]struct {
			state  string
			starts int
		}{
			"never-ok": {"completed", 1}, "never-fails": {"failed", 1}, "onfail-ok": {"completed", 1},
			"onfail-fails": {"running", 2}, "always": {"running", 2},
		} {
			st := stateOf(t, m, name)
			if st.State != want.state || starter.startsOfService(name) != want.starts {
				t.Errorf("%s: %s after %d starts, want %s after %d", name, st.State, starter.startsOfService(name), want.state, want.starts)
			}
		}
		st := stateOf(t, m, "never-fails")
		if len(st.Workers) != 1 || st.Workers[0].State != Exited || st.Workers[0].ExitCode == nil || *st.Workers[0].ExitCode != 3 ||
			!strings.Contains(st.Reason, "exit code 3") {
			t.Errorf("the failed task's status: %+v %+v", st, st.Workers)
		}
	})
}

func TestACrashLoopEndsAtStartLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, starter := stack(t, task("api", func(s *config.Service) { s.StartLimit = 3; s.Respawn = 0 }))
		// Each worker dies young: as soon as it is back.
		for i := 0; i < 10 && stateOf(t, m, "api").State != "failed"; i++ {
			n := starter.startsOfService("api")
			starter.exit("api", ExitStatus{Code: 2})
			for starter.startsOfService("api") == n && stateOf(t, m, "api").State != "failed" {
				time.Sleep(50 * time.Millisecond)
				synctest.Wait()
			}
		}
		st := stateOf(t, m, "api")
		if n := starter.startsOfService("api"); n != 3 || st.State != "failed" {
			t.Fatalf("%d starts, state %s; want exactly startLimit (3) starts, then failed", n, st.State)
		}
		if !strings.Contains(st.Reason, "exited 3 times in a row") || !strings.Contains(st.Reason, "exit code 2") {
			t.Errorf("reason: %s", st.Reason)
		}
		// A start tries again.
		if err := m.Start(context.Background(), []string{"api"}); err != nil {
			t.Fatal(err)
		}
		if n := starter.startsOfService("api"); n != 4 {
			t.Errorf("start after the crash loop: %d starts, want 4", n)
		}
	})
}

// TestAForkThatFailsIsNoCrashLoop: a start that fails for want of a
// process (a process limit) is retried with backoff however often; it is
// not the program's crash loop.
func TestAForkThatFailsIsNoCrashLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, starter := stack(t, task("api", func(s *config.Service) { s.StartLimit = 3; s.Respawn = 0 }))
		for i := 0; i < 6; i++ {
			n := starter.startsOfService("api")
			starter.exit("api", ExitStatus{Code: -1, Err: fmt.Errorf("starting api: %w", syscall.EAGAIN)})
			for starter.startsOfService("api") == n && stateOf(t, m, "api").State != "failed" {
				time.Sleep(50 * time.Millisecond)
				synctest.Wait()
			}
		}
		if st, n := stateOf(t, m, "api"), starter.startsOfService("api"); st.State == "failed" || n != 7 {
			t.Errorf("after 6 failed forks: state %s, %d starts; want running, 7", st.State, n)
		}
	})
}

// TestRespawnZeroNeverSpins: with respawn 0 the first respawn is at once,
// and further crashes in a row double from minBackoffStep.
func TestRespawnZeroNeverSpins(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, starter := stack(t, task("api", func(s *config.Service) { s.Respawn = 0; s.StartLimit = 0; s.Backoff = time.Second }))
		var delays []time.Duration
		for i := 0; i < 6; i++ {
			delays = append(delays, starter.crashAndAwaitRespawn(0))
		}
		want := []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, time.Second}
		for i := range want {
			if delays[i] != want[i] {
				t.Errorf("delays %v, want %v", delays, want)
				break
			}
		}
	})
}

func TestAfterConditions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, starter := stack(t,
			task("migrate", func(s *config.Service) { s.Restart = config.RestartNever }),
			task("cache", nil),
			task("api", func(s *config.Service) {
				s.After = []string{"migrate", "cache"}
				s.AfterWhen = map[string]string{"migrate": config.AfterCompleted, "cache": config.AfterStarted}
			}),
			task("web", func(s *config.Service) {
				s.After = []string{"api"}
				s.AfterWhen = map[string]string{"api": config.AfterReady}
			}))
		if n := starter.startsOfService("api"); n != 0 {
			t.Fatalf("api started before migrate completed")
		}
		starter.exit("migrate", ExitStatus{Code: 1})
		for _, name := range []string{"api", "web"} {
			if st := stateOf(t, m, name); st.State != "blocked" || starter.startsOfService(name) != 0 {
				t.Errorf("%s after migrate failed: %s (%s), %d starts", name, st.State, st.Reason, starter.startsOfService(name))
			}
		}
		if r := stateOf(t, m, "api").Reason; r != "migrate failed" {
			t.Errorf("api's reason: %q", r)
		}
		// migrate run again, and this time it completes: what it blocked
		// starts, in order.
		if err := m.Start(context.Background(), []string{"migrate"}); err != nil {
			t.Fatal(err)
		}
		starter.exit("migrate", ExitStatus{Code: 0})
		for _, name := range []string{"api", "web"} {
			if st := stateOf(t, m, name); st.State != "running" || starter.startsOfService(name) != 1 {
				t.Errorf("%s after migrate completed: %s, %d starts", name, st.State, starter.startsOfService(name))
			}
		}
		if n := starter.startsOfService("migrate"); n != 2 {
			t.Errorf("migrate ran %d times, want 2", n)
		}
	})
}

// TestATaskThatCompletesIsNotReady: a dependent that needs it ready is
// blocked when it completes first.
func TestATaskThatCompletesIsNotReady(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, starter := stack(t,
			task("seed", func(s *config.Service) { s.Restart = config.RestartNever; s.ReadyWhen = config.ReadyNotified }),
			task("api", func(s *config.Service) {
				s.After = []string{"seed"}
				s.AfterWhen = map[string]string{"seed": config.AfterReady}
			}))
		starter.exit("seed", ExitStatus{Code: 0})
		if st := stateOf(t, m, "api"); st.State != "blocked" || st.Reason != "seed completed without being ready" {
			t.Errorf("api: %s %q", st.State, st.Reason)
		}
	})
}

func TestSettledWhenNothingIsLeft(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, starter := stack(t,
			task("a", func(s *config.Service) { s.Restart = config.RestartNever }),
			task("b", func(s *config.Service) {
				s.Restart = config.RestartNever
				s.After = []string{"a"}
				s.AfterWhen = map[string]string{"a": config.AfterCompleted}
			}))
		starter.exit("a", ExitStatus{Code: 0})
		select {
		case <-m.Settled():
			t.Fatal("settled while b runs")
		default:
		}
		starter.exit("b", ExitStatus{Code: 0})
		select {
		case <-m.Settled():
		default:
			t.Fatal("not settled once every task completed")
		}
	})
}

// TestAReloadGoesInAfterOrder: a reload of every service reruns the task
// that web needs completed and reloads web only once it has; when the
// task fails, web is not reloaded and the reload says why.
func TestAReloadGoesInAfterOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m, starter := stack(t,
			task("migrate", func(s *config.Service) { s.Restart = config.RestartNever }),
			task("web", func(s *config.Service) {
				s.After = []string{"migrate"}
				s.AfterWhen = map[string]string{"migrate": config.AfterCompleted}
			}))
		starter.exit("migrate", ExitStatus{Code: 0})
		if n := starter.startsOfService("web"); n != 1 {
			t.Fatalf("web started %d times before any reload", n)
		}
		reloadAll := func() chan error {
			done := make(chan error, 1)
			go func() { _, err := m.Reload(context.Background(), nil); done <- err }()
			synctest.Wait()
			return done
		}

		done := reloadAll()
		if n := starter.startsOfService("migrate"); n != 2 {
			t.Fatalf("the reload ran migrate %d times in all, want 2", n)
		}
		if n := starter.startsOfService("web"); n != 1 {
			t.Fatalf("web reloaded while migrate ran (%d starts)", n)
		}
		starter.exit("migrate", ExitStatus{Code: 0})
		if err := <-done; err != nil {
			t.Fatalf("reload after migrate completed: %v", err)
		}
		if n := starter.startsOfService("web"); n != 2 {
			t.Fatalf("web started %d times, want 2: reloaded once migrate completed", n)
		}

		done = reloadAll()
		starter.exit("migrate", ExitStatus{Code: 4})
		err := <-done
		if err == nil || !strings.Contains(err.Error(), "migrate: failed: migrate.0 ended: exit code 4") || !strings.Contains(err.Error(), "web: not reloaded, since migrate failed") {
			t.Fatalf("reload with a failing migrate: %v", err)
		}
		if n := starter.startsOfService("web"); n != 2 {
			t.Errorf("web started %d times, want 2: not reloaded after migrate failed", n)
		}
		if st := stateOf(t, m, "web"); st.State != "running" {
			t.Errorf("web is %s after the failed reload, want running on its old generation", st.State)
		}

		// A reload of web alone does not rerun migrate (failed now).
		if _, err := m.Reload(context.Background(), []string{"web"}); err != nil {
			t.Fatalf("reload web: %v", err)
		}
		if n := starter.startsOfService("migrate"); n != 3 {
			t.Errorf("reload web ran migrate: %d runs, want 3", n)
		}
	})
}
