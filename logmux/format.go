// Package logmux merges the output of every worker into one stream of whole
// lines, each with a coloured `service.id` prefix. A line is never split,
// merged with another or lost; the terminal being slow makes producers
// wait; followers that fall behind are cut off instead.
package logmux

import (
	"hash/fnv"
	"strconv"
	"sync"
	"time"

	"github.com/fatih/color"
)

// Source names who wrote a line: a worker, or recluster itself about a
// service (ID < 0).
type Source struct {
	Service    string `json:"service"`
	ID         int    `json:"id"`
	Generation int    `json:"generation"`
}

// System is the ID of recluster's own lines; Build that of a service's
// build, whose lines show as SERVICE.build.
const (
	System = -1
	Build  = -2
)

// Line is one whole line, without its newline.
type Line struct {
	Source   Source    `json:"source"`
	Stderr   bool      `json:"stderr,omitempty"`
	Retiring bool      `json:"retiring,omitempty"`
	Time     time.Time `json:"time"`
	Text     []byte    `json:"text"`
	// Split marks a piece of a line too long to print whole (past
	// Options.MaxLine): the line goes on in the next piece.
	Split bool `json:"split,omitempty"`
	// Omitted counts the bytes of the line that were not kept (the ring
	// keeps 64 KiB of a line, a follower 1 MiB).
	Omitted int `json:"omitted,omitempty"`
}

// splitMark ends a piece of a line that goes on in the next piece.
const splitMark = " …[line continues]"

// appendMarks appends the marks of a cut line.
func appendMarks(dst []byte, l *Line) []byte {
	if l.Omitted > 0 {
		dst = append(dst, " …["...)
		dst = strconv.AppendInt(dst, int64(l.Omitted), 10)
		dst = append(dst, " more bytes not kept]"...)
	}
	if l.Split {
		dst = append(dst, splitMark...)
	}
	return dst
}

// palette holds the service colours, assigned in config order so a stack
// looks the same every run.
var palette = []color.Attribute{
	color.FgCyan, color.FgYellow, color.FgGreen, color.FgMagenta, color.FgBlue,
	color.FgHiCyan, color.FgHiYellow, color.FgHiGreen, color.FgHiMagenta, color.FgHiBlue,
}

// Formatter turns lines into bytes: `[time ]service.id | text`, with `!`
// instead of `|` for stderr and `(old)` after the name for a retiring
// generation, so both show without colour too.
type Formatter struct {
	Color      bool
	Timestamps bool

	mu       sync.Mutex // guards width, services and the prefix cache
	width    int
	services map[string]int
	cache    map[prefixKey][]byte
}

type prefixKey struct {
	service          string
	id               int
	stderr, retiring bool
}

// NewFormatter returns a formatter that pads names to the widest of
// services (in config order, which also picks their colours) with up to
// maxWorkers workers.
func NewFormatter(services []string, maxWorkers int, colorOn, timestamps bool) *Formatter {
	f := &Formatter{Color: colorOn, Timestamps: timestamps, services: map[string]int{}, cache: map[prefixKey][]byte{}}
	f.width = len("recluster")
	for i, s := range services {
		f.services[s] = i
		f.width = max(f.width, len(s)+1+len(strconv.Itoa(max(maxWorkers-1, 0))))
	}
	return f
}

// prefix returns the precomputed bytes before a line's text.
func (f *Formatter) prefix(src Source, stderr, retiring bool) []byte {
	key := prefixKey{src.Service, src.ID, stderr, retiring}
	f.mu.Lock()
	defer f.mu.Unlock()
	if p, ok := f.cache[key]; ok {
		return p
	}
	name := "recluster"
	switch {
	case src.ID >= 0:
		name = src.Service + "." + strconv.Itoa(src.ID)
	case src.ID == Build:
		name = src.Service + ".build"
	}
	f.width = max(f.width, len(name))
	padded := name
	for len(padded) < f.width {
		padded += " "
	}
	if retiring {
		padded = name + "(old)"
	}
	sep := " | "
	if stderr {
		sep = " ! "
	}
	var p string
	if f.Color {
		c := color.New(f.colorOf(src)).Add(color.Bold)
		if src.ID < 0 {
			c = color.New(color.FgWhite, color.Bold)
		}
		if retiring {
			c.Add(color.Faint)
		}
		c.EnableColor()
		sepColor := color.New(color.Faint)
		if stderr {
			sepColor = color.New(color.FgRed)
		}
		sepColor.EnableColor()
		p = c.Sprint(padded) + sepColor.Sprint(sep)
	} else {
		p = padded + sep
	}
	b := []byte(p)
	if len(f.cache) > 4096 {
		clear(f.cache) // ids and generations come and go; keep it bounded
	}
	f.cache[key] = b
	return b
}

func (f *Formatter) colorOf(src Source) color.Attribute {
	i, ok := f.services[src.Service]
	if !ok {
		h := fnv.New32a()
		h.Write([]byte(src.Service))
		i = int(h.Sum32())
	}
	return palette[i%len(palette)]
}

// Append appends the formatted line and its newline to dst.
func (f *Formatter) Append(dst []byte, l *Line) []byte {
	if f.Timestamps {
		dst = l.Time.AppendFormat(dst, "15:04:05.000 ")
	}
	dst = append(dst, f.prefix(l.Source, l.Stderr, l.Retiring)...)
	dst = append(dst, l.Text...)
	dst = appendMarks(dst, l)
	return append(dst, '\n')
}
