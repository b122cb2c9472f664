package runner

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/recluster/recluster/config"
	"github.com/recluster/recluster/internal/osproc"
	"github.com/recluster/recluster/internal/proc"
)

// Probes: readiness by a probe (readyWhen: {http|tcp|exec|output}), the
// health of ready workers (health:), and a bound on memory (maxMemory).
// A probe runs on a goroutine of its worker's, never on the loop; the
// loop hears each result as an event, counts failures and decides. A
// worker that passes its readiness probe is ready. One that fails its
// health probe `failures` times in a row, or outgrows maxMemory, is
// replaced as a worker that sends STOPPING=1 is: its replacement starts
// beside it, and once that one is ready it takes the slot, and the sick
// one leaves the proxy's backends and is drained and stopped like any
// old worker (replace, and markReady in lifecycle.go).

type (
	// probeEvent is one probe's result.
	probeEvent struct {
		w      *worker
		health bool // a health probe; else a readiness one
		ok     bool
		detail string // what failed, or what passed
		at     time.Time
	}
	// memoryTickEvent: time to look at the workers' memory again.
	memoryTickEvent struct{}
	// memoryEvent is what a look found: each sampled worker's process
	// group's resident memory, in bytes, by pid.
	memoryEvent struct{ usage map[int]proc.Usage }
)

func (probeEvent) isMessage()      {}
func (memoryTickEvent) isMessage() {}
func (memoryEvent) isMessage()     {}

// memoryEvery is how often the memory of a service with maxMemory is
// looked at: one read of /proc for all its workers.
var memoryEvery = 2 * time.Second

// HealthStatus is what a worker's probes last said.
type HealthStatus struct {
	// Probe is the kind that last ran (http, tcp, exec, output), and
	// Ready is true for a readiness probe, false for a health one.
	Probe string
	Ready bool
	At    time.Time
	OK    bool
	// Detail says what failed, or what passed.
	Detail string
	// Failures counts the health probes failed in a row.
	Failures int
}

// probeTarget is what a probe of one worker needs, taken from the worker
// on the loop, so that the probing goroutine touches no worker state.
type probeTarget struct {
	port, id, pid string
	dir           string
	env           []string
}

func (c *cluster) probeTarget(w *worker) probeTarget {
	env := append(w.env[:len(w.env):len(w.env)], "RECLUSTER_WORKER_PID="+strconv.Itoa(w.pid))
	return probeTarget{port: osproc.Getenv(env, "PORT"), id: strconv.Itoa(w.ref.ID), pid: strconv.Itoa(w.pid), dir: w.gen.spec.Dir, env: env}
}

// expand puts the worker's PORT and WORKER_ID into a probe's address.
func (t probeTarget) expand(s string) string {
	return strings.NewReplacer("${PORT}", t.port, "$PORT", t.port, "${WORKER_ID}", t.id, "$WORKER_ID", t.id).Replace(s)
}

// startProbing probes w every p.Every until w exits: a readiness probe
// until it first passes, a health probe (after a first wait) for good.
func (c *cluster) startProbing(w *worker, p *config.Probe, health bool) {
	if w.probeCtx == nil {
		w.probeCtx, w.endProbes = context.WithCancel(context.Background())
	}
	ctx, target := w.probeCtx, c.probeTarget(w)
	// The worker's PORT and WORKER_ID go into the address once, not at
	// every probe.
	expanded := *p
	expanded.HTTP, expanded.TCP = target.expand(p.HTTP), target.expand(p.TCP)
	p = &expanded
	// Owned by the worker: ends once the worker is asked to stop or has
	// exited (stopProbing cancels ctx, which also cuts short a probe in
	// progress); every worker has exited before run returns.
	go func() {
		t := time.NewTicker(p.Every)
		defer t.Stop()
		if health {
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
		var keep keptConn // the http probe's connection, kept between probes
		defer keep.close()
		for {
			ok, detail := runProbe(ctx, p, target, &keep)
			if ctx.Err() != nil {
				return
			}
			select {
			case c.events <- probeEvent{w: w, health: health, ok: ok, detail: detail, at: time.Now()}:
			case <-ctx.Done():
				return
			}
			if ok && !health {
				return // ready: the readiness probe is done
			}
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
		}
	}()
}

// runProbe runs one probe, bounded by its timeout; p's addresses are
// the worker's already (startProbing).
func runProbe(ctx context.Context, p *config.Probe, t probeTarget, keep *keptConn) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	ok, detail := false, ""
	switch {
	case p.HTTP != "":
		ok, detail = keep.get(ctx, p.HTTP)
	case p.TCP != "":
		addr := p.TCP
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if ok, detail = err == nil, "connect "+addr; ok {
			conn.Close()
		} else {
			detail += ": " + probeError(err, p.Timeout)
		}
	case p.Exec != nil:
		ok, detail = probeExec(ctx, p, t)
	}
	return ok, detail
}

