package runner

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/recluster/recluster/internal/testbin"
)

// slowStack is a naive app (binds $PORT, no signal handling) behind the
// http proxy with recluster's defaults: timeout 1s, drainTimeout 30s.
const slowStack = `
services:
  web:
    command: [WORKER, -mode, naive]
    workers: 2
    proxy: {address: "127.0.0.1:0", protocol: http}
`

// slowReader reads at most rate bytes a second, so a download stays in
// flight across a reload.
type slowReader struct {
	r    io.Reader
	rate int
}

func (s slowReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	time.Sleep(time.Duration(n) * time.Second / time.Duration(s.rate))
	return n, err
}

// gatedReader reads after bytes from r, then waits for gate to close
// before it reads the rest.
type gatedReader struct {
	r     io.Reader
	after int
	gate  <-chan struct{}
	read  int
}

func (g *gatedReader) Read(p []byte) (int, error) {
	if g.read >= g.after {
		<-g.gate
	} else if len(p) > g.after-g.read {
		p = p[:g.after-g.read]
	}
	n, err := g.r.Read(p)
	g.read += n
	return n, err
}

// patternBlock is 256 periods of the pattern the worker's /download
// sends (byte i is i*7 mod 251), so that it is copied, not computed.
var patternBlock = func() []byte {
	b := make([]byte, 251*256)
	for i := range b {
		b[i] = byte(i * 7 % 251)
	}
	return b
}()

// fillPattern fills b with the pattern from offset off.
func fillPattern(b []byte, off int) {
	for n := 0; n < len(b); {
		n += copy(b[n:], patternBlock[(off+n)%251:])
	}
}

// patternSum is the sha256 of the pattern's first n bytes.
func patternSum(n int) [32]byte {
	h := sha256.New()
	io.Copy(h, io.LimitReader(&patternReader{}, int64(n)))
	return [32]byte(h.Sum(nil))
}

