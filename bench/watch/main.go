// Command watch measures the dev loop: an app whose source is saved again
// and again while a load client runs against it. For each save, the time
// from the write to the first response that the new code gives; over the
// run, the requests that failed. recluster (`watch`, with `build` for Go,
// behind its http proxy) runs beside process-compose's `watch` and PM2's
// `--watch` on the same app, which binds $PORT and handles no signal, the
// way a dev server is written. It prints a Markdown row.
//
// The app's own build and boot time (a cold start of the same edit, timed
// to its first response) is measured first, so that what the manager adds
// can be read off: save-to-served minus own.
//
//	go run ./bench/watch -lang go -saves 20
//	go run ./bench/watch -lang node -peer pm2
package main

import (
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
	"time"

	"github.com/recluster/recluster/bench/internal/peers"
	"github.com/recluster/recluster/internal/load"
)

type options struct {
	lang      string
	peer      string
	saves     int
	conns     int
	keepalive bool
	gap       time.Duration
	pause     time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.lang, "lang", "go", "the app: go (built by the manager) or node")
	flag.StringVar(&o.peer, "peer", "", "process-compose or pm2 instead of recluster (fetched into ~/.cache/recluster-bench)")
	flag.IntVar(&o.saves, "saves", 20, "saves to time")
	flag.IntVar(&o.conns, "conns", 4, "concurrent load clients")
	flag.DurationVar(&o.pause, "pause", 10*time.Millisecond, "each client's pause between requests (0: saturation, which on a small machine starves the build)")
	flag.BoolVar(&o.keepalive, "keepalive", false, "reuse connections instead of one request per connection")
	flag.DurationVar(&o.gap, "gap", time.Second, "pause after the new code serves before the next save")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench/watch:", err)
		os.Exit(1)
	}
}

// app is the source tree under test: dir/app holds the source (what the
// managers watch), dir/bin what a build makes, outside the watched tree.
type app struct {
	lang, dir, src string
}

func newApp(lang, dir string) (*app, error) {
	a := &app{lang: lang, dir: dir, src: filepath.Join(dir, "app")}
	if err := os.MkdirAll(a.src, 0o755); err != nil {
		return nil, err
	}
	if lang == "go" {
		if err := os.WriteFile(filepath.Join(a.src, "go.mod"), []byte("module app\n\ngo 1.26\n"), 0o644); err != nil {
			return nil, err
		}
	}
	return a, a.save("v0")
}

const goSource = `package main

import (
	"fmt"
	"net/http"
	"os"
)

const version = %q

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, version) })
	if err := http.ListenAndServe("127.0.0.1:"+os.Getenv("PORT"), nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
`

const nodeSource = `const version = %q;
require('http').createServer((req, res) => {
  req.resume();
  req.on('end', () => res.end(version));
}).listen(process.env.PORT, '127.0.0.1');
`

// save writes the source as an editor's plain save does: one write of the
// whole file in place.
func (a *app) save(version string) error {
	name, text := "server.js", nodeSource
	if a.lang == "go" {
		name, text = "main.go", goSource
	}
	return os.WriteFile(filepath.Join(a.src, name), []byte(fmt.Sprintf(text, version)), 0o644)
}

// buildAndRun is the shell command that builds (Go) and runs the app, for
// the peers, which have no build step of their own.
func (a *app) buildAndRun() string {
	if a.lang == "go" {
		return "go build -o ../bin/app . && exec ../bin/app"
	}
	return "exec node server.js"
}

