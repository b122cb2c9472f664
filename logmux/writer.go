package logmux

import (
	"context"
	"fmt"
	"io"
	"sync"
)

// writer is the one goroutine that writes the merged stream. Producers hand
// it whole batches of formatted lines through a queue bounded in bytes, so
// that the output being slow, or not read at all, can hold up only the
// producers that wait for space (worker streams: back-pressure), never
// recluster's own lines, its control API, signals or stops.
//
// Owned by the Mux: New starts it, Close ends it. It may stay blocked in a
// Write to an output nobody reads; Close then gives up waiting at its
// deadline, and the goroutine ends with the process.
type writer struct {
	out io.Writer

	mu      sync.Mutex
	batches []batch
	queued  int           // bytes queued or being written
	space   chan struct{} // closed and replaced when bytes are written and spaceWanted
	wake    chan struct{} // capacity 1: there is something to write
	closing bool
	idle    chan struct{} // closed and replaced when the queue empties and idleWanted
	// Set by whoever waits on space or idle, so the writer makes new
	// channels only when someone needs the signal.
	spaceWanted, idleWanted bool
	free                    [][]byte // written buffers, for producers to reuse
	spare                   []batch  // the batch list last written, reused for the next
	dropped                 int      // lines dropped since the last notice
	failed                  bool     // out returned an error; later output is discarded

	done chan struct{} // closed when the goroutine returns
	// notice formats the line that reports dropped lines.
	notice func(n int) []byte
}

type batch struct {
	buf   []byte
	lines int
}

// Queue limits: producers that wait may fill maxQueued bytes; recluster's
// own lines, which never wait, may go systemReserve beyond that before
// they are dropped (and counted).
const (
	maxQueued     = 4 << 20
	systemReserve = 256 << 10
	reuseLimit    = 1 << 20 // larger buffers are not kept for reuse
)

func newWriter(out io.Writer, notice func(int) []byte) *writer {
	w := &writer{out: out, notice: notice, space: make(chan struct{}), wake: make(chan struct{}, 1),
		idle: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

// put queues a batch of whole lines. It waits for space while abandon is
// open; a batch that meets a closed abandon is dropped and counted, and
// put reports false. A batch larger than the whole queue is let in when
// the queue is empty, so no line is ever too long to pass.
func (w *writer) put(b batch, abandon <-chan struct{}) bool {
	for {
		w.mu.Lock()
		if w.queued == 0 || w.queued+len(b.buf) <= maxQueued {
			w.queueLocked(b)
			w.mu.Unlock()
			return true
		}
		space := w.space
		w.spaceWanted = true
		w.mu.Unlock()
		select {
		case <-space:
		case <-abandon:
			w.mu.Lock()
			w.dropped += b.lines
			w.mu.Unlock()
			return false
		}
	}
}

// putNow queues a batch without ever waiting: recluster's own lines.
func (w *writer) putNow(b batch) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.queued+len(b.buf) > maxQueued+systemReserve {
		w.dropped += b.lines
		return
	}
	w.queueLocked(b)
}

func (w *writer) queueLocked(b batch) {
	if w.failed {
		w.recycleLocked(b.buf)
		return
	}
	w.batches = append(w.batches, b)
	w.queued += len(b.buf)
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// buffer returns an empty buffer, reusing a written one when it can.
func (w *writer) buffer() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	if n := len(w.free); n > 0 {
		b := w.free[n-1]
		w.free = w.free[:n-1]
		return b[:0]
	}
	return nil
}

func (w *writer) recycleLocked(b []byte) {
	if cap(b) > 0 && cap(b) <= reuseLimit && len(w.free) < 64 {
		w.free = append(w.free, b)
	}
}

func (w *writer) run() {
	defer close(w.done)
	for {
		<-w.wake
		w.mu.Lock()
		batches := w.batches
		w.batches = w.spare[:0]
		w.spare = nil
		if len(batches) == 0 && w.closing {
			w.mu.Unlock()
			return
		}
		var notice []byte
		if w.dropped > 0 && !w.failed {
			notice = w.notice(w.dropped)
			w.dropped = 0
		}
		failed := w.failed
		w.mu.Unlock()

		written := 0
		if notice != nil && !failed {
			if _, err := w.out.Write(notice); err != nil {
				failed = true
			}
		}
		for _, b := range batches {
			if !failed {
				if _, err := w.out.Write(b.buf); err != nil {
					failed = true
				}
			}
			written += len(b.buf)
		}

		w.mu.Lock()
		w.failed = failed
		for i, b := range batches {
			w.recycleLocked(b.buf)
			batches[i] = batch{}
		}
		w.spare = batches
		w.queued -= written
		if w.spaceWanted {
			close(w.space)
			w.space, w.spaceWanted = make(chan struct{}), false
		}
		if w.queued == 0 && w.idleWanted {
			close(w.idle)
			w.idle, w.idleWanted = make(chan struct{}), false
		}
		if len(w.batches) > 0 || w.closing {
			select {
			case w.wake <- struct{}{}:
			default:
			}
		}
		w.mu.Unlock()
	}
}

// flush waits until everything queued so far is written, or ctx ends.
func (w *writer) flush(ctx context.Context) error {
	for {
		w.mu.Lock()
		if w.queued == 0 {
			w.mu.Unlock()
			return nil
		}
		idle := w.idle
		w.idleWanted = true
		w.mu.Unlock()
		select {
		case <-idle:
		case <-ctx.Done():
			return w.stalled()
		}
	}
}

// close ends the goroutine once the queue is written, or gives up at ctx's
// end; what was not written is reported in the error.
func (w *writer) close(ctx context.Context) error {
	w.mu.Lock()
	w.closing = true
	select {
	case w.wake <- struct{}{}:
	default:
	}
	w.mu.Unlock()
	select {
	case <-w.done:
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.dropped > 0 && !w.failed {
			return &StalledError{Dropped: w.dropped}
		}
		return nil
	case <-ctx.Done():
		return w.stalled()
	}
}

func (w *writer) stalled() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := w.dropped
	for _, b := range w.batches {
		n += b.lines
	}
	return &StalledError{Dropped: n, Pending: w.queued}
}

// StalledError says that output was not written because nothing read it.
type StalledError struct {
	// Dropped counts the lines that were never written.
	Dropped int
	// Pending counts the bytes still waiting when the wait ended.
	Pending int
}

func (e *StalledError) Error() string {
	if e.Pending > 0 {
		return fmt.Sprintf("the output was not being read: %d line(s) dropped, %d byte(s) never written", e.Dropped, e.Pending)
	}
	return fmt.Sprintf("the output was not being read: %d line(s) dropped", e.Dropped)
}
