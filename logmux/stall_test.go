package logmux

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// gate is an output that blocks every Write until opened, as a pipe that
// nobody reads does.
type gate struct {
	lockedBuffer
	open    chan struct{}
	entered chan struct{} // a Write is waiting
}

func newGate() *gate {
	return &gate{open: make(chan struct{}), entered: make(chan struct{}, 1)}
}

func (g *gate) Write(p []byte) (int, error) {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	<-g.open
	return g.lockedBuffer.Write(p)
}

func within(t *testing.T, what string, done <-chan struct{}) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: still blocked", what)
	}
}

// TestSystemLinesNeverWaitForTheOutput: with the output blocked and the
// queue full of a worker's lines, recluster's own lines return at once,
// reach the ring, and the output later says how many it missed.
func TestSystemLinesNeverWaitForTheOutput(t *testing.T) {
	g := newGate()
	m := New(g, Options{})
	stdout, _ := m.Open(src("api", 0))
	line := []byte(strings.Repeat("x", 1000) + "\n")
	producerBlocked := make(chan struct{})
	go func() {
		// Far more than the queue holds: this producer ends up waiting.
		for i := 0; i < 20000; i++ {
			stdout.Write(line)
		}
		close(producerBlocked)
	}()
	<-g.entered
	done := make(chan struct{})
	go func() {
		for i := 0; i < 20000; i++ {
			m.System("api", fmt.Sprintf("system line %d", i))
		}
		close(done)
	}()
	within(t, "System while the output is blocked", done)
	if tail := m.Tail(Source{Service: "api", ID: System}, 1); len(tail) != 1 || string(tail[0].Text) != "system line 19999" {
		t.Errorf("the ring missed recluster's lines: %v", tail)
	}
	select {
	case <-producerBlocked:
		t.Fatalf("the worker's stream never waited for the blocked output")
	default:
	}
	close(g.open)
	within(t, "the producer after the output opened", producerBlocked)
	stdout.Close()
	flushed(t, m)
	out := string(g.Bytes())
	if !strings.Contains(out, "line(s) were dropped while nothing read the output") {
		t.Errorf("the output does not say that lines were dropped")
	}
	if n := strings.Count(out, strings.Repeat("x", 1000)); n != 20000 {
		t.Errorf("the worker's lines: %d of 20000; back-pressure must lose none", n)
	}
}

// TestAbandonReleasesAWaitingWrite: a stream waiting for a blocked output
// returns once abandoned, and what it dropped is counted.
func TestAbandonReleasesAWaitingWrite(t *testing.T) {
	g := newGate()
	m := New(g, Options{})
	stdout, stderr := m.Open(src("api", 0))
	line := []byte(strings.Repeat("y", 1000) + "\n")
	wrote := make(chan struct{})
	go func() {
		for i := 0; i < 10000; i++ {
			stdout.Write(line)
		}
		close(wrote)
	}()
	<-g.entered
	stdout.Abandon()
	stderr.Abandon()
	within(t, "an abandoned Write", wrote)
	stdout.Close()
	stderr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := m.Close(ctx)
	se, ok := err.(*StalledError)
	if !ok || se.Dropped == 0 {
		t.Fatalf("Close on a blocked output: %v, want a StalledError counting drops", err)
	}
	close(g.open)
}

// TestRingMemoryIsBoundedInBytes: after long lines, short ones leave the
// ring's memory within its budget.
func TestRingMemoryIsBoundedInBytes(t *testing.T) {
	m := New(nullWriter{}, Options{})
	s, _ := m.Open(src("api", 0))
	long := []byte(strings.Repeat("z", 60<<10) + "\n")
	for i := 0; i < 3000; i++ {
		s.Write(long)
	}
	for i := 0; i < 3000; i++ {
		fmt.Fprintf(s, "short %d\n", i)
	}
	s.Close()
	r := m.ring("api")
	r.mu.Lock()
	arena, entries := cap(r.arena), cap(r.entries)
	r.mu.Unlock()
	if arena > DefaultRingBytes || entries > DefaultRingLines {
		t.Errorf("ring holds %d bytes and %d entries; want at most %d and %d", arena, entries, DefaultRingBytes, DefaultRingLines)
	}
	if tail := m.Tail(src("api", 0), 1); len(tail) != 1 || string(tail[0].Text) != "short 2999" {
		t.Errorf("tail: %v", tail)
	}
}

type nullWriter struct{}

func (nullWriter) Write(p []byte) (int, error) { return len(p), nil }

// TestCutLinesAreMarked: a line past MaxLine is printed in marked pieces;
// the ring keeps 64 KiB of a line and says how much it left out.
func TestCutLinesAreMarked(t *testing.T) {
	var out lockedBuffer
	m := New(&out, Options{MaxLine: 100 << 10})
	s, _ := m.Open(src("api", 0))
	// As the runner hands output on: in chunks, so the line arrives in
	// pieces that are kept until its end or MaxLine.
	data := []byte(strings.Repeat("a", 250<<10) + "\nnext\n")
	for len(data) > 0 {
		n := min(len(data), 64<<10)
		s.Write(data[:n])
		data = data[n:]
	}
	s.Close()
	flushed(t, m)
	lines := texts(t, out.Bytes())
	if len(lines) != 4 {
		t.Fatalf("%d lines, want 3 pieces and the next line", len(lines))
	}
	for i, l := range lines[:2] {
		if !strings.HasSuffix(l, splitMark) {
			t.Errorf("piece %d is not marked as continuing", i)
		}
	}
	if strings.HasSuffix(lines[2], splitMark) || lines[3] != "next" {
		t.Errorf("the last piece or the next line is marked: %.40q %q", lines[2], lines[3])
	}
	tail := m.Tail(src("api", 0), 4)
	if tail[0].Omitted != 100<<10-ringLineCap || !tail[0].Split {
		t.Errorf("ring piece: omitted %d split %v", tail[0].Omitted, tail[0].Split)
	}
	f := NewFormatter(nil, 1, false, false)
	if got := string(f.Append(nil, &tail[0])); !strings.Contains(got, "more bytes not kept]") || !strings.Contains(got, splitMark) {
		t.Errorf("the formatter shows no marks: %.80q", got[len(got)-80:])
	}
}

// TestFollowerIsBoundedInBytes: a follower that never reads is cut off as
// soon as it is behind by its budget, however few lines that is.
func TestFollowerIsBoundedInBytes(t *testing.T) {
	m := New(nullWriter{}, Options{})
	f := m.Follow(nil, 1<<20)
	s, _ := m.Open(src("api", 0))
	big := []byte(strings.Repeat("b", 300<<10) + "\n")
	for i := 0; i < 4; i++ {
		s.Write(big)
	}
	m.fmu.Lock()
	followed := m.followers[f]
	m.fmu.Unlock()
	if followed {
		t.Fatalf("a follower 1.2 MiB behind on a 1 MiB budget is still fed")
	}
	if _, err := f.Next(context.Background()); err != ErrCutOff {
		t.Errorf("Next: %v, want ErrCutOff", err)
	}
	s.Close()
}