// ownTime is the app's own cold start for an edit: build (Go) and boot, to
// its first response, with no manager. The median of 5. The same load as
// in the run goes on meanwhile, against a copy of the app that serves
// beside it, since on a machine of few cores the load slows a build.
func (a *app) ownTime(o options) (time.Duration, error) {
	servingPort, err := freePort()
	if err != nil {
		return 0, err
	}
	serving := exec.Command("sh", "-c", a.buildAndRun())
	serving.Dir, serving.Env = a.src, append(os.Environ(), "PORT="+servingPort)
	if err := serving.Start(); err != nil {
		return 0, err
	}
	defer func() {
		serving.Process.Kill()
		serving.Wait()
	}()
	servingAddr := net.JoinHostPort("127.0.0.1", servingPort)
	if _, err := waitFor(servingAddr, "v0", time.Now().Add(time.Minute)); err != nil {
		return 0, err
	}
	l := load.Start(servingAddr, load.Options{Conns: o.conns, KeepAlive: o.keepalive, Pause: o.pause})
	defer l.Finish()
	var took []time.Duration
	for i := 0; i < 5; i++ {
		port, err := freePort()
		if err != nil {
			return 0, err
		}
		version := fmt.Sprintf("own%d", i)
		if err := a.save(version); err != nil {
			return 0, err
		}
		start := time.Now()
		cmd := exec.Command("sh", "-c", a.buildAndRun())
		cmd.Dir, cmd.Env = a.src, append(os.Environ(), "PORT="+port)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		_, err = waitFor(net.JoinHostPort("127.0.0.1", port), version, start.Add(time.Minute))
		took = append(took, time.Since(start))
		cmd.Process.Kill()
		cmd.Wait()
		if err != nil {
			return 0, err
		}
	}
	return median(took), a.save("v0")
}

// manager is recluster or a peer, running the app.
type manager interface {
	stop()
}

func run(o options) error {
	dir, err := os.MkdirTemp("", "recluster-bench-watch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	a, err := newApp(o.lang, dir)
	if err != nil {
		return err
	}
	own, err := a.ownTime(o)
	if err != nil {
		return fmt.Errorf("the app alone: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	addr := net.JoinHostPort("127.0.0.1", port)
	var m manager
	name := "recluster"
	switch o.peer {
	case "":
		m, err = startRecluster(a, addr)
	case "process-compose":
		name = "process-compose"
		m, err = startProcessCompose(a, port)
	case "pm2":
		name = "pm2 --watch"
		m, err = startPM2(a, port)
	default:
		err = fmt.Errorf("unknown peer %q", o.peer)
	}
	if err != nil {
		return err
	}
	defer m.stop()
	if _, err := waitFor(addr, "v0", time.Now().Add(2*time.Minute)); err != nil {
		return fmt.Errorf("%s: the app never served: %w", name, err)
	}

	l := load.Start(addr, load.Options{Conns: o.conns, KeepAlive: o.keepalive, Pause: o.pause})
	if !l.WaitServed(100, 30*time.Second) {
		return fmt.Errorf("%s: the load is not served: %v", name, l.Snapshot().Failures)
	}
	var took []time.Duration
	for i := 1; i <= o.saves; i++ {
		version := fmt.Sprintf("v%d", i)
		start := time.Now()
		if err := a.save(version); err != nil {
			return err
		}
		at, err := waitFor(addr, version, start.Add(time.Minute))
		if err != nil {
			l.Finish()
			return fmt.Errorf("%s: save %d: %w", name, i, err)
		}
		took = append(took, at.Sub(start))
		time.Sleep(o.gap) // a developer reading the new page before the next save
	}
	r := l.Finish()
	conns := "one request per connection"
	if o.keepalive {
		conns = "keep-alive"
	}
	fmt.Printf("| %s | %s | %s | %d | %s | %s | %s | %s | %d of %d%s |\n", name, o.lang, conns, len(took),
		ms(median(took)), ms(percentile(took, 99)), ms(own), ms(median(took)-own),
		r.Failed(), r.OK+int64(r.Failed()), kinds(r.Failures))
	return nil
}

// waitFor asks the app for its version, on a connection of its own each
// time, until it answers want, and returns when it did. The probe's
// resolution is its 5 ms pause.
func waitFor(addr, want string, deadline time.Time) (time.Time, error) {
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 2 * time.Second}
	last := "nothing"
	for time.Now().Before(deadline) {
		resp, err := hc.Get("http://" + addr + "/")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) == want {
				return time.Now(), nil
			}
			last = fmt.Sprintf("%q", body)
		} else {
			last = err.Error()
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Time{}, fmt.Errorf("no %q from %s in time; last: %s", want, addr, last)
}

// foreground is a manager run as a child of the benchmark, stopped as
// Ctrl-C would.
type foreground struct{ cmd *exec.Cmd }

func (f *foreground) stop() {
	f.cmd.Process.Signal(os.Interrupt)
	f.cmd.Wait()
}

// startRecluster runs the app behind recluster's http proxy, one worker,
// with `build` for Go and `watch: true`.
func startRecluster(a *app, addr string) (*foreground, error) {
	bin := filepath.Join(a.dir, "recluster")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/recluster").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building recluster: %v: %s", err, out)
	}
	svc := "    command: [node, server.js]\n"
	if a.lang == "go" {
		svc = "    build: go build -o ../bin/app .\n    command: ../bin/app\n"
	}
	yml := fmt.Sprintf("services:\n  app:\n    dir: app\n%s    workers: 1\n    watch: true\n    proxy: {address: %q, protocol: http}\n", svc, addr)
	if err := os.WriteFile(filepath.Join(a.dir, "recluster.yml"), []byte(yml), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "up", "--color=never")
	cmd.Dir = a.dir
	run := filepath.Join(a.dir, "run")
	if err := os.Mkdir(run, 0o700); err != nil {
		return nil, err
	}
	cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+run)
	cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &foreground{cmd}, nil
}

