package cli_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/recluster/recluster/internal/load"
	"github.com/recluster/recluster/internal/proc"
	"github.com/recluster/recluster/internal/testbin"
)

// bigHeaderRSSBound is what `up` may hold, in KiB, while a thousand
// clients each send a header of almost a megabyte that never ends (it
// held 2.7 GB before the header bound).
const bigHeaderRSSBound = 300 << 10

// TestBigHeaderFloodKeepsUpBounded: 1,000 connections each sending a
// 900 KB header line that never ends get 431 at the header bound, `up`
// stays under bigHeaderRSSBound, and gives the memory back once they are
// gone.
func TestBigHeaderFloodKeepsUpBounded(t *testing.T) {
	addr := testbin.FreeAddr(t)
	dir := stack(t, `
services:
  web:
    command: [WORKER, -mode, naive]
    workers: 1
    proxy: {address: "`+addr+`", protocol: http}
`)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	pid := u.cmd.Process.Pid
	before := rssKiB(t, pid)

	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	// Owned by the test; ends when stop closes. RSS has no event to wait
	// on: it is sampled, 20 ms apart.
	go func() {
		defer close(sampled)
		for {
			if r := int64(rssKiB(t, pid)); r > peak.Load() {
				peak.Store(r)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	var refused atomic.Int64
	var wg sync.WaitGroup
	line := strings.Repeat("a", 16<<10)
	for range 1000 {
		wg.Add(1)
		// Owned by the test, which waits for it; ends when the proxy
		// answers or closes the connection.
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", addr, deadline)
			if err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(deadline))
			go func() { // Owned by the connection; ends when it closes.
				io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: ")
				for sent := 0; sent < 900<<10; sent += len(line) {
					if _, err := io.WriteString(c, line); err != nil {
						return
					}
				}
			}()
			if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil && resp.StatusCode == http.StatusRequestHeaderFieldsTooLarge {
				refused.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	t.Logf("RSS before %d KiB, peak %d KiB; %d of 1000 answered 431", before, peak.Load(), refused.Load())
	if refused.Load() < 900 {
		t.Errorf("only %d of 1000 overlong headers were answered 431", refused.Load())
	}
	if peak.Load() > bigHeaderRSSBound {
		t.Errorf("up reached %d KiB, more than %d", peak.Load(), bigHeaderRSSBound)
	}
	// The memory goes back once the crowd is gone (sampled: there is no
	// event for it).
	limit := time.Now().Add(deadline)
	for rssKiB(t, pid) > before+32<<10 {
		if time.Now().After(limit) {
			t.Fatalf("up still holds %d KiB after the clients left (%d before)", rssKiB(t, pid), before)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// And it still serves.
	if err := get(addr); err != nil {
		t.Errorf("after the flood: %v", err)
	}
}

// TestBlackholeFloodLeavesOthersServing: under a descriptor limit of 1024,
// 2,000 connections to a service whose worker accepts and never answers
// fill that proxy's share and wait in its backlog; meanwhile another
// proxied service serves every request, `status` answers, a worker of it
// that dies is respawned (no crash loop), and once the clients go the
// descriptors come back (idleTimeout).
func TestBlackholeFloodLeavesOthersServing(t *testing.T) {
	holeAddr, webAddr := testbin.FreeAddr(t), testbin.FreeAddr(t)
	dir := stack(t, `
services:
  hole:
    command: [WORKER, -mode, blackhole]
    workers: 1
    proxy: {address: "`+holeAddr+`", idleTimeout: 200ms}
  web:
    command: [WORKER, -mode, naive]
    workers: 2
    proxy: {address: "`+webAddr+`", protocol: http}
`)
	up := startCmdLimited(t, dir, 1024)
	up.waitLine(`every service is ready`)
	pid := up.cmd.Process.Pid
	fdsBefore := testbin.CountFDs(pid)
	web := load.Start(webAddr, load.Options{Conns: 4})

	var flood []net.Conn
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 2000 {
		wg.Add(1)
		// Owned by the test, which waits for it; ends once dialled.
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", holeAddr, 2*time.Second)
			if err != nil {
				return // the backlog is full: the kernel drops the SYN
			}
			c.Write([]byte("hello"))
			mu.Lock()
			flood = append(flood, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	up.waitLine(`recluster +\| hole proxy: \d+ connections open, the most it takes \(maxConnections\)`)
	if fds := testbin.CountFDs(pid); fds > 1000 {
		t.Errorf("up holds %d descriptors under the flood", fds)
	}
	served := web.Served()
	if !web.WaitServed(served+50, deadline) {
		t.Fatalf("web stopped serving under the flood: %v", web.Snapshot().Failures)
	}
	if r := web.Finish(); r.Failed() > 0 {
		t.Errorf("web failed %d requests under the flood: %v %q", r.Failed(), r.Failures, r.Examples)
	}
	st := status(t, dir)
	pids := pidsOf(st, "web")
	if len(pids) != 2 {
		t.Fatalf("web workers: %v", pids)
	}
	syscall.Kill(pids[0], syscall.SIGKILL)
	up.waitLine(fmt.Sprintf(`web\.\d \(pid %d\) ended: killed by SIGKILL; respawning`, pids[0]))
	waitStatus(t, dir, "web respawned and ready", func(s statusJSON) bool {
		n := 0
		for _, sv := range s.Services {
			for _, w := range sv.Workers {
				if sv.Name == "web" && w.State == "ready" {
					n++
				}
			}
		}
		return n == 2
	})
	mu.Lock()
	for _, c := range flood {
		c.Close()
	}
	mu.Unlock()
	// The hole's worker never closes; its connections end by idleTimeout
	// and the descriptors come back (sampled: no event says so).
	limit := time.Now().Add(deadline)
	for testbin.CountFDs(pid) > fdsBefore+16 {
		if time.Now().After(limit) {
			t.Fatalf("up holds %d descriptors after the flood, %d before", testbin.CountFDs(pid), fdsBefore)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out := up.output(); strings.Contains(out, "too many open files") || strings.Contains(out, "failed") {
		t.Errorf("up ran out of descriptors or failed a service:\n%s", out)
	}
}

// startCmdLimited starts `up` under a descriptor limit of n (soft and
// hard), as a shell's ulimit sets it.
func startCmdLimited(t *testing.T, dir string, n int) *upProcess {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", fmt.Sprintf(`ulimit -n %d && exec "$0" up`, n), testbin.Recluster(t))
	return startCmd(t, cmd, dir, testEnv(t), nil)
}

// TestAReloadThatCutsSaysSo: a request still in flight when drainTimeout
// ends is cut by its worker's stop; `reload` names it, exits 3 (README,
// "Exit codes"), and `status` counts it.
func TestAReloadThatCutsSaysSo(t *testing.T) {
	addr := testbin.FreeAddr(t)
	dir := stack(t, `
services:
  web:
    command: [WORKER, -mode, naive]
    workers: 1
    proxy: {address: "`+addr+`", protocol: http}
    drainTimeout: 200ms
`)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	done := make(chan error, 1)
	// Owned by the test; ends with the request.
	go func() {
		resp, err := http.Get("http://" + addr + "/?ms=5000")
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		done <- err
	}()
	u.waitLine(`web\.0 +\| request in, answering in 5000 ms`)
	r := verb(t, dir, "reload")
	if r.code != 3 || !strings.Contains(r.stdout, "ended with 1 request(s) or connection(s) it had not finished") ||
		!strings.Contains(r.err, "cut 1 request(s) or connection(s)") {
		t.Errorf("reload: exit %d\n%s%s", r.code, r.stdout, r.err)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "502") {
		t.Errorf("the cut request: %v", err)
	}
	if st := status(t, dir); len(st.Services) != 1 || st.Services[0].Cut != 1 {
		t.Errorf("status --json: %+v", st)
	}
	if out := verb(t, dir, "status").stdout; !strings.Contains(out, "web: 1 request(s) or connection(s) cut") {
		t.Errorf("status:\n%s", out)
	}
}

// TestReloadWaitSaysWhatItWaitsFor: `reload --wait` that gives up names
// the workers it still waits for, instead of a bare deadline error.
func TestReloadWaitSaysWhatItWaitsFor(t *testing.T) {
	addr := testbin.FreeAddr(t)
	dir := stack(t, `
services:
  stubborn:
    command: [WORKER, -mode, ignoreterm]
    workers: 1
    proxy: {address: "`+addr+`"}
    readyWhen: started
    timeout: 1m
    minReady: 0s
`)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	old := pidsOf(status(t, dir), "stubborn")
	r := verb(t, dir, "reload", "--wait", "1s")
	want := fmt.Sprintf("stubborn.0 (generation 1, pid %d) is stopping", old[0])
	if r.code != 1 || !strings.Contains(r.err, "gave up waiting after 1s (--wait)") || !strings.Contains(r.err, want) {
		t.Errorf("reload --wait 1s: exit %d, want 1 and %q\n%s", r.code, want, r.err)
	}
	// Rather than wait out the workers' minute: a second interrupt kills.
	u.cmd.Process.Signal(syscall.SIGINT)
	u.waitLine(`SIGINT: stopping every service`)
	u.cmd.Process.Signal(syscall.SIGINT)
	u.waitExit()
}

// TestAReloadHeldByMinReadySaysSo: a new worker ready for less than
// minReady is `proving` in status, and `reload --wait` that gives up then
// says what it waits for.
func TestAReloadHeldByMinReadySaysSo(t *testing.T) {
	dir := stack(t, `
services:
  web:
    command: [WORKER]
    workers: 1
    minReady: 1m
`)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	r := verb(t, dir, "reload", "--wait", "1s")
	if r.code != 1 || !strings.Contains(r.err, "web.0 (generation 2, pid ") || !strings.Contains(r.err, ") has been ready for less than minReady") {
		t.Errorf("reload --wait 1s: exit %d:\n%s", r.code, r.err)
	}
	var states []string
	for _, w := range status(t, dir).Services[0].Workers {
		states = append(states, fmt.Sprintf("%d:%s", w.Generation, w.State))
	}
	if !slices.Contains(states, "2:proving") || !slices.Contains(states, "1:ready") {
		t.Errorf("workers %v, want generation 1 ready and 2 proving", states)
	}
}

// TestUpDetachedEndsWhenAnAddressIsTaken: `up -d` whose address another
// program holds exits 1 with the reason, instead of waiting for ever.
func TestUpDetachedEndsWhenAnAddressIsTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := stack(t, `
services:
  web:
    command: [WORKER, -mode, naive]
    workers: 1
    proxy: "`+taken.Addr().String()+`"
`)
	done := make(chan result, 1)
	go func() { done <- verb(t, dir, "up", "-d") }() // Owned by the test; ends with up -d.
	select {
	case r := <-done:
		if r.code != 1 || !strings.Contains(r.err, "address already in use") {
			t.Errorf("up -d: exit %d\n%s%s", r.code, r.stdout, r.err)
		}
	case <-time.After(deadline):
		t.Fatal("up -d did not return")
	}
}

// TestUpDetachedTakesActivationSockets: `up -d` started with sockets
// (socket activation) hands them to its background instance, which
// serves on them instead of binding its own.
func TestUpDetachedTakesActivationSockets(t *testing.T) {
	addr, sock := activationSocket(t)
	dir := stack(t, strings.Replace(activatedStack, "ADDR", addr, 1))
	env := append(testEnv(t), "LISTEN_FDS=1", "LISTEN_FDNAMES=web")
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ exec "$0" up -d`, testbin.Recluster(t))
	cmd.Dir, cmd.Env, cmd.ExtraFiles = dir, env, []*os.File{sock}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("up -d: %v\n%s", err, out)
	}
	t.Cleanup(func() { verb(t, dir, "down") })
	if err := get(addr); err != nil {
		t.Errorf("the activation socket: %v", err)
	}
	if n := listeners(t, addr); n != 1 {
		t.Errorf("%d sockets listen on %s, want only the one passed", n, addr)
	}
}

// TestASocketNotGivenIsNamedAsSuch: a socket inherited with a LISTEN_PID
// of another process is not taken; when it holds the address up wants,
// the error says so rather than naming recluster as a stranger.
func TestASocketNotGivenIsNamedAsSuch(t *testing.T) {
	addr, sock := activationSocket(t)
	dir := stack(t, strings.Replace(activatedStack, "ADDR", addr, 1))
	env := append(testEnv(t), "LISTEN_FDS=1", "LISTEN_PID=1")
	u := startCmd(t, exec.Command(testbin.Recluster(t), "up"), dir, env, []*os.File{sock})
	u.waitLine(`held by recluster itself, on fd 3, which it inherited but was not given: LISTEN_PID="1" is not recluster's pid`)
}

// TestLeftoversOutsideTheGroupLogAreEnded: a worker's child that left its
// process group (setsid) survives a SIGKILL of up, which the group log
// cannot see; the next up for the same config finds it by the instance's
// mark in its environment and ends it.
func TestLeftoversOutsideTheGroupLogAreEnded(t *testing.T) {
	dir := stack(t, `
services:
  escape:
    command: sh -c 'setsid sh -c "echo escaped \$\$; exec sleep 777" & exec sleep 1000'
    workers: 1
`)
	u := startUp(t, dir)
	m := u.waitLine(`escape\.0 +\| escaped (\d+)`)
	pid, _ := strconv.Atoi(m[1])
	u.cmd.Process.Kill()
	u.waitExit()
	if !proc.Alive(pid) {
		t.Fatalf("the escaped process %d did not survive the kill; the test shows nothing", pid)
	}
	again := startUp(t, dir)
	again.waitLine(`ended 1 process\(es\) that a recluster that did not stop cleanly left outside its process groups`)
	waitGone(t, pid, deadline)
}

// TestProcfileShellDefaultServes: the common Procfile line with a shell
// default for PORT serves, as under foreman (it crash-looped with the
// text passed literally).
func TestProcfileShellDefaultServes(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("SKIPPED LOUDLY: no python3")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Procfile"), []byte("web: python3 -m http.server ${PORT:-3000} --bind 127.0.0.1\n"), 0o644)
	_, port, _ := strings.Cut(testbin.FreeAddr(t), ":")
	u := startUp(t, dir, "--port", port)
	u.waitLine(`every service is ready`)
	if err := get("127.0.0.1:" + port); err != nil {
		t.Errorf("web through its PORT default: %v\n%s", err, u.output())
	}
}

// TestLogsFollowInterruptedSaysNothingOfACutOff: Ctrl-C ends `logs -f`
// quietly, with exit 0, rather than claiming it fell behind.
func TestLogsFollowInterruptedSaysNothingOfACutOff(t *testing.T) {
	dir := stack(t, `
services:
  api:
    command: [WORKER, -mode, lines, -n, "3", -after, 1h]
    workers: 1
`)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	cmd := exec.Command(testbin.Recluster(t), "logs", "-f", "api")
	cmd.Dir, cmd.Env = dir, testEnv(t)
	out, _ := cmd.StdoutPipe()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stuck := time.AfterFunc(deadline, func() { cmd.Process.Kill() })
	defer stuck.Stop()
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		t.Fatal("logs -f printed nothing")
	}
	cmd.Process.Signal(syscall.SIGINT)
	for sc.Scan() {
	}
	if err := cmd.Wait(); err != nil || strings.Contains(stderr.String(), "cut off") {
		t.Errorf("logs -f after Ctrl-C: %v %q", err, stderr.String())
	}
}

// TestStatusShowsTheLastReload: after `reload` fails, status and status
// --json say so, with why and the lines that tell it.
func TestStatusShowsTheLastReload(t *testing.T) {
	dir := stack(t, `
services:
  api:
    command: [WORKER]
    workers: 1
`)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	yaml := strings.ReplaceAll("services:\n  api:\n    command: [WORKER, -mode, crash, -code, \"4\"]\n    workers: 1\n    readyWhen: ready\n", "WORKER", testbin.Worker(t))
	os.WriteFile(filepath.Join(dir, "recluster.yml"), []byte(yaml), 0o644)
	if r := verb(t, dir, "reload"); r.code != 1 {
		t.Fatalf("reload to a crashing worker: %d %s", r.code, r.err)
	}
	st := status(t, dir)
	r := st.Services[0].LastReload
	if r == nil || r.Outcome != "failed" || r.Trigger != "reload" || !strings.Contains(r.Reason, "exit code 4") {
		t.Errorf("status --json: %+v", r)
	}
	if out := verb(t, dir, "status").stdout; !strings.Contains(out, "api: last reload") || !strings.Contains(out, "(reload): failed") {
		t.Errorf("status:\n%s", out)
	}
}

// TestAWatchedStackOutlivesAFailedService: with watch on, a service that
// fails (here a crash loop) does not end up: it says it waits for a save,
// and the save that fixes it runs it.
func TestAWatchedStackOutlivesAFailedService(t *testing.T) {
	dir := stack(t, `
services:
  app:
    command: [WORKER, -mode, crash, -code, "3"]
    workers: 1
    startLimit: 1
    watch: "*.txt"
`)
	u := startUp(t, dir)
	u.waitLine(`nothing is left to run: app failed; waiting for a save to try again`)
	yaml := strings.ReplaceAll("services:\n  app:\n    command: [WORKER]\n    workers: 1\n    watch: \"*.txt\"\n", "WORKER", testbin.Worker(t))
	os.WriteFile(filepath.Join(dir, "recluster.yml"), []byte(yaml), 0o644)
	waitStatus(t, dir, "app running after the fix", func(st statusJSON) bool {
		return len(st.Services) == 1 && len(st.Services[0].Workers) == 1 && st.Services[0].Workers[0].State == "ready"
	})
}

// TestUpsOwnOutputFileIsNoSave: with up's output redirected into a folder
// it watches, its own lines are not a save (each reload's lines made the
// next, for ever).
func TestUpsOwnOutputFileIsNoSave(t *testing.T) {
	dir := stack(t, `
services:
  app:
    command: [WORKER]
    workers: 1
    watch: "*.txt"
`)
	outPath := filepath.Join(dir, "out.txt")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := exec.Command(testbin.Recluster(t), "up")
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, testEnv(t), out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	waitStatus(t, dir, "app ready", func(st statusJSON) bool {
		return len(st.Services) == 1 && len(st.Services[0].Workers) == 1 && st.Services[0].Workers[0].State == "ready"
	})
	os.WriteFile(filepath.Join(dir, "x.txt"), []byte("save"), 0o644)
	waitStatus(t, dir, "the save's reload", func(st statusJSON) bool { return st.Services[0].Generation == 2 })
	// A second save: the watcher reads events in order, so by the time it
	// reloads for this one it has seen every write the first reload made
	// to out.txt, which must not have counted as a save.
	os.WriteFile(filepath.Join(dir, "y.txt"), []byte("save"), 0o644)
	waitStatus(t, dir, "the second save's reload", func(st statusJSON) bool { return st.Services[0].Generation >= 3 })
	data, _ := os.ReadFile(outPath)
	if strings.Contains(string(data), "reloading: out.txt") {
		t.Errorf("up's own output counted as a save:\n%.3000s", data)
	}
}