// TestDefaultsCutNothingAcrossAReload: with the default settings, an 8 s
// request, a 50 MB upload and a 50 MB download, each in flight when a
// reload begins and still moving bytes while the old worker drains, all
// complete intact on the old worker, which gets its stop signal only once
// they are done (drainTimeout, not timeout), and the reload reports
// nothing cut.
func TestDefaultsCutNothingAcrossAReload(t *testing.T) {
	t.Parallel() // its own stack and ports; the longest tests, run two at a time
	h := startHarness(t, slowStack)
	h.waitEvent("ready", is(EventAllReady, "web"))
	addr := h.proxyAddr("web")
	const size = 50 << 20
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	results := make(chan string, 3)
	// The upload and the download each move a first MiB, then wait for
	// the reload to have begun: in flight for as long as that takes, on
	// however loaded a machine (polling for three short transfers at
	// once missed them there).
	reloading := make(chan struct{})
	go func() { // Owned by the test; ends with the upload.
		body := io.LimitReader(&gatedReader{r: slowReader{r: &patternReader{}, rate: size / 2}, after: 1 << 20, gate: reloading}, size)
		resp, err := client.Post("http://"+addr+"/upload", "application/octet-stream", body)
		if err != nil {
			results <- "upload: " + err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		results <- fmt.Sprintf("upload: %d %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}()
	go func() { // Owned by the test; ends with the download.
		resp, err := client.Get(fmt.Sprintf("http://%s/download?bytes=%d", addr, size))
		if err != nil {
			results <- "download: " + err.Error()
			return
		}
		hash := sha256.New()
		n, err := io.Copy(hash, &gatedReader{r: slowReader{r: resp.Body, rate: size / 2}, after: 1 << 20, gate: reloading})
		resp.Body.Close()
		ok := err == nil && n == size && [32]byte(hash.Sum(nil)) == patternSum(size)
		results <- fmt.Sprintf("download: %d bytes, intact %v, err %v", n, ok, err)
	}()
	inFlight := func(want int) func() bool {
		return func() bool {
			n := 0
			for _, w := range h.status("web").Workers {
				n += w.InFlight
			}
			return n == want
		}
	}
	h.waitFor("the upload and the download in flight", inFlight(2))
	go func() { // Owned by the test; ends with the request.
		resp, err := client.Get("http://" + addr + "/?ms=8000")
		if err != nil {
			results <- "slow: " + err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		results <- fmt.Sprintf("slow: %d %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}()
	h.waitFor("three requests in flight", inFlight(3))
	type answer struct {
		report ReloadReport
		err    error
	}
	reloaded := make(chan answer, 1)
	go func() { // Owned by the test; ends with the reload, once the old worker is gone.
		report, err := h.m.Reload(context.Background(), nil)
		reloaded <- answer{report, err}
	}()
	h.waitEvent("the new generation serving", is(EventReloaded, "web"))
	close(reloading)
	a := <-reloaded
	if a.err != nil {
		t.Fatal(a.err)
	}
	if a.report.Cut != 0 || len(a.report.Notes) != 0 {
		t.Errorf("the reload cut something: %+v", a.report)
	}
	want := map[string]string{
		"slow":     "slow: 200 gen=1",
		"upload":   fmt.Sprintf("upload: 200 %d %x gen=1", size, patternSum(size)),
		"download": fmt.Sprintf("download: %d bytes, intact true, err <nil>", size),
	}
	for range 3 {
		got := <-results
		kind, _, _ := strings.Cut(got, ":")
		if !strings.HasPrefix(got, want[kind]) {
			t.Errorf("got %q, want %q", got, want[kind])
		}
	}
	if st := h.status("web"); st.Cut != 0 || st.Generation != 2 {
		t.Errorf("status after: generation %d, cut %d", st.Generation, st.Cut)
	}
}

// patternReader reads the download pattern forever.
type patternReader struct{ off int }

func (p *patternReader) Read(b []byte) (int, error) {
	fillPattern(b, p.off)
	p.off += len(b)
	return len(b), nil
}

// TestACutIsReported: a request still in flight when drainTimeout ends is
// cut by the worker's stop (this app dies at SIGTERM), and the reload's
// answer, the log and status say so.
func TestACutIsReported(t *testing.T) {
	h := startHarness(t, `
services:
  web:
    command: [WORKER, -mode, naive]
    workers: 1
    proxy: {address: "127.0.0.1:0", protocol: http}
    drainTimeout: 200ms
`)
	h.waitEvent("ready", is(EventAllReady, "web"))
	slow := getLater("http://" + h.proxyAddr("web") + "/?ms=5000")
	h.waitLine(`web\.0 +\| request in, answering in 5000 ms`)
	report, err := h.m.Reload(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if report.Cut != 1 || len(report.Notes) != 1 || !strings.Contains(report.Notes[0], "1 request(s) or connection(s) it had not finished") {
		t.Errorf("the reload's report: %+v", report)
	}
	if got := <-slow; !strings.HasPrefix(got, "502") {
		t.Errorf("the cut request got %q, want a 502", got)
	}
	h.waitLine(`web\.0 still had 1 request\(s\) or connection\(s\) in flight after drainTimeout 200ms; sending SIGTERM anyway`)
	if st := h.status("web"); st.Cut != 1 {
		t.Errorf("status says %d cut, want 1", st.Cut)
	}
}

// getLater sends a GET on a connection of its own and delivers "STATUS
// body", or the error's text.
func getLater(url string) <-chan string {
	out := make(chan string, 1)
	// Owned by the test; ends with the request.
	go func() {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(url)
		if err != nil {
			out <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out <- fmt.Sprintf("%d %s", resp.StatusCode, body)
	}()
	return out
}

// wsClient is a minimal WebSocket client for the worker's /ws.
type wsClient struct {
	c net.Conn
	r *bufio.Reader
}

func dialWS(t *testing.T, addr string) *wsClient {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, deadline)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(deadline))
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n", key)
	r := bufio.NewReader(c)
	resp, err := http.ReadResponse(r, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %v %v", resp, err)
	}
	return &wsClient{c: c, r: r}
}

// send writes a masked frame.
func (w *wsClient) send(op byte, payload []byte) error {
	mask := [4]byte{1, 2, 3, 4}
	frame := []byte{0x80 | op, 0x80 | byte(len(payload))}
	frame = append(frame, mask[:]...)
	for i, b := range payload {
		frame = append(frame, b^mask[i%4])
	}
	_, err := w.c.Write(frame)
	return err
}

// read reads one unmasked frame of under 126 bytes.
func (w *wsClient) read() (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(w.r, h[:]); err != nil {
		return 0, nil, err
	}
	payload := make([]byte, h[1]&0x7f)
	_, err := io.ReadFull(w.r, payload)
	return h[0] & 0x0f, payload, err
}

func (w *wsClient) echo(t *testing.T, text string) string {
	t.Helper()
	if err := w.send(0x1, []byte(text)); err != nil {
		t.Fatal(err)
	}
	op, payload, err := w.read()
	if err != nil || op != 0x1 {
		t.Fatalf("echo: op %d %q %v", op, payload, err)
	}
	return string(payload)
}

// TestAWebSocketDoesNotHoldTheDrain: an open WebSocket does not keep the
// old worker from its stop signal: the app closes it cleanly (1001), the
// client reconnects to the new generation, and nothing counts as cut.
func TestAWebSocketDoesNotHoldTheDrain(t *testing.T) {
	h := startHarness(t, `
services:
  web:
    command: [WORKER, -mode, naive, -closews]
    workers: 1
    proxy: {address: "127.0.0.1:0", protocol: http}
    timeout: 1h
`)
	h.waitEvent("ready", is(EventAllReady, "web"))
	addr := h.proxyAddr("web")
	ws := dialWS(t, addr)
	if got := ws.echo(t, "hi"); got != "gen=1: hi" {
		t.Fatalf("echo %q", got)
	}
	reloaded := make(chan error, 1)
	var report ReloadReport
	go func() { // Owned by the test; ends with the reload.
		var err error
		report, err = h.m.Reload(context.Background(), nil)
		reloaded <- err
	}()
	op, payload, err := ws.read()
	if err != nil || op != 0x8 || len(payload) < 2 || binary.BigEndian.Uint16(payload) != 1001 {
		t.Fatalf("want a close frame with 1001, got op %d %x %v", op, payload, err)
	}
	ws.send(0x8, payload) // the closing handshake's answer
	ws.c.Close()
	select {
	case err := <-reloaded:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(deadline):
		t.Fatal("the reload waited on the WebSocket")
	}
	if report.Cut != 0 || len(report.Notes) != 0 {
		t.Errorf("the reload cut something: %+v", report)
	}
	again := dialWS(t, addr)
	defer again.c.Close()
	if got := again.echo(t, "hi"); got != "gen=2: hi" {
		t.Errorf("after the reload the echo is %q, want the new generation's", got)
	}
}

// TestChangingProtocolLosesNothing: reloads that switch the proxy between
// tcp and http under load (one request a connection, and keep-alive)
// fail no request: the proxy of the address is the same, connections
// accepted under one protocol finish under it.
func TestChangingProtocolLosesNothing(t *testing.T) {
	t.Parallel() // its own stack and ports; the longest tests, run two at a time
	for _, keepAlive := range []bool{false, true} {
		t.Run(fmt.Sprintf("keepalive=%v", keepAlive), func(t *testing.T) {
			stack := func(protocol string) string {
				return `
services:
  web:
    command: [WORKER, -mode, naive, -after, 100ms]
    workers: 2
    proxy: {address: "` + "ADDR" + `", protocol: ` + protocol + `}
`
			}
			addr := testbin.FreeAddr(t)
			h := startHarness(t, strings.ReplaceAll(stack("http"), "ADDR", addr))
			h.waitEvent("ready", is(EventAllReady, "web"))
			load := startLoadWith(addr, 6, keepAlive)
			load.waitServed(t, 20)
			for i, protocol := range []string{"tcp", "http", "tcp", "http"} {
				h.write(strings.ReplaceAll(stack(protocol), "ADDR", addr))
				if err := h.reload(context.Background(), nil); err != nil {
					t.Fatalf("reload %d to %s: %v", i, protocol, err)
				}
				load.waitServed(t, 20)
			}
			load.expectNoFailures(t, "through reloads that change the protocol")
		})
	}
}

// TestRestartLosesNothingBehindTheProxy: a restart (stop, then start)
// and a stop followed by a start leave no worker for a while; requests
// that come meanwhile wait for the new workers instead of failing.
func TestRestartLosesNothingBehindTheProxy(t *testing.T) {
	h := startHarness(t, naiveStack("http"))
	h.waitEvent("ready", is(EventAllReady, "web"))
	load := startLoad(h.proxyAddr("web"), 6)
	load.waitServed(t, 20)
	for range 3 {
		if err := h.m.Restart(context.Background(), []string{"web"}); err != nil {
			t.Fatal(err)
		}
		load.waitServed(t, 20)
	}
	if err := h.m.Stop(context.Background(), []string{"web"}); err != nil {
		t.Fatal(err)
	}
	if err := h.m.Start(context.Background(), []string{"web"}); err != nil {
		t.Fatal(err)
	}
	load.waitServed(t, 20)
	load.expectNoFailures(t, "through restarts and a stop and start")
}

// TestTellingLinesKeepTheError: a stack of frames after the error line
// does not push it out of a failure's lines.
func TestTellingLinesKeepTheError(t *testing.T) {
	lines := []string{"/app/server.js:3", "  app.get('/', (req, res) => {;", "                                ^", "SyntaxError: Unexpected token ';'"}
	for i := range 20 {
		lines = append(lines, fmt.Sprintf("    at frame%d (node:internal/modules/cjs/loader:%d)", i, i))
	}
	lines = append(lines, "Node.js v20.20.2")
	got := tellingLines(lines, 10)
	if len(got) != 10 || !slices.Contains(got, "SyntaxError: Unexpected token ';'") || got[len(got)-1] != "Node.js v20.20.2" {
		t.Errorf("kept %q", got)
	}
}

// TestStatusShowsAFailedReload: after a reload fails, status says when,
// what asked for it, that it failed, why, and the lines that say it.
func TestStatusShowsAFailedReload(t *testing.T) {
	h := startHarness(t, `
services:
  web:
    command: [WORKER, -mode, serve, -bind, "127.0.0.1:0"]
    workers: 1
    readyWhen: started
`)
	h.waitEvent("ready", is(EventAllReady, "web"))
	h.write(`
services:
  web:
    command: [WORKER, -mode, crash, -code, "3"]
    workers: 1
    readyWhen: ready
`)
	_, err := h.m.Reload(WithTrigger(context.Background(), "watch: app.py"), nil)
	if err == nil {
		t.Fatal("the reload to a crashing worker succeeded")
	}
	r := h.status("web").LastReload
	if r == nil || r.Outcome != "failed" || r.Trigger != "watch: app.py" || !strings.Contains(r.Reason, "exited before it was ready: exit code 3") || r.Generation != 2 {
		t.Errorf("last reload: %+v", r)
	}
}
