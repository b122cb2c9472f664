package runner

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/recluster/recluster/internal/testbin"
)

// naiveStack is an app written the usual way (binds $PORT, handles no
// signal, boots in 200 ms) behind recluster's proxy.
func naiveStack(protocol string) string {
	return `
services:
  web:
    command: [WORKER, -mode, naive, -after, 200ms]
    workers: 2
    proxy: {address: "127.0.0.1:0", protocol: ` + protocol + `}
    timeout: 5s
    minReady: 0s # reloaded dozens of times; TestMinReady* hold the window
`
}

func (h *harness) proxyAddr(service string) string {
	h.t.Helper()
	_, addr, ok := strings.Cut(h.status(service).Proxy, "://")
	if !ok {
		h.t.Fatalf("%s has no proxy", service)
	}
	return addr
}

// TestNaiveAppBehindTheProxyLosesNothing: ten reloads under load, in tcp
// and http mode, with clients that never retry, fail no request; a slow
// request in flight across a reload is answered by the old worker, which
// gets its signal only once it is done.
func TestNaiveAppBehindTheProxyLosesNothing(t *testing.T) {
	t.Parallel() // its own stack and ports; the longest tests, run two at a time
	for _, mode := range []struct {
		protocol  string
		keepAlive bool
	}{{"tcp", false}, {"http", false}, {"http", true}} {
		name := mode.protocol
		if mode.keepAlive {
			name += "-keepalive"
		}
		t.Run(name, func(t *testing.T) {
			h := startHarness(t, naiveStack(mode.protocol))
			h.waitEvent("ready", is(EventAllReady, "web"))
			addr := h.proxyAddr("web")

			load := startLoadWith(addr, 4, mode.keepAlive)
			load.waitServed(t, 20)

			slow := make(chan string, 1)
			go func() {
				// In tcp mode a connection stays with its worker while it
				// is open: a keep-alive client would hold the old worker
				// until its timeout. This one closes, as load clients do.
				c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
				resp, err := c.Get("http://" + addr + "/?ms=2000")
				if err != nil {
					slow <- err.Error()
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				slow <- string(body)
			}()
			h.waitFor("the slow request to arrive", func() bool { return strings.Contains(h.text(), "answering in 2000 ms") })
			inFlight := 0
			for _, w := range h.status("web").Workers {
				inFlight += w.InFlight
				if w.Port == 0 {
					t.Errorf("worker %d shows no port", w.ID)
				}
			}
			if inFlight == 0 {
				t.Errorf("status shows nothing in flight during the slow request")
			}
			for i := 0; i < 10; i++ {
				if err := h.reload(context.Background(), []string{"web"}); err != nil {
					t.Fatalf("reload %d: %v", i, err)
				}
				load.waitServed(t, 10)
			}
			if body := <-slow; !strings.HasPrefix(body, "gen=1 ") {
				t.Errorf("the slow request across the reloads: %q", body)
			}
			load.expectNoFailures(t, "through 10 reloads")
		})
	}
}

// TestNaiveAppStopThenStartFails is the control: the same app binding its
// port itself, restarted stop-then-start, fails requests.
func TestNaiveAppStopThenStartFails(t *testing.T) {
	_, port, _ := net.SplitHostPort(testbin.FreeAddr(t))
	h := startHarness(t, `
services:
  web:
    command: [WORKER, -mode, naive, -after, 200ms]
    workers: 1
    env: {PORT: "`+port+`"}
    readyWhen: listening
`)
	h.waitEvent("ready", is(EventAllReady, "web"))
	load := startLoad("127.0.0.1:"+port, 4)
	load.waitServed(t, 20)
	if err := h.m.Restart(context.Background(), []string{"web"}); err != nil {
		t.Fatal(err)
	}
	load.waitServed(t, 20)
	if _, failures, _ := load.finish(); len(failures) == 0 {
		t.Errorf("stop-then-start of a naive app failed nothing; the load client cannot see a loss")
	}
}

// TestReadinessCountsOnlyThePortGiven: a worker that listens on a port of
// its own choosing is not ready, and the log says which port it bound
// and which it was given; with listen, the same holds for a worker that
// binds rather than taking fd 3.
func TestReadinessCountsOnlyThePortGiven(t *testing.T) {
	h := startHarness(t, `
services:
  proxied:
    command: [WORKER, -mode, listen]
    workers: 1
    proxy: "127.0.0.1:0"
    readyTimeout: 1h
  inherits:
    command: [WORKER, -mode, listen]
    workers: 1
    listen: "127.0.0.1:0"
    readyTimeout: 1h
`)
	h.waitLine(`proxied.0: listens on 127\.0\.0\.1:\d+, not on the port it was given \(PORT=\d+\)`)
	h.waitLine(`inherits.0: listens on 127\.0\.0\.1:\d+, a socket of its own; with listen, it must accept on the socket it inherits`)
	for _, name := range []string{"proxied", "inherits"} {
		if st := h.status(name); len(st.Workers) != 1 || st.Workers[0].State != Starting {
			t.Errorf("%s: %+v", name, st.Workers)
		}
	}
}

// TestAKilledStopIsReported: a worker that ignores its stop signal is
// killed at its timeout, and the reload's answer says so.
func TestAKilledStopIsReported(t *testing.T) {
	h := startHarness(t, `
services:
  stubborn:
    command: [WORKER, -mode, ignoreterm]
    workers: 1
    proxy: "127.0.0.1:0"
    readyWhen: started
    timeout: 200ms
`)
	h.waitLine(`stubborn\.0 +\| ignoring SIGTERM`)
	report, err := h.m.Reload(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if notes := report.Notes; len(notes) != 1 || !strings.Contains(notes[0], "stubborn.0") || !strings.Contains(notes[0], "did not exit within 200ms of SIGTERM: killed") {
		t.Errorf("the reload's notes: %q", report.Notes)
	}
	h.waitLine(`stubborn\.0 \(pid \d+\) did not exit within 200ms of SIGTERM: killed`)
}
