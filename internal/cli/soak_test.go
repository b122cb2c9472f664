package cli_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/recluster/recluster/internal/testbin"
)

// The soak: from a seed, a random sequence of operations against the real
// binary while a load client drives a listening service; after each step,
// the invariants. CI runs a bounded version with fixed seeds; a longer one
// runs with RECLUSTER_SOAK=30m (a random seed, printed), and
// RECLUSTER_SOAK_SEED=N replays seed N.
func TestSoak(t *testing.T) {
	budget := 40 * time.Second
	seeds := []uint64{1, 2}
	if d, err := time.ParseDuration(os.Getenv("RECLUSTER_SOAK")); err == nil {
		budget = d
		seeds = []uint64{uint64(time.Now().UnixNano())}
	}
	if n, err := strconv.ParseUint(os.Getenv("RECLUSTER_SOAK_SEED"), 10, 64); err == nil {
		seeds = []uint64{n}
	}
	per := budget / time.Duration(len(seeds))
	for _, seed := range seeds {
		// Not in parallel: its invariants count every test worker of the
		// machine.
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { soak(t, seed, per) })
	}
}

type soakModel struct {
	t       *testing.T
	dir     string
	addr    string
	u       *upProcess
	target  map[string]int
	running map[string]bool
	step    int
	seed    uint64
	ops     []string // what each step did, for failure reports
}

const soakConfig = `
services:
  web:
    command: [WORKER, -mode, serve, -ready]
    workers: %d
    listen: "%s"
    readyWhen: ready
    readyTimeout: 20s
    timeout: 10s
  bg:
    command: [WORKER, -mode, env]
    workers: %d
    respawn: 20ms
    # The soak SIGKILLs these at random, as often as five times within
    # minUptime: that is the soak's doing, not a crash loop to end.
    startLimit: 0
`

func (m *soakModel) fail(format string, args ...any) {
	m.t.Helper()
	m.t.Fatalf("seed %d, step %d: %s\nup's output ends:\n%s", m.seed, m.step, fmt.Sprintf(format, args...), tail(m.u.output(), 40))
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (m *soakModel) writeConfig(web, bg int, webCommand string) {
	cfg := fmt.Sprintf(soakConfig, web, m.addr, bg)
	if webCommand != "" {
		cfg = strings.Replace(cfg, "[WORKER, -mode, serve, -ready]", webCommand, 1)
	}
	cfg = strings.ReplaceAll(cfg, "WORKER", testbin.Worker(m.t))
	os.WriteFile(filepath.Join(m.dir, "recluster.yml"), []byte(cfg), 0o644)
}

func soak(t *testing.T, seed uint64, budget time.Duration) {
	rng := rand.New(rand.NewPCG(seed, 7))
	m := &soakModel{t: t, dir: t.TempDir(), addr: testbin.FreeAddr(t), seed: seed,
		target: map[string]int{"web": 2, "bg": 2}, running: map[string]bool{"web": true, "bg": true}}
	m.writeConfig(2, 2, "")
	m.u = startUp(t, m.dir)
	m.u.waitLine(`every service is ready`)

	ctx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var loadFailures []string
	served := 0
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				err := get(m.addr)
				mu.Lock()
				if err != nil && ctx.Err() == nil {
					loadFailures = append(loadFailures, fmt.Sprintf("step %d: %v", m.step, err))
				} else {
					served++
				}
				mu.Unlock()
			}
		}()
	}
	fdsAtStart := testbin.CountFDs(m.u.cmd.Process.Pid)

	end := time.Now().Add(budget)
	for m.step = 1; time.Now().Before(end); m.step++ {
		m.randomStep(rng)
		m.checkInvariants()
	}
	stopLoad()
	wg.Wait()
	if len(loadFailures) > 0 {
		m.fail("%d requests failed (of %d), e.g. %q; steps: %v", len(loadFailures), served+len(loadFailures), loadFailures[:min(5, len(loadFailures))], m.opsNear(loadFailures))
	}
	// Back to the starting shape, recluster holds as many fds as then:
	// one pair of pipes (and a notify socket) per worker, and the sockets.
	if !m.running["bg"] {
		m.must("start", "bg")
		m.running["bg"] = true
	}
	m.must("scale", "web=2", "bg=2")
	m.target["web"], m.target["bg"] = 2, 2
	m.checkInvariants()
	if fds := testbin.CountFDs(m.u.cmd.Process.Pid); fds > fdsAtStart+2 {
		m.fail("recluster's fds grew from %d to %d", fdsAtStart, fds)
	}
	t.Logf("seed %d: %d steps, %d requests, none failed", seed, m.step-1, served)
}

// opsNear returns the steps around each failure, "step N: …" leading it.
func (m *soakModel) opsNear(failures []string) []string {
	var out []string
	for _, f := range failures {
		var n int
		fmt.Sscanf(f, "step %d:", &n)
		for i := max(n-3, 0); i < min(n+1, len(m.ops)); i++ {
			out = append(out, m.ops[i])
		}
	}
	return out
}

func (m *soakModel) verb(args ...string) result { return verb(m.t, m.dir, args...) }