// keptConn is an http probe's connection to its worker, owned by the
// probing goroutine. A health probe is one small request a second per
// worker for as long as the worker runs: net/http's client, with a
// reader and a writer goroutine a connection, cost up 3 % of a core at
// 100 workers, and a new connection a probe 2.7 %, most of it the
// loopback handshake and close; a kept connection is a write and a read.
// It is closed when the probes end, which they do as the worker is asked
// to stop, so that it cannot hold up a graceful exit.
type keptConn struct {
	conn net.Conn
	lr   io.LimitedReader // bounds what one answer may send
	br   *bufio.Reader
	host string // the connection's host:port

	// The last URL probed, read once: a prober's URL is the same at
	// every probe. req is its request, written as it is.
	url string
	req []byte
}

// probeAnswerMax bounds an answer to a probe, head and body: a worker
// that sends more is failed, and its connection closed.
const probeAnswerMax = 64 << 10

func (k *keptConn) close() {
	if k.conn != nil {
		k.conn.Close()
		k.conn = nil
	}
}

// get sends GET rawURL and reads the answer; 2xx passes. Redirects are
// not followed: a 3xx is the worker's answer, not a pass.
func (k *keptConn) get(ctx context.Context, rawURL string) (bool, string) {
	say := "GET " + rawURL + ": "
	if rawURL != k.url {
		u, err := url.Parse(rawURL)
		if err != nil || u.Scheme != "http" || u.Host == "" {
			return false, say + "not an http URL"
		}
		host := u.Host
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "80")
		}
		k.close()
		k.url, k.host = rawURL, host
		k.req = []byte("GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host + "\r\nUser-Agent: recluster-probe\r\n\r\n")
	}
	reused := k.conn != nil
	resp, err := k.exchange(ctx)
	if err != nil && reused && ctx.Err() == nil {
		// The worker closed the kept connection meanwhile: once more, on
		// a new one.
		resp, err = k.exchange(ctx)
	}
	if err != nil {
		return false, say + probeError(ctxErr(ctx, err), 0)
	}
	return resp.StatusCode/100 == 2, say + resp.Status
}

// exchange sends one request on the kept connection, made first if there
// is none, and reads its whole answer; it closes the connection on any
// failure, and when the answer says so.
func (k *keptConn) exchange(ctx context.Context) (*http.Response, error) {
	if k.conn == nil {
		d := net.Dialer{KeepAlive: -1}
		conn, err := d.DialContext(ctx, "tcp", k.host)
		if err != nil {
			return nil, err
		}
		k.conn = conn
		k.lr.R = conn
		k.br = bufio.NewReaderSize(&k.lr, 1024)
	}
	conn := k.conn
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	k.lr.N = probeAnswerMax
	_, err := conn.Write(k.req)
	var resp *http.Response
	if err == nil {
		resp, err = http.ReadResponse(k.br, nil)
	}
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if k.lr.N <= 0 {
		err = fmt.Errorf("an answer longer than %d bytes", probeAnswerMax)
	}
	if err != nil || resp.Close {
		k.close()
	}
	return resp, err
}

// ctxErr is ctx's error when it has ended (the deadline that cut err
// short), else err.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func probeExec(ctx context.Context, p *config.Probe, t probeTarget) (bool, string) {
	argv, err := p.Exec.Argv(func(k string) string { return osproc.Getenv(t.env, k) })
	if err != nil {
		return false, err.Error()
	}
	out, err := osproc.Check(ctx, argv, t.dir, t.env)
	what := p.Exec.Line // as written, so it reads as the file does
	if p.Exec.Args != nil {
		what = strings.Join(p.Exec.Args, " ")
	}
	if len(what) > 80 {
		what = what[:77] + "..."
	}
	if err != nil {
		what += ": " + probeError(err, p.Timeout)
	} else {
		what += ": exit code 0"
	}
	if i := strings.LastIndexByte(out, '\n'); i >= 0 {
		out = out[i+1:]
	}
	if out != "" {
		what += " (" + out + ")"
	}
	return err == nil, what
}

