package logmux

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

// lockedBuffer is a bytes.Buffer the mux may write from many goroutines.
// Each write signals changed, so a test can wait on output as an event.
type lockedBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changed != nil {
		select {
		case l.changed <- struct{}{}:
		default:
		}
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]byte(nil), l.b.Bytes()...)
}

func src(service string, id int) Source { return Source{Service: service, ID: id, Generation: 1} }

// flushed waits until the mux has written everything it was given.
func flushed(t *testing.T, m *Mux) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// texts returns the text of every output line, prefixes cut off at the
// first " | " or " ! ".
func texts(t *testing.T, out []byte) []string {
	t.Helper()
	var lines []string
	for _, l := range bytes.SplitAfter(out, []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		if l[len(l)-1] != '\n' {
			t.Fatalf("output ends without a newline: %q", l)
		}
		i := bytes.Index(l, []byte(" | "))
		if j := bytes.Index(l, []byte(" ! ")); i < 0 || (j >= 0 && j < i) {
			i = j
		}
		if i < 0 {
			t.Fatalf("line without a prefix: %q", l)
		}
		lines = append(lines, string(l[i+3:len(l)-1]))
	}
	return lines
}

func TestRandomChunkingYieldsTheSameLines(t *testing.T) {
	var input bytes.Buffer
	var want []string
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		line := strings.Repeat(string(rune('a'+i%26)), r.IntN(300))
		if i%500 == 250 {
			line = strings.Repeat("long", 1<<18) // a megabyte
		}
		if i%89 == 0 {
			line = "\xff\xfe not utf-8 \x00 \x1b[31mred\x1b[0m"
		}
		want = append(want, line)
		input.WriteString(line + "\n")
	}
	want = append(want, "last line without a newline")
	input.WriteString("last line without a newline")
	data := input.Bytes()

	chunkings := map[string]func(int) int{
		"1-byte":  func(int) int { return 1 },
		"huge":    func(int) int { return len(data) },
		"random":  func(int) int { return 1 + r.IntN(70000) },
		"primes7": func(int) int { return 7 },
	}
	for name, size := range chunkings {
		if name == "1-byte" || name == "primes7" {
			data := data[:200000] // a megabyte of 1-byte writes takes long under -race
			want := want[:0:0]
			for _, l := range strings.SplitAfter(string(data), "\n") {
				want = append(want, strings.TrimSuffix(l, "\n"))
			}
			checkChunking(t, name, data, size, want)
			continue
		}
		checkChunking(t, name, data, size, want)
	}
}

func checkChunking(t *testing.T, name string, data []byte, size func(int) int, want []string) {
	var out lockedBuffer
	m := New(&out, Options{})
	stdout, _ := m.Open(src("api", 0))
	for i := 0; i < len(data); {
		n := min(size(i), len(data)-i)
		stdout.Write(data[i : i+n])
		i += n
	}
	stdout.Close()
	flushed(t, m)
	got := texts(t, out.Bytes())
	if len(got) != len(want) {
		t.Fatalf("%s: %d lines, want %d", name, len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s: line %d differs: %.60q vs %.60q", name, i, got[i], want[i])
		}
	}
}

func TestManyProducersKeepEveryLineWholeAndInOrder(t *testing.T) {
	var out lockedBuffer
	m := New(&out, Options{Services: []string{"p"}, MaxWorkers: 8})
	const producers, lines = 8, 5000
	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stdout, stderr := m.Open(src("p", p))
			r := rand.New(rand.NewPCG(uint64(p), 9))
			var pending []byte
			for i := 0; i < lines; i++ {
				pending = fmt.Appendf(pending, "p%d seq %06d %s\n", p, i, strings.Repeat("x", r.IntN(200)))
				if r.IntN(4) == 0 || i == lines-1 {
					// Write in random pieces, splitting lines.
					for len(pending) > 0 {
						n := min(len(pending), 1+r.IntN(500))
						stdout.Write(pending[:n])
						pending = pending[n:]
					}
				}
			}
			stderr.Write([]byte(fmt.Sprintf("p%d done\n", p)))
			stdout.Close()
			stderr.Close()
		}()
	}
	wg.Wait()
	flushed(t, m)
	next := make([]int, producers)
	for _, l := range texts(t, out.Bytes()) {
		var p, seq int
		if _, err := fmt.Sscanf(l, "p%d seq %d", &p, &seq); err != nil {
			if strings.HasSuffix(l, " done") {
				continue
			}
			t.Fatalf("a broken line: %q", l)
		}
		if seq != next[p] {
			t.Fatalf("producer %d: line %d came where %d was due", p, seq, next[p])
		}
		if want := fmt.Sprintf("p%d seq %06d ", p, seq); !strings.HasPrefix(l, want) || strings.Trim(l[len(want):], "x") != "" {
			t.Fatalf("a merged or broken line: %q", l)
		}
		next[p]++
	}
	for p, n := range next {
		if n != lines {
			t.Errorf("producer %d: %d of %d lines", p, n, lines)
		}
	}
}

func TestQuietPartialLineIsPrinted(t *testing.T) {
	out := lockedBuffer{changed: make(chan struct{}, 1)}
	m := New(&out, Options{Quiet: 20 * time.Millisecond})
	stdout, _ := m.Open(src("api", 0))
	stdout.Write([]byte("Password: "))
	select {
	case <-out.changed:
	case <-time.After(10 * time.Second):
		t.Fatalf("a quiet partial line was never printed")
	}
	if got := string(out.Bytes()); !strings.HasSuffix(got, "| Password: \n") {
		t.Errorf("quiet flush: %q", got)
	}
	stdout.Write([]byte("secret\n"))
	stdout.Close()
}

