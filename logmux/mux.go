package logmux

import (
	"bytes"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Options.
const (
	DefaultRingLines = 1000
	DefaultRingBytes = 1 << 20
	DefaultQuiet     = 500 * time.Millisecond
	DefaultMaxLine   = 16 << 20
	DefaultFollowBuf = 256
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
	// pieces of this size, so one runaway line cannot take all memory.
	MaxLine int
}

// Mux is the one writer of the merged stream. Create it with New; it is
// safe for use by many goroutines. Close flushes nothing itself: each
// Stream's Close flushes its own partial line.
type Mux struct {
	opts Options
	f    *Formatter

	wmu  sync.Mutex // serialises writes to out, so lines never interleave
	out  io.Writer
	werr error // the first error writing out; later output is dropped

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
	return &Mux{
		opts:      opts,
		f:         NewFormatter(opts.Services, opts.MaxWorkers, opts.Color, opts.Timestamps),
		out:       w,
		rings:     map[string]*ring{},
		workers:   map[Source]*workerStreams{},
		followers: map[*Follower]bool{},
	}
}

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

// write puts a batch of formatted whole lines on the output in one Write.
func (m *Mux) write(b []byte) {
	m.wmu.Lock()
	defer m.wmu.Unlock()
	if m.werr != nil {
		return
	}
	if _, err := m.out.Write(b); err != nil {
		m.werr = err
	}
}

// System prints one of recluster's own lines about service (or about
// recluster itself when service is "").
func (m *Mux) System(service, text string) {
	l := Line{Source: Source{Service: service, ID: System}, Time: time.Now(), Text: []byte(text)}
	var buf []byte
	for _, part := range bytes.Split(l.Text, []byte("\n")) {
		pl := l
		pl.Text = part
		buf = m.f.Append(buf, &pl)
		m.ring(service).add(&pl)
		m.publish([]Line{pl})
	}
	m.write(buf)
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
	return &Stream{m: m, src: src, stderr: stderr, worker: w, retiring: &w.retiring, ring: m.ring(src.Service)}
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

// Stream is one worker's stdout or stderr: it splits what it is given into
// lines and hands whole lines on. One goroutine writes a stream at a time
// (the worker's copier); the quiet-period flush takes the same lock.
type Stream struct {
	m        *Mux
	src      Source
	stderr   bool
	worker   *workerStreams
	retiring *atomic.Bool
	ring     *ring

	mu      sync.Mutex // held by Write, Close and the quiet flush
	partial []byte
	timer   *time.Timer
	closed  bool
	gen     int // counts timer arms so a stale flush does nothing

	// The batch being built, between emit and flush.
	open   bool
	follow bool
	line   Line
	prefix []byte
	buf    []byte
	spans  []span
	lines  []Line // followers' copies, handed over whole
}

// Write takes any chunk of output: lines may span chunks.
func (s *Stream) Write(p []byte) (int, error) {
	n := len(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return n, nil
	}
	if len(s.partial) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			s.keepPartial(p)
			return n, nil
		}
		s.partial = append(s.partial, p[:i]...)
		s.emit(s.partial)
		s.partial = s.partial[:0]
		p = p[i+1:]
	}
	if last := bytes.LastIndexByte(p, '\n'); last >= 0 {
		lines := p[:last+1]
		for len(lines) > 0 {
			i := bytes.IndexByte(lines, '\n')
			s.emit(lines[:i])
			lines = lines[i+1:]
		}
		p = p[last+1:]
	}
	s.flush()
	if len(p) > 0 {
		s.keepPartial(p)
	} else if s.timer != nil {
		s.timer.Stop()
	}
	return n, nil
}

// keepPartial holds the start of a line until its end arrives, the stream
// closes, or the stream stays quiet; a line past MaxLine is printed in
// pieces.
func (s *Stream) keepPartial(p []byte) {
	for len(s.partial)+len(p) >= s.m.opts.MaxLine {
		take := s.m.opts.MaxLine - len(s.partial)
		s.partial = append(s.partial, p[:take]...)
		p = p[take:]
		s.emit(s.partial)
		s.flush()
		s.partial = s.partial[:0]
	}
	s.partial = append(s.partial, p...)
	if len(s.partial) == 0 {
		return
	}
	s.gen++
	gen := s.gen
	if s.timer != nil {
		s.timer.Stop()
	}
	s.timer = time.AfterFunc(s.m.opts.Quiet, func() { s.flushQuiet(gen) })
}

func (s *Stream) flushQuiet(gen int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if gen != s.gen || s.closed || len(s.partial) == 0 {
		return
	}
	s.flushPartial()
}

func (s *Stream) flushPartial() {
	s.emit(s.partial)
	s.flush()
	s.partial = s.partial[:0]
}

// Close prints a last line that had no newline. The stream takes no more
// output after it.
func (s *Stream) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.timer != nil {
		s.timer.Stop()
	}
	if len(s.partial) > 0 {
		s.flushPartial()
	}
	s.partial = nil
	if s.worker.open.Add(-1) == 0 {
		s.m.smu.Lock()
		if s.m.workers[s.src] == s.worker {
			delete(s.m.workers, s.src)
		}
		s.m.smu.Unlock()
	}
	return nil
}

// emit adds one whole line to the stream's batch: formatted into the
// buffer and, when someone follows, copied for followers. flush writes the
// batch with one Write and records its last lines in the ring: only as
// many as the ring holds, since a big batch would overwrite the rest.
func (s *Stream) emit(text []byte) {
	if !s.open {
		s.open = true
		s.follow = s.m.following.Load()
		s.line = Line{Source: s.src, Stderr: s.stderr, Retiring: s.retiring.Load(), Time: time.Now()}
		s.buf = s.buf[:0]
		s.spans = s.spans[:0]
		s.prefix = s.prefix[:0]
		if s.m.f.Timestamps {
			s.prefix = s.line.Time.AppendFormat(s.prefix, "15:04:05.000 ")
		}
		s.prefix = append(s.prefix, s.m.f.prefix(s.src, s.stderr, s.line.Retiring)...)
	}
	s.buf = append(s.buf, s.prefix...)
	start := len(s.buf)
	s.buf = append(s.buf, text...)
	s.spans = append(s.spans, span{start, len(s.buf)})
	s.buf = append(s.buf, '\n')
	if s.follow {
		l := s.line
		l.Text = bytes.Clone(text)
		s.lines = append(s.lines, l)
	}
}

// span locates one line's text in the batch buffer.
type span struct{ start, end int }

func (s *Stream) flush() {
	if !s.open {
		return
	}
	s.open = false
	spans := s.spans
	if n := len(s.ring.entries); len(spans) > n {
		spans = spans[len(spans)-n:]
	}
	s.ring.mu.Lock()
	for _, sp := range spans {
		s.line.Text = s.buf[sp.start:sp.end]
		s.ring.addLocked(&s.line)
	}
	s.ring.mu.Unlock()
	s.line.Text = nil
	s.m.write(s.buf)
	if len(s.lines) > 0 {
		s.m.publish(s.lines)
		s.lines = nil
	}
	if cap(s.buf) > 4<<20 {
		s.buf = nil // one huge line need not pin its buffer
	}
}
