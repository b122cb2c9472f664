package logmux

import "sync"

// ring keeps a service's last lines within a count and a byte budget. Each
// slot's buffer is reused, so a steady stream allocates nothing here.
type ring struct {
	mu       sync.Mutex
	entries  []Line
	head     int // oldest
	count    int
	bytes    int
	maxBytes int
}

// ringLineCap is the most of one line a ring keeps; the live stream has it
// all.
const ringLineCap = 64 << 10

func newRing(lines, bytes int) *ring {
	return &ring{entries: make([]Line, lines), maxBytes: bytes}
}

func (r *ring) add(l *Line) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addLocked(l)
}

func (r *ring) addLocked(l *Line) {
	text := l.Text
	if len(text) > ringLineCap {
		text = text[:ringLineCap]
	}
	for r.count > 0 && (r.count == len(r.entries) || r.bytes+len(text) > r.maxBytes) {
		r.bytes -= len(r.entries[r.head].Text)
		r.head = (r.head + 1) % len(r.entries)
		r.count--
	}
	e := &r.entries[(r.head+r.count)%len(r.entries)]
	buf := append(e.Text[:0], text...)
	*e = *l
	e.Text = buf
	r.count++
	r.bytes += len(text)
}

// last returns copies of up to n of the newest lines that match keep (all
// when keep is nil), oldest first.
func (r *ring) last(n int, keep func(*Line) bool) []Line {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Line
	for i := r.count - 1; i >= 0 && len(out) < n; i-- {
		e := &r.entries[(r.head+i)%len(r.entries)]
		if keep == nil || keep(e) {
			l := *e
			l.Text = append([]byte(nil), e.Text...)
			out = append(out, l)
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}
