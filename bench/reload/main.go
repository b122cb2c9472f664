// Command reload measures what a reload costs the clients of a service: a
// service of N workers behind a recluster socket, a load client at
// saturation (one request per connection, or keep-alive), and K reloads
// spread over the run. It prints a Markdown row: requests, failures by
// kind, throughput, latency, and the CPU the supervising process itself
// used (recluster up, PM2's daemon, the Node recluster's master). -mode
// restart does the same with `recluster restart` (stop, then start), the
// way other tools reload; -mode none is the baseline. -proxy tcp|http runs
// the Node server that binds $PORT (the one PM2 runs) behind recluster's
// proxy. -latency times `recluster reload` itself for 1, 4 and 16 workers.
//
//	go run ./bench/reload -lang go -workers 4 -reloads 9 -duration 10s
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/recluster/recluster/internal/load"
	"github.com/recluster/recluster/internal/proc"
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
	proxy     string
	maxSurge  int
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
	flag.StringVar(&o.proxy, "proxy", "", "tcp or http: the Node server that binds $PORT, behind recluster's proxy (implies -lang node)")
	flag.IntVar(&o.maxSurge, "maxsurge", 0, "the service's maxSurge (0: all at once, the default)")
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

func startStack(o options) (*stack, error) {
	lang, workers := o.lang, o.workers
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
		if o.proxy != "" {
			peersDir, _ := filepath.Abs("bench/peers")
			command = fmt.Sprintf("[node, %s/server.js]", peersDir)
		}
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
	if o.proxy != "" {
		cfg = fmt.Sprintf("services:\n  web:\n    command: %s\n    workers: %d\n    proxy: {address: %q, protocol: %s}\n    timeout: 30s\n", command, workers, addr, o.proxy)
	}
	if o.maxSurge > 0 {
		cfg += fmt.Sprintf("    maxSurge: %d\n", o.maxSurge)
	}
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

// target is what the load runs against: recluster, or a peer.
type target interface {
	address() string
	change(mode string) error // reload or restart
	stop()
	// managerPid is the supervising process, whose own CPU is measured.
	managerPid() int
}

func (s *stack) address() string          { return s.addr }
func (s *stack) managerPid() int          { return s.cmd.Process.Pid }
func (s *stack) change(mode string) error { return s.verb(mode, "web") }

func underLoad(o options) error {
	var s target
	var err error
	switch o.peer {
	case "":
		if o.proxy != "" {
			o.lang = "node"
		}
		s, err = startStack(o)
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
	cpuBefore := proc.CPUSeconds(s.managerPid())
	start := time.Now()
	l := load.Start(s.address(), load.Options{Conns: o.conns, KeepAlive: o.keepalive, Latencies: true})
	var verbErr error
	if o.mode != "none" {
		// The reloads are spread evenly over the run, each at its time
		// whatever the last one took.
		gap := o.duration / time.Duration(o.reloads+1)
		for i := 1; i <= o.reloads; i++ {
			time.Sleep(time.Until(start.Add(time.Duration(i) * gap)))
			if err := s.change(o.mode); err != nil && verbErr == nil {
				verbErr = err
			}
		}
	}
	time.Sleep(time.Until(start.Add(o.duration)))
	res := l.Finish()
	elapsed := time.Since(start)
	cpu := proc.CPUSeconds(s.managerPid()) - cpuBefore
	if verbErr != nil {
		return verbErr
	}
	lat := res.Latencies
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(p*float64(len(lat)-1))]
	}
	failed := res.Failed()
	var kinds []string
	for k, v := range res.Failures {
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
	service := fmt.Sprintf("%s, %d workers", o.lang, o.workers)
	if o.proxy != "" {
		service = fmt.Sprintf("node ($PORT) behind %s proxy, %d workers", o.proxy, o.workers)
	}
	what := fmt.Sprintf("%d × %s %s", o.reloads, tool, o.mode)
	if o.maxSurge > 0 {
		what += fmt.Sprintf(" (maxSurge %d)", o.maxSurge)
	}
	if o.mode == "none" {
		what = fmt.Sprintf("no reload (%s baseline)", tool)
	}
	fmt.Printf("| %s | %s | %s | %d | %d %s | %.0f | %s | %s | %s | %.1f s |\n",
		service, what, conn, len(lat)+failed, failed, strings.Join(kinds, ", "),
		float64(len(lat))/elapsed.Seconds(), ms(pct(0.5)), ms(pct(0.99)), ms(pct(1)), cpu)
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func reloadLatency(o options) error {
	for _, n := range []int{1, 4, 16} {
		o.workers = n
		s, err := startStack(o)
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
