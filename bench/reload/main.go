// Command reload measures what a reload costs the clients of a service: a
// service of N workers behind a recluster socket, a load client at
// saturation (one request per connection, or keep-alive), and K reloads
// spread over the run. It prints a Markdown row: requests, failures by
// kind, throughput and latency. -mode restart does the same with
// `recluster restart` (stop, then start), the way other tools reload;
// -mode none is the baseline. -latency times `recluster reload` itself for
// 1, 4 and 16 workers.
//
//	go run ./bench/reload -lang go -workers 4 -reloads 9 -duration 10s
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

type options struct {
	lang      string
	mode      string
	workers   int
	reloads   int
	conns     int
	duration  time.Duration
	keepalive bool
	peer      string
}

func main() {
	var o options
	flag.StringVar(&o.lang, "lang", "go", "worker: go (testdata/worker), node or python (examples/)")
	flag.StringVar(&o.mode, "mode", "reload", "reload, restart or none")
	flag.IntVar(&o.workers, "workers", 4, "workers in the service")
	flag.IntVar(&o.reloads, "reloads", 9, "reloads (or restarts) during the run")
	flag.IntVar(&o.conns, "conns", 32, "concurrent clients")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "how long the load runs")
	flag.BoolVar(&o.keepalive, "keepalive", false, "reuse connections instead of one request per connection")
	flag.StringVar(&o.peer, "peer", "", "run a peer instead of recluster: pm2 (cluster mode, pm2 reload) or node-recluster (the original library, reload on SIGUSR2); installs them with npm into ~/.cache/recluster-bench")
	latency := flag.Bool("latency", false, "time `recluster reload` for 1, 4 and 16 workers instead")
	flag.Parse()
	var err error
	if *latency {
		err = reloadLatency(o)
	} else {
		err = underLoad(o)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench/reload:", err)
		os.Exit(1)
	}
}

// stack is a running `recluster up` in a temporary folder.
type stack struct {
	dir, bin, addr string
	cmd            *exec.Cmd
	env            []string
}

