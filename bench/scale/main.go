// Command scale measures recluster's own cost as a stack grows: the time
// from `recluster up` to every worker ready for N `sleep` workers, with
// recluster's memory per worker; and with -idle, recluster's RSS and CPU
// over 30 idle seconds with S services.
//
//	go run ./bench/scale                 # 10, 100, 500 and 2000 workers
//	go run ./bench/scale -idle           # 10 and 100 services, 30 s idle
//	go run ./bench/scale -health         # 100 proxied workers, 30 s, without and with a 1 s http health probe
//	go run ./bench/scale -metrics        # 100 proxied workers, 30 s, without and with a scrape of /metrics every second
//	go run ./bench/scale -view           # 100 proxied workers, 30 s, without and with what `recluster top` asks every second
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/recluster/recluster/internal/control"
	"github.com/recluster/recluster/internal/proc"
)

func main() {
	idle := flag.Bool("idle", false, "measure idle footprint instead of start-up")
	window := flag.Duration("window", 30*time.Second, "idle window")
	peer := flag.String("peer", "", "with -idle, measure a peer instead: goreman, process-compose or pm2 (its daemon)")
	health := flag.Bool("health", false, "measure what health probes cost up: 100 workers, without and with a 1 s http probe")
	metrics := flag.Bool("metrics", false, "measure what metrics cost up: 100 workers, without and with a scrape every second")
	view := flag.Bool("view", false, "measure what the live view costs up: 100 workers, without and with its status and log requests every second")
	flag.Parse()
	dir, err := os.MkdirTemp("", "recluster-bench-scale-")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "recluster")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/recluster")
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		fail(err)
	}
	if *health || *metrics || *view {
		mode := "health"
		switch {
		case *metrics:
			mode = "metrics"
		case *view:
			mode = "view"
		}
		if err := probeCost(dir, bin, 100, *window, mode); err != nil {
			fail(err)
		}
		return
	}
	if *idle {
		for _, services := range []int{10, 100} {
			var err error
			if *peer == "" {
				err = footprint(dir, bin, services, *window)
			} else {
				err = peerFootprint(dir, *peer, services, *window)
			}
			if err != nil {
				fail(err)
			}
		}
		return
	}
	for _, workers := range []int{10, 100, 500, 2000} {
		if err := startup(dir, bin, workers); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench/scale:", err)
	os.Exit(1)
}

// up starts recluster on cfg and returns once it says every service is
// ready, with the time that took.
func up(dir, bin, cfg string) (*exec.Cmd, time.Duration, error) {
	if err := os.WriteFile(filepath.Join(dir, "recluster.yml"), []byte(cfg), 0o644); err != nil {
		return nil, 0, err
	}
	run := filepath.Join(dir, "run")
	os.MkdirAll(run, 0o700)
	cmd := exec.Command(bin, "up")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+run, "NO_COLOR=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, 0, err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "every service is ready") {
			took := time.Since(start)
			go func() {
				for sc.Scan() {
				}
			}()
			return cmd, took, nil
		}
	}
	return nil, 0, fmt.Errorf("recluster up ended before it was ready")
}

func stop(cmd *exec.Cmd) {
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
}

func startup(dir, bin string, workers int) error {
	cfg := fmt.Sprintf("services:\n  s:\n    command: sleep 100000\n    workers: %d\n    timeout: 0\n", workers)
	cmd, took, err := up(dir, bin, cfg)
	if err != nil {
		return err
	}
	defer stop(cmd)
	rss := proc.RSSKiB(cmd.Process.Pid)
	fmt.Printf("| %d | %s | %d | %.1f MiB | %.1f KiB |\n", workers, took.Round(time.Millisecond), proc.Threads(cmd.Process.Pid), float64(rss)/1024, float64(rss)/float64(workers))
	return nil
}

