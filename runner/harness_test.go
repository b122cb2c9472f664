package runner

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/recluster/recluster/config"
	"github.com/recluster/recluster/internal/osproc"
	"github.com/recluster/recluster/internal/testbin"
	"github.com/recluster/recluster/logmux"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

// deadline bounds every wait: generous, since CI machines are small and
// shared; a pass never waits for it.
const deadline = 30 * time.Second

// syncBuffer is an io.Writer safe for the mux and the test to share.
// Every write signals changed, so a test can wait on output as an event.
type syncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{changed: make(chan struct{}, 1)} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case b.changed <- struct{}{}:
	default:
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// harness runs a Manager over a config written to a temp folder, with real
// processes, and lets a test wait on its events.
type harness struct {
	t      *testing.T
	dir    string
	m      *Manager
	out    *syncBuffer
	events chan Event
	seen   []Event
	cancel context.CancelFunc
	done   chan error
}

// workerConfig fills WORKER in yaml with the test worker's path.
func workerConfig(t *testing.T, yaml string) string {
	return strings.ReplaceAll(yaml, "WORKER", testbin.Worker(t))
}

func startHarness(t *testing.T, yaml string, names ...string) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), out: newSyncBuffer(), events: make(chan Event, 100000), done: make(chan error, 1)}
	path := filepath.Join(h.dir, "recluster.yml")
	h.write(yaml)
	opts := config.Options{NumCPU: 2}
	cfg, err := opts.Load(path)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	mux := logmux.New(h.out, logmux.Options{Services: cfg.Names(), MaxWorkers: 8, Timestamps: os.Getenv("TS") != ""})
	h.m, err = New(cfg, Options{
		Starter: osproc.NewStarter(h.dir, nil),
		Output:  MuxOutput(mux),
		Load:    func() (*config.Config, error) { return opts.Load(path) },
		OnEvent: func(e Event) {
			select {
			case h.events <- e:
			default:
				t.Errorf("event buffer full")
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- h.m.Run(ctx, names) }()
	t.Cleanup(h.shutdown)
	return h
}

var padding = regexp.MustCompile(` +([|!]) `)

// text is the output with the prefix padding folded, so tests can match
// "api.0 | line" whatever the widest name is.
func (h *harness) text() string { return padding.ReplaceAllString(h.out.String(), " $1 ") }

func (h *harness) write(yaml string) {
	h.t.Helper()
	if err := os.WriteFile(filepath.Join(h.dir, "recluster.yml"), []byte(workerConfig(h.t, yaml)), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// shutdown stops the manager and waits for Run to return.
func (h *harness) shutdown() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
	case <-time.After(deadline):
		h.t.Errorf("Run did not return after cancel; output:\n%s", h.out)
	}
}

// waitFor re-checks cond after every event, every output write and every
// tick until it holds; it fails the test at the deadline.
func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	timeout := time.After(deadline)
	// Some conditions change with no event and no output (requests in
	// flight through the proxy): they are looked at again on a tick.
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case e := <-h.events:
			h.seen = append(h.seen, e)
		case <-h.out.changed:
		case <-tick.C:
		case <-timeout:
			seen := h.seen
			if len(seen) > 40 {
				seen = seen[len(seen)-40:]
			}
			out := h.out.String()
			if len(out) > 8000 {
				out = "…" + out[len(out)-8000:]
			}
			h.t.Fatalf("timed out waiting for %s; last events: %v\noutput:\n%s", what, seen, out)
		}
	}
}

// waitEvent waits for an event that matches and returns it.
func (h *harness) waitEvent(what string, match func(Event) bool) Event {
	h.t.Helper()
	for _, e := range h.seen {
		if match(e) {
			return e
		}
	}
	var found Event
	h.waitFor(what, func() bool {
		for _, e := range h.seen {
			if match(e) {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

// count returns how many events so far match.
func (h *harness) count(match func(Event) bool) int {
	n := 0
	for _, e := range h.seen {
		if match(e) {
			n++
		}
	}
	return n
}

func (h *harness) status(service string) ServiceStatus {
	h.t.Helper()
	sts, err := h.m.Status(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	for _, s := range sts {
		if s.Name == service {
			return s
		}
	}
	h.t.Fatalf("no service %s in status", service)
	return ServiceStatus{}
}

func is(kind EventKind, service string) func(Event) bool {
	return func(e Event) bool { return e.Kind == kind && e.Service == service }
}

// reload reloads through the Manager, for tests that need only its error.
func (h *harness) reload(ctx context.Context, names []string) error {
	_, err := h.m.Reload(ctx, names)
	return err
}