func (m *soakModel) must(args ...string) {
	m.t.Helper()
	if r := m.verb(args...); r.code != 0 {
		m.fail("recluster %s: exit %d: %s", strings.Join(args, " "), r.code, r.err)
	}
}

func (m *soakModel) randomStep(rng *rand.Rand) {
	op := rng.IntN(10)
	m.ops = append(m.ops, fmt.Sprintf("%d:%s", m.step, []string{"reload web", "reload web", "reload all", "scale", "stop/start bg", "restart bg", "kill bg worker", "failing version", "invalid file", "concurrent reloads"}[op]))
	switch op {
	case 0, 1:
		m.must("reload", "web")
	case 2:
		m.must("reload")
	case 3:
		svc := []string{"web", "bg"}[rng.IntN(2)]
		if !m.running[svc] {
			return
		}
		n := 1 + rng.IntN(4)
		m.must("scale", fmt.Sprintf("%s=%d", svc, n))
		m.target[svc] = n
		// The file keeps its count: a later reload of all brings it back.
		m.writeConfig(m.target["web"], m.target["bg"], "")
	case 4:
		if m.running["bg"] {
			m.must("stop", "bg")
		} else {
			m.must("start", "bg")
		}
		m.running["bg"] = !m.running["bg"]
	case 5:
		if m.running["bg"] {
			m.must("restart", "bg")
		}
	case 6:
		// SIGKILL a background worker: it must come back in its slot.
		if !m.running["bg"] {
			return
		}
		pids := pidsOf(status(m.t, m.dir), "bg")
		victim := pids[rng.IntN(len(pids))]
		syscall.Kill(victim, syscall.SIGKILL)
		m.u.waitLine(fmt.Sprintf(`\(pid %d\) ended: killed by SIGKILL; respawning`, victim))
	case 7:
		// A new version that fails: the reload is refused, nothing changes.
		before := pidsOf(status(m.t, m.dir), "web")
		m.writeConfig(m.target["web"], m.target["bg"], `[WORKER, -mode, crash, -code, "9"]`)
		r := m.verb("reload", "web")
		m.writeConfig(m.target["web"], m.target["bg"], "")
		if r.code != 1 || !strings.Contains(r.err, "exit code 9") {
			m.fail("reload of a crashing version: exit %d: %s", r.code, r.err)
		}
		if after := pidsOf(status(m.t, m.dir), "web"); fmt.Sprint(after) != fmt.Sprint(before) {
			m.fail("a failed reload changed web: %v -> %v", before, after)
		}
	case 8:
		// An invalid file is refused.
		os.WriteFile(filepath.Join(m.dir, "recluster.yml"), []byte("services: {web: {wokers: 2}}\n"), 0o644)
		r := m.verb("reload")
		m.writeConfig(m.target["web"], m.target["bg"], "")
		if r.code != 1 || !strings.Contains(r.err, `did you mean "workers"`) {
			m.fail("reload of an invalid file: exit %d: %s", r.code, r.err)
		}
	case 9:
		// Concurrent reloads from several clients: each succeeds or is
		// superseded.
		var wg sync.WaitGroup
		for i := 0; i < 3; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if r := m.verb("reload", "web"); r.code != 0 && !strings.Contains(r.err, "superseded") {
					m.t.Errorf("seed %d step %d: concurrent reload: %s", m.seed, m.step, r.err)
				}
			}()
		}
		wg.Wait()
	}
}

// checkInvariants: every running service has exactly its target count of
// ready workers of its serving generation, and every worker process on the
// machine is one that status lists.
func (m *soakModel) checkInvariants() {
	m.t.Helper()
	st := status(m.t, m.dir)
	listed := map[int]bool{}
	for _, s := range st.Services {
		want := 0
		if m.running[s.Name] {
			want = m.target[s.Name]
		}
		ready := 0
		for _, w := range s.Workers {
			listed[w.Pid] = true
			if w.State == "ready" && w.Generation == s.Generation {
				ready++
			}
		}
		if s.Name == "bg" && ready < want {
			// A killed worker may still be in its respawn delay; its
			// respawn prints its env, ending with its PID line.
			m.waitBGReady(want)
			return
		}
		if ready != want || len(s.Workers) != want {
			m.fail("%s: %d workers (%d ready), want %d: %+v", s.Name, len(s.Workers), ready, want, s.Workers)
		}
	}
	for _, pid := range testbin.WorkerProcesses(m.t) {
		if !listed[pid] {
			// A worker stopping as status was read is gone a moment later.
			waitGone(m.t, pid, 10*time.Second)
		}
	}
}

func (m *soakModel) waitBGReady(want int) {
	m.t.Helper()
	end := time.Now().Add(deadline)
	for time.Now().Before(end) {
		st := status(m.t, m.dir)
		for _, s := range st.Services {
			if s.Name != "bg" {
				continue
			}
			ready := 0
			for _, w := range s.Workers {
				if w.State == "ready" {
					ready++
				}
			}
			if ready == want && len(s.Workers) == want {
				return
			}
		}
		// Wait for the next line of up's output: a respawned bg worker is
		// ready as it starts and then prints its environment.
		select {
		case <-m.u.added:
		case <-time.After(time.Until(end)):
		}
	}
	m.fail("bg did not come back to %d ready workers", want)
}