func footprint(dir, bin string, services int, window time.Duration) error {
	var b strings.Builder
	b.WriteString("services:\n")
	for i := 0; i < services; i++ {
		fmt.Fprintf(&b, "  s%d:\n    command: sleep 100000\n    workers: 1\n    timeout: 0\n", i)
	}
	cmd, _, err := up(dir, bin, b.String())
	if err != nil {
		return err
	}
	defer stop(cmd)
	report("recluster", services, cmd.Process.Pid, window)
	return nil
}

// probeCost runs one service of n proxied workers (the test worker in
// naive mode, which answers /healthz) for window twice, and prints up's
// CPU in each as a share of one core: without and with an http probe
// every second, or (scrape) without and with a scrape of /metrics every
// second.
func probeCost(dir, bin string, n int, window time.Duration, mode string) error {
	scrape := mode == "metrics"
	worker := filepath.Join(dir, "worker")
	build := exec.Command("go", "build", "-o", worker, "./testdata/worker")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		return err
	}
	what := "health probe"
	switch mode {
	case "metrics":
		what = "metrics"
	case "view":
		what = "live view"
	}
	fmt.Printf("| %s | workers | up's CPU over the window | share of one core |\n", what)
	fmt.Println("|---|---|---|---|")
	for _, on := range []bool{false, true} {
		extra, name := "", "none"
		switch {
		case on && scrape:
			extra, name = "metrics: 127.0.0.1:19399\n", "GET /metrics every 1s"
		case on && mode == "view":
			name = "status and 40 log lines every 1s"
		case on:
			extra, name = "    health: {http: /healthz, every: 1s}\n", "http /healthz every 1s"
		}
		cfg := fmt.Sprintf("services:\n  web:\n    command: [%s, -mode, naive]\n    workers: %d\n    proxy: {address: \"127.0.0.1:0\", protocol: http}\n    timeout: 0\n", worker, n)
		if scrape {
			cfg = extra + cfg
		} else {
			cfg += extra
		}
		cmd, _, err := up(dir, bin, cfg)
		if err != nil {
			return err
		}
		stopScraping := make(chan struct{})
		if on && scrape {
			go everySecond(scrapeOf("http://127.0.0.1:19399/metrics"), stopScraping)
		}
		if on && mode == "view" {
			paths, err := control.PathsFor(filepath.Join(dir, "recluster.yml"), func(k string) string {
				if k == "XDG_RUNTIME_DIR" {
					return filepath.Join(dir, "run")
				}
				return os.Getenv(k)
			})
			if err != nil {
				return err
			}
			go everySecond(askAsTheViewDoes(control.NewClient(filepath.Join(dir, "recluster.yml"), paths)), stopScraping)
		}
		time.Sleep(3 * time.Second) // the first probes and the start's garbage settle, unmeasured
		cpu0 := proc.CPUSeconds(cmd.Process.Pid)
		time.Sleep(window) // the window being measured
		cpu := proc.CPUSeconds(cmd.Process.Pid) - cpu0
		close(stopScraping)
		stop(cmd)
		fmt.Printf("| %s | %d | %.2f s over %s | %.2f %% |\n", name, n, cpu, window, 100*cpu/window.Seconds())
	}
	return nil
}

// askAsTheViewDoes asks what `recluster top` asks each second: the
// status, and the selected service's last lines.
func askAsTheViewDoes(c *control.Client) func() {
	return func() {
		c.Status(context.Background())
		c.Logs(context.Background(), []string{"web"}, 40, false, func(control.LogEvent) error { return nil })
	}
}

// scrapeOf GETs url, as Prometheus does at each interval.
func scrapeOf(url string) func() {
	return func() {
		if resp, err := http.Get(url); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
}

// everySecond does ask once a second until stop closes.
func everySecond(ask func(), stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			ask()
		}
	}
}

// report measures pid over an idle window and prints a row.
func report(name string, services, pid int, window time.Duration) {
	cpu0 := proc.CPUSeconds(pid)
	time.Sleep(window) // the idle window being measured
	cpu := proc.CPUSeconds(pid) - cpu0
	fmt.Printf("| %s | %d services × 1 worker | %.1f MiB | %.2f s over %s |\n", name, services, float64(proc.RSSKiB(pid))/1024, cpu, window)
}
