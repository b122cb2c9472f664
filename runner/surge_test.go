package runner

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

const surgeStack = `
services:
  web:
    command: [sh, -c, 'if [ "$RECLUSTER_GENERATION" -ge 3 ] && [ "$(printenv WORK""ER_ID)" -ge 2 ]; then echo refusing; exit 3; fi; exec WORKER -mode serve -ready -after 100ms']
    workers: 4
    maxSurge: 1
    listen: 127.0.0.1:0
    readyWhen: ready
    timeout: 10s
`

// maxAlive is the most workers of service run after the events seen so far:
// spawns less exits, exact since a cluster's events arrive in order;
// from is the first event counted for the maximum.
func (h *harness) maxAlive(service string, from int) (most int) {
	alive := 0
	for i, e := range h.seen {
		if e.Service != service {
			continue
		}
		switch e.Kind {
		case EventSpawned:
			alive++
		case EventExited:
			alive--
		}
		if i >= from {
			most = max(most, alive)
		}
	}
	return most
}

// TestMaxSurgeReplacesOneAtATime: with maxSurge 1, a reload of 4 workers
// under load never runs more than 5, loses no request, and a failure
// half-way leaves 4 old workers serving.
func TestMaxSurgeReplacesOneAtATime(t *testing.T) {
	t.Parallel() // its own stack and ports; the longest tests, run two at a time
	h := startHarness(t, surgeStack)
	h.waitEvent("ready", is(EventAllReady, "web"))
	load := startLoad(h.addr("web"), 8)
	load.waitServed(t, 50)

	from := len(h.seen)
	if err := h.reload(context.Background(), []string{"web"}); err != nil {
		t.Fatalf("reload: %v", err)
	}
	h.waitFor("the old workers' exits", func() bool { return h.count(is(EventExited, "web")) >= 4 })
	if most := h.maxAlive("web", from); most != 5 {
		t.Errorf("at most %d workers ran during the reload, want workers + maxSurge = 5", most)
	}
	st := h.status("web")
	if st.Generation != 2 || len(st.Workers) != 4 {
		t.Errorf("after the reload: %+v", st)
	}

	// Generation 3 fails at its third worker: the two new ones stop, and
	// the old generation is back at 4.
	from = len(h.seen)
	err := h.reload(context.Background(), []string{"web"})
	if err == nil || !strings.Contains(err.Error(), "exit code 3") {
		t.Fatalf("a reload whose third worker fails: %v\n%s", err, h.text())
	}
	h.waitFor("4 workers of generation 2 ready", func() bool {
		st := h.status("web")
		ready := 0
		for _, w := range st.Workers {
			if w.Generation == 2 && w.State == Ready {
				ready++
			}
		}
		return ready == 4 && len(st.Workers) == 4
	})
	if most := h.maxAlive("web", from); most > 5 {
		t.Errorf("%d workers ran during the failed reload, want at most 5", most)
	}
	load.waitServed(t, 50)
	load.expectNoFailures(t, "through the reloads")
}

// TestMaxSurgeBehindTheProxy: rolling, the new workers serve beside the
// old ones as they come, so keep-alive clients behind the http proxy lose
// nothing, and no more than workers + 1 run.
func TestMaxSurgeBehindTheProxy(t *testing.T) {
	t.Parallel() // its own stack and ports; the longest tests, run two at a time
	h := startHarness(t, `
services:
  web:
    command: [WORKER, -mode, naive, -after, 100ms]
    workers: 4
    maxSurge: 1
    proxy: {address: "127.0.0.1:0", protocol: http}
    timeout: 5s
`)
	h.waitEvent("ready", is(EventAllReady, "web"))
	load := startLoadWith(h.proxyAddr("web"), 8, true)
	load.waitServed(t, 50)
	from := len(h.seen)
	for i := 0; i < 3; i++ {
		if err := h.reload(context.Background(), []string{"web"}); err != nil {
			t.Fatalf("reload %d: %v", i, err)
		}
		load.waitServed(t, 20)
	}
	h.waitFor("the old workers' exits", func() bool { return h.count(is(EventExited, "web")) >= 12 })
	if most := h.maxAlive("web", from); most != 5 {
		t.Errorf("at most %d workers ran during the reloads, want 5", most)
	}
	load.expectNoFailures(t, "through the reloads")
}

// TestMaxSurgeNewWorkersServeBeforeThePromote: in a rolling reload behind
// the proxy, a new worker takes requests as soon as it is ready, while
// the rest of its generation is still to start: an answer from
// generation 2 comes while status still says generation 1 serves. Each
// new worker boots in 1 s, so the roll of 3 leaves at least 2 s between
// the first one ready and the promote.
func TestMaxSurgeNewWorkersServeBeforeThePromote(t *testing.T) {
	t.Parallel() // its own stack and ports; the longest tests, run two at a time
	h := startHarness(t, `
services:
  web:
    command: [WORKER, -mode, naive, -after, 1s]
    workers: 3
    maxSurge: 1
    proxy: {address: "127.0.0.1:0", protocol: http}
    timeout: 5s
`)
	h.waitEvent("ready", is(EventAllReady, "web"))
	addr := h.proxyAddr("web")
	reloaded := make(chan error, 1)
	// Owned by the test; ends with the reload.
	go func() { reloaded <- h.reload(context.Background(), []string{"web"}) }()
	client := &http.Client{Timeout: 10 * time.Second}
	for {
		select {
		case err := <-reloaded:
			t.Fatalf("the reload ended (%v) before a new worker answered a request", err)
		default:
		}
		resp, err := client.Get("http://" + addr + "/")
		if err != nil {
			t.Fatalf("a request failed during the rolling reload: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.HasPrefix(string(body), "gen=2 ") {
			break
		}
	}
	if st := h.status("web"); st.Generation != 1 {
		t.Fatalf("generation %d serves already: the answer from generation 2 proves nothing", st.Generation)
	}
	if err := <-reloaded; err != nil {
		t.Fatalf("reload: %v", err)
	}
}