func TestSlowFollowerIsCutOffWhileOthersKeepEveryLine(t *testing.T) {
	var out lockedBuffer
	m := New(&out, Options{})
	slow := m.Follow(nil, 4096)
	fast := m.Follow(nil, 1<<30)
	stdout, _ := m.Open(src("api", 0))
	const n = 2000
	var got []string
	done := make(chan error)
	go func() {
		for {
			batch, err := fast.Next(context.Background())
			if err != nil {
				done <- err
				return
			}
			for _, l := range batch {
				got = append(got, string(l.Text))
			}
		}
	}()
	for i := 0; i < n; i++ {
		fmt.Fprintf(stdout, "line %d\n", i)
	}
	stdout.Close()
	// The slow follower never read: it is cut off and knows why.
	if _, err := slow.Next(context.Background()); !errors.Is(err, ErrCutOff) {
		t.Errorf("the slow follower: %v, want ErrCutOff", err)
	}
	fast.Close()
	if err := <-done; err != io.EOF {
		t.Errorf("the fast follower ended with %v", err)
	}
	if len(got) != n {
		t.Errorf("the fast follower got %d of %d lines", len(got), n)
	}
	flushed(t, m)
	if lines := texts(t, out.Bytes()); len(lines) != n {
		t.Errorf("the output got %d of %d lines", len(lines), n)
	}
}

func TestRingKeepsRecentLinesPerWorker(t *testing.T) {
	m := New(io.Discard, Options{RingLines: 50})
	a0, _ := m.Open(src("a", 0))
	a1, _ := m.Open(src("a", 1))
	b0, _ := m.Open(src("b", 0))
	for i := 0; i < 100; i++ {
		fmt.Fprintf(a0, "a0 %d\n", i)
		fmt.Fprintf(a1, "a1 %d\n", i)
		fmt.Fprintf(b0, "b0 %d\n", i)
	}
	tail := m.Tail(src("a", 1), 3)
	if len(tail) != 3 || string(tail[0].Text) != "a1 97" || string(tail[2].Text) != "a1 99" {
		t.Errorf("tail of a.1: %v", tail)
	}
	recent := m.Recent([]string{"b"}, 10)
	if len(recent) != 10 || string(recent[9].Text) != "b0 99" {
		t.Errorf("recent b: %d lines, last %q", len(recent), recent[len(recent)-1].Text)
	}
	for _, l := range recent {
		if l.Source.Service != "b" {
			t.Errorf("recent b holds %v", l.Source)
		}
	}
	if all := m.Recent(nil, 1000); len(all) != 100 {
		t.Errorf("each ring keeps its last 50 lines: got %d in all", len(all))
	}
}

func TestGolden(t *testing.T) {
	for _, color := range []bool{false, true} {
		name := "plain"
		if color {
			name = "color"
		}
		t.Run(name, func(t *testing.T) {
			var out lockedBuffer
			m := New(&out, Options{Color: color, Services: []string{"api", "worker"}, MaxWorkers: 12})
			api0, api0err := m.Open(src("api", 0))
			w11, _ := m.Open(src("worker", 11))
			old, _ := m.Open(Source{Service: "api", ID: 1, Generation: 1})
			fmt.Fprintln(api0, "listening")
			fmt.Fprintln(api0err, "a warning on stderr")
			fmt.Fprintln(w11, "\x1b[32mgreen from the worker itself\x1b[0m")
			m.Retire(Source{Service: "api", ID: 1, Generation: 1})
			fmt.Fprintln(old, "draining")
			m.System("api", "api.1 (pid 42) ended: exit code 1; respawning in 1s")
			flushed(t, m)
			path := filepath.Join("testdata", name+".golden")
			if *update {
				os.MkdirAll("testdata", 0o755)
				os.WriteFile(path, out.Bytes(), 0o644)
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("differs from %s (-update rewrites):\n%q\n%q", path, out.Bytes(), want)
			}
		})
	}
}

func TestTimestamps(t *testing.T) {
	var out lockedBuffer
	m := New(&out, Options{Timestamps: true})
	s, _ := m.Open(src("api", 0))
	fmt.Fprintln(s, "x")
	flushed(t, m)
	if ok, _ := filepathMatch(`[0-9][0-9]:[0-9][0-9]:[0-9][0-9].[0-9][0-9][0-9] api.0 *| x`, strings.TrimSpace(string(out.Bytes()))); !ok {
		t.Errorf("timestamped line: %q", out.Bytes())
	}
}

func filepathMatch(pattern, s string) (bool, error) { return filepath.Match(pattern, s) }

// benchmarkLines measures the line path: producers writing 64 KiB chunks
// of 100-byte lines, as the runner's copier does.
func benchmarkLines(b *testing.B, producers int) {
	line := bytes.Repeat([]byte("x"), 99)
	line = append(line, '\n')
	chunk := bytes.Repeat(line, 655) // just under 64 KiB of whole lines
	m := New(io.Discard, Options{Services: []string{"bench"}, MaxWorkers: producers})
	streams := make([]*Stream, producers)
	for i := range streams {
		streams[i], _ = m.Open(src("bench", i))
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	var wg sync.WaitGroup
	per := b.N / producers
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				streams[p].Write(chunk)
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	lines := float64(per*producers) * 655
	b.ReportMetric(lines/b.Elapsed().Seconds(), "lines/s")
	b.ReportMetric(float64(testing.AllocsPerRun(1, func() { streams[0].Write(chunk) }))/655, "allocs/line")
}

func BenchmarkLines1(b *testing.B) { benchmarkLines(b, 1) }
func BenchmarkLines8(b *testing.B) { benchmarkLines(b, 8) }
