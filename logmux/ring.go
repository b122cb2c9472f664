package logmux

import "sync"

// ring keeps a service's last lines within a count and a byte budget. The
// text lives in one arena of at most maxBytes, used circularly, so that
// memory stays within the budget whatever lengths lines had before; the
// arena and the entry table grow as lines arrive, up to their bounds.
type ring struct {
	mu       sync.Mutex
	maxLines int
	maxBytes int
	entries  []ringEntry // circular once it holds maxLines
	head     int         // oldest
	count    int
	arena    []byte
	next     int // where the next line's text goes in the arena
}

type ringEntry struct {
	line   Line // Text is nil here; off and n locate it in the arena
	off, n int
}

// ringLineCap is the most of one line a ring keeps; the output has it all.
// What is cut is counted in Line.Omitted.
const ringLineCap = 64 << 10

func newRing(lines, bytes int) *ring {
	return &ring{maxLines: lines, maxBytes: max(bytes, ringLineCap)}
}

func (r *ring) add(l *Line) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addLocked(l)
}

func (r *ring) addLocked(l *Line) {
	text := l.Text
	omitted := l.Omitted
	if len(text) > ringLineCap {
		omitted += len(text) - ringLineCap
		text = text[:ringLineCap]
	}
	n := len(text)
	if r.count == r.maxLines {
		r.dropOldest()
	}
	at := r.next
	if at+n > len(r.arena) && len(r.arena) < r.maxBytes {
		r.grow(at + n)
	}
	if at+n > len(r.arena) {
		// Wrap: the rest of the arena holds only the oldest lines.
		for r.count > 0 && r.entries[r.head].off >= at {
			r.dropOldest()
		}
		at = 0
	}
	// Free [at, at+n): the oldest lines lie just after the newest.
	for r.count > 0 {
		e := &r.entries[r.head]
		if e.off >= at+n || e.off+e.n <= at {
			break
		}
		r.dropOldest()
	}
	copy(r.arena[at:], text)
	e := ringEntry{line: *l, off: at, n: n}
	e.line.Text = nil
	e.line.Omitted = omitted
	if len(r.entries) < r.maxLines {
		if len(r.entries) == cap(r.entries) {
			grown := make([]ringEntry, len(r.entries), min(max(2*cap(r.entries), 16), r.maxLines))
			copy(grown, r.entries)
			r.entries = grown
		}
		r.entries = append(r.entries, e)
	} else {
		r.entries[(r.head+r.count)%r.maxLines] = e
	}
	r.count++
	r.next = at + n
}

func (r *ring) dropOldest() {
	r.head = (r.head + 1) % max(len(r.entries), 1)
	r.count--
	if r.count == 0 {
		r.head, r.next = 0, 0
		r.entries = r.entries[:0]
	}
}

// grow enlarges the arena by doubling, to at least need and at most
// maxBytes. It only happens before the first wrap, so offsets stay valid.
func (r *ring) grow(need int) {
	size := max(len(r.arena)*2, 4096)
	for size < need {
		size *= 2
	}
	size = min(size, r.maxBytes)
	grown := make([]byte, size)
	copy(grown, r.arena)
	r.arena = grown
}

// last returns copies of up to n of the newest lines that match keep (all
// when keep is nil), oldest first.
func (r *ring) last(n int, keep func(*Line) bool) []Line {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Line
	for i := r.count - 1; i >= 0 && len(out) < n; i-- {
		e := &r.entries[(r.head+i)%len(r.entries)]
		if keep == nil || keep(&e.line) {
			l := e.line
			l.Text = append([]byte(nil), r.arena[e.off:e.off+e.n]...)
			out = append(out, l)
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}