// probeError says why a probe failed, a timeout by its length.
func probeError(err error, timeout time.Duration) string {
	if errors.Is(err, context.DeadlineExceeded) {
		if timeout > 0 {
			return "no answer within " + timeout.String()
		}
		return "no answer within its timeout"
	}
	return err.Error()
}

// probed takes one probe's result on the loop.
func (c *cluster) probed(e probeEvent) {
	w := e.w
	if _, alive := c.live[w]; !alive || w.stopAsked {
		return
	}
	spec := w.gen.spec
	kind := spec.ReadyProbe
	if e.health {
		kind = spec.Health
	}
	h := &HealthStatus{Probe: kind.Kind(), Ready: !e.health, At: e.at, OK: e.ok, Detail: e.detail}
	if w.health != nil && e.health && !e.ok {
		h.Failures = w.health.Failures + 1
	} else if e.health && !e.ok {
		h.Failures = 1
	}
	w.health = h
	if !e.health {
		if e.ok && w.state == Starting {
			c.markReady(w)
		}
		return
	}
	if e.ok {
		w.sick = "" // better; a look at its memory may find it sick again
		return
	}
	if h.Failures < spec.Health.Failures || w.state != Ready {
		return
	}
	c.replaceSick(w, fmt.Sprintf("failed its health check %s (%s)", inARow(h.Failures), e.detail))
}

// stopProbing ends w's probes: it exited, or is asked to stop (a
// connection a probe keeps to it must not hold up its exit).
func (w *worker) stopProbing() {
	if w.endProbes != nil {
		w.endProbes()
	}
}

// lastReadyProbe is what w's readiness probe last found, if it failed.
func (w *worker) lastReadyProbe() string {
	if h := w.health; h != nil && h.Ready && !h.OK {
		return h.Detail
	}
	return ""
}

func inARow(n int) string {
	if n == 1 {
		return "once"
	}
	return strconv.Itoa(n) + " times in a row"
}

// replaceSick replaces a sick worker of the serving generation, no more
// than maxSurge at once, and says so loudly when every worker is sick.
// One refused now (a reload runs, the surge is used) is tried again at
// its next failed probe or memory look.
func (c *cluster) replaceSick(w *worker, why string) {
	if c.phase != phaseServing || w.gen != c.current {
		return // a reload replaces it anyway
	}
	spec := w.gen.spec
	w.sick = why
	// What runs beyond the slots' workers: replacements starting, and
	// the workers they replaced while those drain and stop. maxSurge
	// bounds both, as it bounds a rolling reload's.
	surging := len(c.live)
	sick := 0
	for _, s := range c.slots {
		if s.worker != nil {
			surging--
		}
		if s.worker != nil && s.worker.sick != "" {
			sick++
		}
	}
	if sick == len(c.slots) && len(c.slots) > 1 && !c.allSickSaid {
		c.allSickSaid = true
		c.logf("EVERY worker of %s is sick (%s, the last); replacing them %s", c.name, why, surgeWords(spec))
	}
	if surge := spec.MaxSurge; surge > 0 && surging >= surge {
		return
	}
	c.replace(w, fmt.Sprintf("%s (pid %d) %s; starting its replacement beside it", w.ref, w.pid, why), why)
}

func surgeWords(spec *serviceSpec) string {
	if spec.MaxSurge > 0 && spec.MaxSurge < spec.Workers {
		return fmt.Sprintf("%d at a time (maxSurge)", spec.MaxSurge)
	}
	return "all at once"
}

// memoryTick samples the memory of the serving generation's ready
// workers, on a goroutine, when the service has maxMemory.
func (c *cluster) memoryTick() {
	c.memoryTicking = false
	if c.current == nil || c.current.spec.MaxMemory <= 0 || c.phase == phaseStopping || c.phase == phaseShutDown {
		return
	}
	pgids := map[int]bool{}
	for _, s := range c.slots {
		if w := s.worker; w != nil && w.state == Ready && !w.stopAsked && w.pid > 0 {
			pgids[w.pid] = true
		}
	}
	c.memoryTicking = true
	// Owned by the loop's timer: one look at /proc, then the result goes
	// to the loop, or nowhere once run has returned.
	go func() {
		usage := groupUsage(pgids)
		select {
		case c.events <- memoryEvent{usage: usage}:
		case <-c.done:
		}
	}()
}

