package logmux

import (
	"bytes"
	"context"
	"io"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Options.
const (
	DefaultRingLines   = 1000
	DefaultRingBytes   = 1 << 20
	DefaultQuiet       = 500 * time.Millisecond
	DefaultMaxLine     = 16 << 20
	DefaultFollowBytes = 4 << 20
)

// Options configure a Mux; the zero value has no colour, no timestamps and
// the defaults above.
type Options struct {
	Color      bool
	Timestamps bool
	// Services in config order, for colours and the prefix width, and
	// MaxWorkers, the largest worker count, for the width.
	Services   []string
	MaxWorkers int
	// RingLines and RingBytes bound each service's memory of recent lines.
	RingLines int
	RingBytes int
	// Quiet is how long a live stream may end in a partial line before it
	// is printed as a line (a prompt without a newline).
	Quiet time.Duration
	// MaxLine is the longest line kept whole; a longer one is printed in
	// pieces of this size, each but the last marked, so one runaway line
	// cannot take all memory.
	MaxLine int
}

// Mux merges lines into one output. Create it with New, which starts the
// one goroutine that writes the output; Close flushes and ends it. It is
// safe for use by many goroutines.
type Mux struct {
	opts Options
	f    *Formatter
	w    *writer

	rmu   sync.Mutex
	rings map[string]*ring

	smu     sync.Mutex
	workers map[Source]*workerStreams // open workers, for Retire

	fmu       sync.Mutex
	followers map[*Follower]bool
	following atomic.Bool
}

// New returns a Mux writing to w.
func New(w io.Writer, opts Options) *Mux {
	if opts.RingLines <= 0 {
		opts.RingLines = DefaultRingLines
	}
	if opts.RingBytes <= 0 {
		opts.RingBytes = DefaultRingBytes
	}
	if opts.Quiet <= 0 {
		opts.Quiet = DefaultQuiet
	}
	if opts.MaxLine <= 0 {
		opts.MaxLine = DefaultMaxLine
	}
	m := &Mux{
		opts:      opts,
		f:         NewFormatter(opts.Services, opts.MaxWorkers, opts.Color, opts.Timestamps),
		rings:     map[string]*ring{},
		workers:   map[Source]*workerStreams{},
		followers: map[*Follower]bool{},
	}
	m.w = newWriter(w, func(n int) []byte {
		l := Line{Source: Source{ID: System}, Time: time.Now(), Text: []byte(strconv.Itoa(n) + " line(s) were dropped while nothing read the output")}
		return m.f.Append(nil, &l)
	})
	return m
}

// Flush waits until every line handed to the Mux so far is written, or
// until ctx ends; then it returns a *StalledError.
func (m *Mux) Flush(ctx context.Context) error { return m.w.flush(ctx) }

// Close writes what is queued and ends the writing goroutine. When the
// output is not read, it gives up at ctx's end and returns a *StalledError
// that counts what was lost. Call it once every stream is closed.
func (m *Mux) Close(ctx context.Context) error { return m.w.close(ctx) }

func (m *Mux) ring(service string) *ring {
	m.rmu.Lock()
	defer m.rmu.Unlock()
	r := m.rings[service]
	if r == nil {
		r = newRing(m.opts.RingLines, m.opts.RingBytes)
		m.rings[service] = r
	}
	return r
}

// System prints one of recluster's own lines about service (or about
// recluster itself when service is ""). It never waits for the output:
// when nothing reads it, the line still reaches the ring and followers,
// and the output gets a count of what it missed.
func (m *Mux) System(service, text string) {
	l := Line{Source: Source{Service: service, ID: System}, Time: time.Now(), Text: []byte(text)}
	buf := m.w.buffer()
	parts := bytes.Split(l.Text, []byte("\n"))
	r := m.ring(service)
	for _, part := range parts {
		pl := l
		pl.Text = part
		buf = m.f.Append(buf, &pl)
		r.add(&pl)
		m.publish([]Line{pl})
	}
	m.w.putNow(batch{buf: buf, lines: len(parts)})
}

// Open returns the stdout and stderr streams of one worker.
func (m *Mux) Open(src Source) (stdout, stderr *Stream) {
	w := &workerStreams{}
	w.open.Store(2)
	m.smu.Lock()
	m.workers[src] = w
	m.smu.Unlock()
	return m.newStream(src, false, w), m.newStream(src, true, w)
}

// workerStreams is what a worker's two streams share.
type workerStreams struct {
	retiring atomic.Bool
	open     atomic.Int32
}

// Retire marks the worker's later lines, on both streams, as those of a
// retiring generation.
func (m *Mux) Retire(src Source) {
	m.smu.Lock()
	defer m.smu.Unlock()
	if w := m.workers[src]; w != nil {
		w.retiring.Store(true)
	}
}

func (m *Mux) newStream(src Source, stderr bool, w *workerStreams) *Stream {
	return &Stream{m: m, src: src, stderr: stderr, worker: w, retiring: &w.retiring, ring: m.ring(src.Service),
		abandon: make(chan struct{})}
}

// Tail returns up to n of one worker's last lines (of one generation).
func (m *Mux) Tail(src Source, n int) []Line {
	r := m.ring(src.Service)
	return r.last(n, func(l *Line) bool { return l.Source.ID == src.ID && l.Source.Generation == src.Generation })
}

// Recent returns up to n last lines of each named service (all when
// services is empty), merged in time order.
func (m *Mux) Recent(services []string, n int) []Line {
	m.rmu.Lock()
	var rings []*ring
	for name, r := range m.rings {
		if len(services) == 0 || contains(services, name) {
			rings = append(rings, r)
		}
	}
	m.rmu.Unlock()
	var out []Line
	for _, r := range rings {
		out = append(out, r.last(n, nil)...)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