// startProcessCompose runs the app's build-and-run command with a `watch` block
// on the source folder.
func startProcessCompose(a *app, port string) (*foreground, error) {
	bin, err := peers.Go("process-compose")
	if err != nil {
		return nil, err
	}
	yml := fmt.Sprintf(`processes:
  app:
    command: %q
    working_dir: %q
    environment: ["PORT=%s"]
    watch:
      paths:
        - path: %q
`, a.buildAndRun(), a.src, port, a.src)
	if err := os.WriteFile(filepath.Join(a.dir, "pc.yaml"), []byte(yml), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "up", "--tui=false", "--port", "0", "-f", "pc.yaml")
	cmd.Dir = a.dir
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	return &foreground{cmd}, nil
}

// pm2 runs the Node app in cluster mode (its master holds the port, its
// best case) and the Go one in fork mode through the shell, with --watch
// on the source folder.
type pm2 struct{ dir, bin string }

func startPM2(a *app, port string) (*pm2, error) {
	mods, err := peers.NPM()
	if err != nil {
		return nil, err
	}
	p := &pm2{dir: a.dir, bin: filepath.Join(mods, ".bin", "pm2")}
	app := fmt.Sprintf(`{name: 'app', cwd: %q, script: 'server.js', exec_mode: 'cluster', instances: 1, watch: true, env: {PORT: %q}}`, a.src, port)
	if a.lang == "go" {
		app = fmt.Sprintf(`{name: 'app', cwd: %q, script: '/bin/sh', args: ['-c', %q], interpreter: 'none', watch: true, env: {PORT: %q}}`, a.src, a.buildAndRun(), port)
	}
	eco := filepath.Join(a.dir, "ecosystem.config.js")
	if err := os.WriteFile(eco, []byte("module.exports = {apps: ["+app+"]};\n"), 0o644); err != nil {
		return nil, err
	}
	return p, p.run("start", eco)
}

func (p *pm2) run(args ...string) error {
	cmd := exec.Command(p.bin, args...)
	cmd.Env = append(os.Environ(), "PM2_HOME="+filepath.Join(p.dir, "pm2"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pm2 %v: %v: %s", args, err, out)
	}
	return nil
}

func (p *pm2) stop() { p.run("kill") }

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port, nil
}

func median(d []time.Duration) time.Duration { return percentile(d, 50) }

// percentile is the nearest-rank percentile: of 20 saves, p99 is the
// slowest.
func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := (p*len(s) + 99) / 100
	return s[max(rank, 1)-1]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }

func kinds(f map[string]int) string {
	if len(f) == 0 {
		return ""
	}
	var parts []string
	for k, v := range f {
		parts = append(parts, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(parts)
	return " (" + strings.Join(parts, ", ") + ")"
}