// groupUsage is proc.GroupUsage; a variable for tests.
var groupUsage = proc.GroupUsage

// memorySampled replaces the workers over maxMemory, and looks again in
// memoryEvery.
func (c *cluster) memorySampled(e memoryEvent) {
	if c.current == nil {
		c.memoryTicking = false
		return
	}
	limit := c.current.spec.MaxMemory
	for _, s := range c.slots {
		w := s.worker
		if w == nil {
			continue
		}
		if u, ok := e.usage[w.pid]; ok {
			rss := u.RSS
			w.rss = rss
			if limit > 0 && rss > limit && w.state == Ready && !w.stopAsked {
				c.replaceSick(w, fmt.Sprintf("uses %s, over maxMemory %s", mib(rss), mib(limit)))
			}
		}
	}
	c.after(memoryEvery, memoryTickEvent{})
}

// watchMemory starts the memory looks of a service with maxMemory, once.
func (c *cluster) watchMemory() {
	if c.memoryTicking || c.current == nil || c.current.spec.MaxMemory <= 0 {
		return
	}
	c.memoryTicking = true
	c.after(memoryEvery, memoryTickEvent{})
}

func mib(b int64) string {
	return fmt.Sprintf("%.1fMiB", float64(b)/(1<<20))
}

// outputMatch watches a worker's output for the line its readiness probe
// waits for, and passes the output on unchanged. It is written from the
// starter's copier goroutines.
type outputMatch struct {
	re    *regexp.Regexp
	found func(line string)

	mu      sync.Mutex
	done    bool
	partial []byte // the line being written, at most outputLineMax
}

// outputLineMax bounds the line a readiness match looks at: a longer one
// is matched on its end.
const outputLineMax = 4 << 10

func (m *outputMatch) wrap(w io.WriteCloser) io.WriteCloser {
	return &matchWriter{m: m, w: w}
}

func (m *outputMatch) scan(p []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for !m.done && len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			m.partial = append(m.partial, p...)
			if len(m.partial) > outputLineMax {
				m.partial = append(m.partial[:0], m.partial[len(m.partial)-outputLineMax:]...)
			}
			return
		}
		line := append(m.partial, p[:i]...)
		m.partial, p = m.partial[:0], p[i+1:]
		if m.re.Match(line) {
			m.done, m.partial = true, nil
			m.found(strings.TrimSpace(string(line)))
		}
	}
}

type matchWriter struct {
	m *outputMatch
	w io.WriteCloser
}

func (mw *matchWriter) Write(p []byte) (int, error) {
	mw.m.scan(p)
	return mw.w.Write(p)
}

func (mw *matchWriter) Close() error { return mw.w.Close() }

// matchOutput wraps a worker's output streams for its readiness probe
// `output`: the first line that matches makes it ready.
func (c *cluster) matchOutput(w *worker, p *config.Probe, stdout, stderr io.WriteCloser) (io.WriteCloser, io.WriteCloser) {
	w.probeCtx, w.endProbes = context.WithCancel(context.Background())
	ctx := w.probeCtx
	m := &outputMatch{re: regexp.MustCompile(p.Output), found: func(line string) {
		e := probeEvent{w: w, ok: true, detail: fmt.Sprintf("output %q", line), at: time.Now()}
		// Owned by the worker: delivers the match, or gives up once it
		// has exited; the copier that found it does not wait.
		go func() {
			select {
			case c.events <- e:
			case <-ctx.Done():
			}
		}()
	}}
	return m.wrap(stdout), m.wrap(stderr)
}

// replace starts w's replacement beside it; once the replacement is
// ready it takes w's slot and w is drained and stopped (markReady). said
// is logged, why kept for status. It does nothing while w's slot already
// waits for a replacement.
func (c *cluster) replace(w *worker, said, why string) {
	if c.phase != phaseServing || w.stopAsked {
		return
	}
	s := c.slotOf(w)
	if s == nil || s.worker != w || s.replacement != nil {
		return
	}
	if limit := w.gen.spec.StartLimit; limit > 0 && s.replaceFails >= limit {
		return // given up on, and said so: it serves on as it is
	}
	c.logf("%s", said)
	s.replacement = c.spawn(c.current, s.id)
	s.replacing = why
}
