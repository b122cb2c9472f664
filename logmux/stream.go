package logmux

import (
	"bytes"
	"sync"
	"sync/atomic"
	"time"
)

// followerLineCap is the most of one line a follower is given; the output
// has it all.
const followerLineCap = 1 << 20

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
	// abandon, once closed, makes a Write that waits for the output give
	// up and drop its lines.
	abandon     chan struct{}
	abandonOnce sync.Once

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

// Write takes any chunk of output: lines may span chunks. It waits while
// the output is behind (back-pressure on the worker), until Abandon.
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
		s.appendPartial(p[:i])
		s.emit(s.partial, false)
		s.partial = s.partial[:0]
		p = p[i+1:]
	}
	if last := bytes.LastIndexByte(p, '\n'); last >= 0 {
		lines := p[:last+1]
		for len(lines) > 0 {
			i := bytes.IndexByte(lines, '\n')
			s.emit(lines[:i], false)
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

// Abandon stops waiting for the output: the lines of a Write that waits,
// and of every later one, are dropped (and counted in the output) instead.
// The runner calls it when a stop must finish while nothing reads the
// output; the ring and followers still get every line.
func (s *Stream) Abandon() { s.abandonOnce.Do(func() { close(s.abandon) }) }

// keepPartial holds the start of a line until its end arrives, the stream
// closes, or the stream stays quiet.
func (s *Stream) keepPartial(p []byte) {
	s.appendPartial(p)
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

// appendPartial adds p to the partial line, printing a line that reaches
// MaxLine in marked pieces.
func (s *Stream) appendPartial(p []byte) {
	for len(s.partial)+len(p) >= s.m.opts.MaxLine {
		take := s.m.opts.MaxLine - len(s.partial)
		s.partial = append(s.partial, p[:take]...)
		p = p[take:]
		s.emit(s.partial, true)
		s.flush()
		s.partial = s.partial[:0]
	}
	s.partial = append(s.partial, p...)
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
	s.emit(s.partial, false)
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
	s.buf = nil
	if s.worker.open.Add(-1) == 0 {
		s.m.smu.Lock()
		if s.m.workers[s.src] == s.worker {
			delete(s.m.workers, s.src)
		}
		s.m.smu.Unlock()
	}
	return nil
}

// emit adds one whole line (or, split, a piece of a line too long to keep
// whole) to the stream's batch: formatted into the buffer and, when
// someone follows, copied for followers. flush hands the batch on.
func (s *Stream) emit(text []byte, split bool) {
	if !s.open {
		s.open = true
		s.follow = s.m.following.Load()
		s.line = Line{Source: s.src, Stderr: s.stderr, Retiring: s.retiring.Load(), Time: time.Now()}
		if s.buf == nil {
			s.buf = s.m.w.buffer()
		}
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
	s.spans = append(s.spans, span{start, len(s.buf), split})
	if split {
		s.buf = append(s.buf, splitMark...)
	}
	s.buf = append(s.buf, '\n')
	if s.follow {
		l := s.line
		l.Split = split
		if len(text) > followerLineCap {
			l.Omitted = len(text) - followerLineCap
			text = text[:followerLineCap]
		}
		l.Text = bytes.Clone(text)
		s.lines = append(s.lines, l)
	}
}

// span locates one line's text in the batch buffer.
type span struct {
	start, end int
	split      bool
}

// flush records the batch's last lines in the ring (only as many as the
// ring holds, since a big batch would overwrite the rest), offers them to
// followers, and queues the batch for the output, waiting for room there.
func (s *Stream) flush() {
	if !s.open {
		return
	}
	s.open = false
	spans := s.spans
	if n := s.ring.maxLines; len(spans) > n {
		spans = spans[len(spans)-n:]
	}
	s.ring.mu.Lock()
	for _, sp := range spans {
		s.line.Text = s.buf[sp.start:sp.end]
		s.line.Split = sp.split
		s.ring.addLocked(&s.line)
	}
	s.ring.mu.Unlock()
	s.line.Text = nil
	if len(s.lines) > 0 {
		s.m.publish(s.lines)
		s.lines = nil
	}
	// The writer owns the buffer from here; the next batch takes another.
	s.m.w.put(batch{buf: s.buf, lines: len(s.spans)}, s.abandon)
	s.buf = nil
}
