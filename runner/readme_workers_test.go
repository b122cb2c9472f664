package runner

import (
	"context"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// TestExampleWorkers runs the README's workers in Node, Python and Go on a
// recluster socket: each must see LISTEN_PID equal to its own pid (they
// exit otherwise), serve, and survive a reload under load.
func TestExampleWorkers(t *testing.T) {
	t.Parallel() // its own stack and ports; the longest tests, run two at a time
	examples, _ := filepath.Abs("../examples")
	cases := []struct{ name, program, command string }{
		{"node", "node", "node " + examples + "/node/server.js"},
		{"python", "python3", "python3 " + examples + "/python/server.py"},
		{"go", "go", `go build -o "$TMPDIR/example-go" ` + examples + `/go && exec "$TMPDIR/example-go"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := exec.LookPath(c.program); err != nil {
				t.Skipf("%s is not installed", c.program)
			}
			tmp := t.TempDir()
			h := startHarness(t, `
env: {TMPDIR: "`+tmp+`", GREETING: hi}
services:
  web:
    command: '`+c.command+`'
    dir: `+examples+`
    workers: 2
    listen: 127.0.0.1:0
    readyWhen: ready
    readyTimeout: 120s
    timeout: 10s
`)
			h.waitEvent("ready", is(EventAllReady, "web"))
			addr := h.addr("web")
			pids := map[int]bool{}
			for _, w := range h.status("web").Workers {
				pids[w.Pid] = true
			}
			resp, err := http.Get("http://" + addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			m := regexp.MustCompile(`pid (\d+)`).FindStringSubmatch(string(body))
			if m == nil {
				t.Fatalf("answer %q", body)
			}
			if pid, _ := strconv.Atoi(m[1]); !pids[pid] {
				t.Errorf("answered by pid %d, not a worker in status %v", pid, pids)
			}
			load := startLoad(addr, 4)
			load.waitServed(t, 20)
			t0 := time.Now()
			if err := h.reload(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
			if time.Since(t0) > 5*time.Second {
				t.Logf("slow reload %s: %v\n%s", time.Since(t0), h.seen, h.text())
			}
			load.waitServed(t, 20)
			load.expectNoFailures(t, "across a reload")
		})
	}
}
