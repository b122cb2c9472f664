// Command logs measures a process manager's log path end to end: P
// producers, each a worker printing N lines of 100 bytes as fast as it
// can, through the manager into a file. It prints lines/s, the manager's
// own CPU seconds per million lines (from /proc, so the producers' CPU is
// not counted), and how many lines were lost or broken.
//
//	go run ./bench/logs -producers 4 -lines 250000
//	go run ./bench/logs -peer goreman        # or process-compose, foreman
//
// The peers are built or installed into ~/.cache/recluster-bench: goreman
// v0.3.19 and process-compose v1.103.0 through a throwaway module, the
// Node foreman 3.0.1 with npm. Nothing of theirs is committed.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/recluster/recluster/bench/internal/peers"
	"github.com/recluster/recluster/internal/proc"
)

func main() {
	producers := flag.Int("producers", 4, "worker processes printing lines")
	lines := flag.Int("lines", 250000, "lines per producer")
	size := flag.Int("size", 100, "bytes per line, newline included")
	peer := flag.String("peer", "", "measure a peer instead: goreman, process-compose or foreman")
	flag.Parse()
	if err := run(*peer, *producers, *lines, *size); err != nil {
		fmt.Fprintln(os.Stderr, "bench/logs:", err)
		os.Exit(1)
	}
}

func build(dir, out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, out), pkg)
	cmd.Stderr = os.Stderr
	return cmd.Run()
}

// command returns how to run the manager over the producers in dir.
func command(peer, dir string, producers, lines, size int) (*exec.Cmd, error) {
	worker := filepath.Join(dir, "worker")
	producer := func(id int) string {
		return fmt.Sprintf("env WORKER_ID=%d %s -mode lines -n %d -size %d -after 1h", id, worker, lines, size-1)
	}
	var procfile strings.Builder
	for i := 0; i < producers; i++ {
		fmt.Fprintf(&procfile, "p%d: %s\n", i, producer(i))
	}
	write := func(name, text string) error { return os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644) }
	switch peer {
	case "":
		cfg := fmt.Sprintf("services:\n  p:\n    command: [%s, -mode, lines, -n, \"%d\", -size, \"%d\", -after, 1h]\n    workers: %d\n", worker, lines, size-1, producers)
		if err := write("recluster.yml", cfg); err != nil {
			return nil, err
		}
		run := filepath.Join(dir, "run")
		os.Mkdir(run, 0o700)
		cmd := exec.Command(filepath.Join(dir, "recluster"), "up", "--color=never")
		cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+run)
		return cmd, nil
	case "goreman":
		bin, err := peers.Go("goreman")
		if err != nil {
			return nil, err
		}
		if err := write("Procfile", procfile.String()); err != nil {
			return nil, err
		}
		return exec.Command(bin, "start"), nil
	case "foreman":
		mods, err := peers.NPM()
		bin := filepath.Join(mods, ".bin", "nf")
		if err != nil {
			return nil, err
		}
		if err := write("Procfile", procfile.String()); err != nil {
			return nil, err
		}
		return exec.Command(bin, "start"), nil
	case "process-compose":
		bin, err := peers.Go("process-compose")
		if err != nil {
			return nil, err
		}
		var cfg strings.Builder
		cfg.WriteString("version: \"0.5\"\nprocesses:\n")
		for i := 0; i < producers; i++ {
			fmt.Fprintf(&cfg, "  p%d:\n    command: %q\n", i, producer(i))
		}
		if err := write("process-compose.yaml", cfg.String()); err != nil {
			return nil, err
		}
		return exec.Command(bin, "up", "--tui=false", "--port", "0", "-f", "process-compose.yaml"), nil
	}
	return nil, fmt.Errorf("unknown -peer %q", peer)
}

func run(peer string, producers, lines, size int) error {
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
	cmd, err := command(peer, dir, producers, lines, size)
	if err != nil {
		return err
	}
	outPath := filepath.Join(dir, "out.log")
	out, err := os.Create(outPath)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return err
	}
	defer proc.StopGroup(cmd)

	// Count producer lines as they arrive, reading each byte once, until
	// all are there or the output has been still for 3 s (lines lost).
	total := producers * lines
	// Producer lines end in "x\n"; counting that is cheap enough that the
	// harness does not slow what it measures.
	payload := []byte("x\n")
	var first, last time.Time
	counted, offset := 0, int64(0)
	buf := make([]byte, 1<<20)
	reader, err := os.Open(outPath)
	if err != nil {
		return err
	}
	defer reader.Close()
	var pending []byte
	for counted < total {
		n, _ := reader.ReadAt(buf, offset)
		if n > 0 {
			offset += int64(n)
			last = time.Now()
			if len(pending) > 0 && pending[0] == 'x' && buf[0] == '\n' {
				counted++ // "x\n" split across two reads
			}
			counted += bytes.Count(buf[:n], payload)
			pending = append(pending[:0], buf[n-1])
			if first.IsZero() && counted > 0 {
				first = time.Now()
			}
			continue
		}
		if !last.IsZero() && time.Since(last) > 3*time.Second {
			break // the output stopped short: lines were lost
		}
		if time.Since(start) > 5*time.Minute {
			return fmt.Errorf("no output after 5 minutes")
		}
		time.Sleep(time.Millisecond) // a benchmark's poll of the output file
	}
	elapsed := last.Sub(start)
	cpu := proc.CPUSeconds(cmd.Process.Pid)
	lost, broken, disordered, err := verify(outPath, producers, lines, size)
	if err != nil {
		return err
	}
	name := "recluster up"
	if peer != "" {
		name = peer
	}
	mlines := float64(total) / 1e6
	exact := "every line whole and in order"
	if lost+broken+disordered > 0 {
		exact = fmt.Sprintf("%d lost, %d broken, %d out of order", lost, broken, disordered)
	}
	fmt.Printf("| %s | %d × %d lines of %d bytes | %.2f M lines/s | %.2f M lines/s | %.3f | %.2f s | %s |\n",
		name, producers, lines, size, mlines/elapsed.Seconds(), mlines/last.Sub(first).Seconds(), cpu/mlines, elapsed.Seconds(), exact)
	return nil
}

// verify counts, per producer, the lines that never arrived, the lines
// that arrived damaged (cut, merged with another, or with bytes missing),
// and the ones out of order.
func verify(path string, producers, lines, size int) (lost, broken, disordered int, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, 0, err
	}
	whole := regexp.MustCompile(fmt.Sprintf(`(?:^|[^\d])(\d) (\d{9}) (x{%d})$`, size-14))
	seen := make([]map[int]bool, producers)
	next := make([]int, producers)
	for i := range seen {
		seen[i] = map[int]bool{}
	}
	for _, l := range bytes.Split(data, []byte("\n")) {
		if !bytes.Contains(l, []byte("x")) {
			continue
		}
		m := whole.FindSubmatch(l)
		if m == nil {
			broken++
			continue
		}
		id, _ := strconv.Atoi(string(m[1]))
		seq, _ := strconv.Atoi(string(m[2]))
		if id >= producers {
			broken++
			continue
		}
		if seq != next[id] {
			disordered++
		}
		next[id] = seq + 1
		seen[id][seq] = true
	}
	for _, s := range seen {
		lost += lines - len(s)
	}
	return lost, broken, disordered, nil
}