func build(dir string) error {
	for _, b := range [][2]string{{"recluster", "./cmd/recluster"}, {"worker", "./testdata/worker"}} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b[0]), b[1])
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			return err
		}
	}
	return nil
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func startStack(lang string, workers int) (*stack, error) {
	dir, err := os.MkdirTemp("", "recluster-bench-reload-")
	if err != nil {
		return nil, err
	}
	if err := build(dir); err != nil {
		return nil, err
	}
	examples, _ := filepath.Abs("examples")
	var command string
	switch lang {
	case "go":
		command = fmt.Sprintf("[%s/worker, -mode, serve, -ready]", dir)
	case "node":
		command = fmt.Sprintf("[node, %s/node/server.js]", examples)
	case "python":
		command = fmt.Sprintf("[python3, %s/python/server.py]", examples)
	default:
		return nil, fmt.Errorf("unknown -lang %q", lang)
	}
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf("services:\n  web:\n    command: %s\n    workers: %d\n    listen: %q\n    readyWhen: ready\n    timeout: 30s\n", command, workers, addr)
	if err := os.WriteFile(filepath.Join(dir, "recluster.yml"), []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	run := filepath.Join(dir, "run")
	os.Mkdir(run, 0o700)
	s := &stack{dir: dir, bin: filepath.Join(dir, "recluster"), addr: addr, env: append(os.Environ(), "XDG_RUNTIME_DIR="+run, "NO_COLOR=1")}
	s.cmd = exec.Command(s.bin, "up")
	s.cmd.Dir, s.cmd.Env = dir, s.env
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		once := sync.Once{}
		for sc.Scan() {
			if strings.Contains(sc.Text(), "every service is ready") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(2 * time.Minute):
		s.stop()
		return nil, errors.New("the stack was not ready within 2 minutes")
	}
	return s, nil
}

func (s *stack) verb(args ...string) error {
	cmd := exec.Command(s.bin, args...)
	cmd.Dir, cmd.Env = s.dir, s.env
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("recluster %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

func (s *stack) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	s.cmd.Wait()
	os.RemoveAll(s.dir)
}

type result struct {
	latencies []time.Duration
	failures  map[string]int
}

func classify(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case strings.Contains(err.Error(), "Timeout"), strings.Contains(err.Error(), "timeout"):
		return "timeout"
	}
	return "other"
}

// load runs conns clients until ctx ends.
func load(ctx context.Context, addr string, conns int, keepalive bool) result {
	var mu sync.Mutex
	res := result{failures: map[string]int{}}
	var wg sync.WaitGroup
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{
				Transport: &http.Transport{DisableKeepAlives: !keepalive, MaxIdleConnsPerHost: 1},
				Timeout:   10 * time.Second,
			}
			var lat []time.Duration
			fails := map[string]int{}
			for ctx.Err() == nil {
				start := time.Now()
				resp, err := client.Get("http://" + addr + "/")
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					if ctx.Err() == nil {
						fails[classify(err)]++
					}
					continue
				}
				lat = append(lat, time.Since(start))
			}
			mu.Lock()
			res.latencies = append(res.latencies, lat...)
			for k, v := range fails {
				res.failures[k] += v
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return res
}

// target is what the load runs against: recluster, or a peer.
type target interface {
	address() string
	change(mode string) error // reload or restart
	stop()
}

func (s *stack) address() string          { return s.addr }
func (s *stack) change(mode string) error { return s.verb(mode, "web") }

func underLoad(o options) error {
	var s target
	var err error
	switch o.peer {
	case "":
		s, err = startStack(o.lang, o.workers)
	case "pm2", "node-recluster":
		o.lang = "node"
		s, err = startPeer(o.peer, o.workers)
	default:
		err = fmt.Errorf("unknown -peer %q", o.peer)
	}
	if err != nil {
		return err
	}
	defer s.stop()
	ctx, cancel := context.WithTimeout(context.Background(), o.duration)
	defer cancel()
	done := make(chan result)
	go func() { done <- load(ctx, s.address(), o.conns, o.keepalive) }()
	var verbErr error
	if o.mode != "none" {
		gap := o.duration / time.Duration(o.reloads+1)
		for i := 0; i < o.reloads; i++ {
			time.Sleep(gap)
			if err := s.change(o.mode); err != nil && verbErr == nil {
				verbErr = err
			}
		}
	}
	res := <-done
	if verbErr != nil {
		return verbErr
	}
	sort.Slice(res.latencies, func(i, j int) bool { return res.latencies[i] < res.latencies[j] })
	pct := func(p float64) time.Duration {
		if len(res.latencies) == 0 {
			return 0
		}
		return res.latencies[int(p*float64(len(res.latencies)-1))]
	}
	failed := 0
	var kinds []string
	for k, v := range res.failures {
		failed += v
		kinds = append(kinds, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(kinds)
	conn := "one request per connection"
	if o.keepalive {
		conn = "keep-alive"
	}
	tool := "recluster"
	if o.peer != "" {
		tool = o.peer
	}
	what := fmt.Sprintf("%d × %s %s", o.reloads, tool, o.mode)
	if o.mode == "none" {
		what = fmt.Sprintf("no reload (%s baseline)", tool)
	}
	fmt.Printf("| %s, %d workers | %s | %s | %d | %d %s | %.0f | %s | %s | %s |\n",
		o.lang, o.workers, what, conn, len(res.latencies)+failed, failed, strings.Join(kinds, ", "),
		float64(len(res.latencies))/o.duration.Seconds(), ms(pct(0.5)), ms(pct(0.99)), ms(pct(1)))
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func reloadLatency(o options) error {
	for _, n := range []int{1, 4, 16} {
		s, err := startStack(o.lang, n)
		if err != nil {
			return err
		}
		var times []time.Duration
		for i := 0; i < 5; i++ {
			start := time.Now()
			if err := s.verb("reload", "web"); err != nil {
				s.stop()
				return err
			}
			times = append(times, time.Since(start))
		}
		s.stop()
		sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
		fmt.Printf("| %s | %d | %s | %s | %s |\n", o.lang, n, ms(times[0]), ms(times[2]), ms(times[4]))
	}
	return nil
}
