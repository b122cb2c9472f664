// Command logs measures recluster's log path end to end: P producers, each
// a worker printing N lines of 100 bytes as fast as it can, through
// `recluster up` into a file. It prints lines/s, recluster's own CPU
// seconds per million lines (from /proc, so the producers' CPU is not
// counted), and checks that every line arrived whole and in order.
//
//	go run ./bench/logs -producers 4 -lines 250000
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	producers := flag.Int("producers", 4, "worker processes printing lines")
	lines := flag.Int("lines", 250000, "lines per producer")
	size := flag.Int("size", 100, "bytes per line, newline included")
	flag.Parse()
	if err := run(*producers, *lines, *size); err != nil {
		fmt.Fprintln(os.Stderr, "bench/logs:", err)
		os.Exit(1)
	}
}

func build(dir, out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, out), pkg)
	cmd.Stderr = os.Stderr
	return cmd.Run()
}

func run(producers, lines, size int) error {
	dir, err := os.MkdirTemp("", "recluster-bench-logs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := build(dir, "recluster", "./cmd/recluster"); err != nil {
		return err
	}
	if err := build(dir, "worker", "./testdata/worker"); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`services:
  p:
    command: [%s/worker, -mode, lines, -n, "%d", -size, "%d", -after, 1h]
    workers: %d
`, dir, lines, size-1, producers)
	if err := os.WriteFile(filepath.Join(dir, "recluster.yml"), []byte(cfg), 0o644); err != nil {
		return err
	}
	outPath := filepath.Join(dir, "out.log")
	out, err := os.Create(outPath)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command(filepath.Join(dir, "recluster"), "up", "--color=never")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	run := filepath.Join(dir, "run")
	os.Mkdir(run, 0o700)
	cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+run)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	total := producers * lines
	// Count newlines as they arrive, reading each byte once, until the file
	// holds every producer line and recluster's two opening lines.
	var elapsed time.Duration
	var first time.Time // when the first producer line arrived
	counted, offset := 0, int64(0)
	buf := make([]byte, 1<<20)
	reader, err := os.Open(outPath)
	if err != nil {
		return err
	}
	defer reader.Close()
	for counted < total+2 {
		n, _ := reader.ReadAt(buf, offset)
		if n > 0 {
			offset += int64(n)
			counted += bytes.Count(buf[:n], []byte("\n"))
			if first.IsZero() && counted > 2 {
				first = time.Now()
			}
			continue
		}
		if time.Since(start) > 5*time.Minute {
			return fmt.Errorf("lines missing after 5 minutes: %d of %d", counted, total+2)
		}
		time.Sleep(time.Millisecond) // a benchmark's poll of the output file
	}
	elapsed = time.Since(start)
	steady := elapsed - first.Sub(start)
	cpu, err := cpuSeconds(cmd.Process.Pid)
	if err != nil {
		return err
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	if err := verify(outPath, producers, lines); err != nil {
		return err
	}
	mlines := float64(total) / 1e6
	fmt.Printf("| %d × %d lines of %d bytes | %.2f M lines/s | %.2f M lines/s | %.3f | %.2f s | every line whole and in order |\n",
		producers, lines, size, mlines/elapsed.Seconds(), mlines/steady.Seconds(), cpu/mlines, elapsed.Seconds())
	return nil
}

// cpuSeconds reads utime+stime of pid itself (not its children), in
// seconds; the kernel counts in ticks of 10ms, so short runs are coarse.
func cpuSeconds(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100, nil // USER_HZ is 100 on Linux
}

// verify checks that each producer's lines arrived whole and in order.
func verify(path string, producers, lines int) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	next := make([]int, producers)
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "recluster") {
			continue
		}
		i := strings.Index(l, "| ")
		if i < 0 {
			return fmt.Errorf("a line without a prefix: %q", l)
		}
		var id, seq int
		if _, err := fmt.Sscanf(l[i+2:], "%d %d", &id, &seq); err != nil || id >= producers {
			return fmt.Errorf("a broken line: %.80q", l)
		}
		if seq != next[id] {
			return fmt.Errorf("producer %d: line %d where %d was due", id, seq, next[id])
		}
		if !strings.HasSuffix(l, "x") {
			return fmt.Errorf("a cut line: %.80q", l)
		}
		next[id]++
	}
	for id, n := range next {
		if n != lines {
			return fmt.Errorf("producer %d: %d of %d lines", id, n, lines)
		}
	}
	return sc.Err()
}
