package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/recluster/recluster/config"
	"github.com/recluster/recluster/internal/control"
	"github.com/recluster/recluster/internal/logfile"
	"github.com/recluster/recluster/internal/metrics"
	"github.com/recluster/recluster/internal/netlimit"
	"github.com/recluster/recluster/internal/osproc"
	"github.com/recluster/recluster/internal/sdnotify"
	"github.com/recluster/recluster/logmux"
	"github.com/recluster/recluster/runner"
)

func init() {
	register(&verb{
		name:     "up",
		services: true,
		args:     "[SERVICE…]",
		summary:  "Run the services (all, or the named ones and what they need) in the foreground.\nCtrl-C stops them gracefully; a second Ctrl-C kills them. SIGUSR2 reloads every service.",
		run:      runUp,
	})
}

// colorFlag is --color=auto|always|never.
type colorFlag struct{ value string }

func (c *colorFlag) String() string { return c.value }
func (c *colorFlag) Set(v string) error {
	switch v {
	case "auto", "always", "never":
		c.value = v
		return nil
	}
	return fmt.Errorf("%q: use auto, always or never", v)
}

// enabled decides colour once, at the edge: NO_COLOR wins over auto, and
// auto means a terminal.
func (c *colorFlag) enabled(io IO, out io.Writer) bool {
	switch c.value {
	case "always":
		return true
	case "never":
		return false
	}
	if io.Getenv("NO_COLOR") != "" {
		return false
	}
	f, ok := out.(*os.File)
	return ok && isatty.IsTerminal(f.Fd())
}

func runUp(io IO, c *common, args []string) error {
	child := detachedChildFromEnv(io.Getenv)
	err := up(io, c, args, child)
	if err != nil {
		child.failed(err)
	}
	return err
}

// upFlags are up's options.
type upFlags struct {
	color         *colorFlag
	timestamps    *bool
	port          *int
	noWatch       *bool
	exitOnFailure *bool
	detach        bool
	top           bool
}

func parseUpFlags(c *common, args []string) (*upFlags, []string, error) {
	f := &upFlags{color: &colorFlag{value: "auto"}}
	c.fs.Var(f.color, "color", "colour the output: auto, always or never")
	f.timestamps = c.fs.Bool("timestamps", false, "start each line with the time")
	f.port = c.fs.Int("port", config.DefaultProcfilePortBase, "the first PORT in Procfile mode")
	f.noWatch = c.fs.Bool("no-watch", false, "watch no files, whatever the config's watch settings")
	f.exitOnFailure = c.fs.Bool("exit-on-failure", false, "stop everything at the first failure (a worker's failing exit, a failed or blocked service) and exit with its code")
	c.fs.BoolVar(&f.detach, "d", false, "run in the background: return once every service is ready (exit 0), or exit 1 with why, leaving nothing running")
	c.fs.BoolVar(&f.detach, "detach", false, "the same as -d")
	c.fs.BoolVar(&f.top, "top", false, "run in the background as -d does, with `recluster top` in the foreground; q stops the stack")
	names, err := c.parse(args)
	return f, names, err
}

// up runs the stack in the foreground, or, as the background instance of
// `up -d` (child not nil), with its log stream in a file.
func up(io IO, c *common, args []string, child *detachedChild) error {
	f, names, err := parseUpFlags(c, args)
	if err != nil {
		return err
	}
	cfg, paths, err := loadStack(io, c, *f.port, names)
	if err != nil {
		return err
	}
	if f.top && child == nil {
		return upWithTop(io, c, cfg, paths, args, f.color)
	}
	if f.detach && child == nil {
		return startDetached(io, cfg, paths, args)
	}
	lock, err := takeLock(cfg, paths)
	if err != nil {
		return err
	}
	defer lock.Unlock()
	// Sockets systemd passed (socket activation) serve the addresses they
	// match; every other descriptor recluster inherited must not leak
	// into workers.
	inherited, err := runner.InheritedSockets(io.Getenv, listenPID(io.Getenv))
	if err == nil {
		err = runner.CheckInherited(cfg, inherited)
	}
	if err != nil {
		return err
	}
	closeInheritedFDs()
	reserveThreads(reservedThreads())
	tuneGC(io, cfg)
	io, mux, closeStream, err := openStream(io, cfg, paths, child, f)
	if err != nil {
		return err
	}
	defer closeStream()

	instance := instanceMark(cfg.Path)
	endLeftovers(paths, instance, mux)
	groups, err := osproc.OpenGroupLog(paths.Groups)
	if err != nil {
		return err
	}
	defer groups.Close()

	failures, onEvent, failFast := failureWatch(*f.exitOnFailure, child)
	sup, onEvent, closeSup := superviseBy(io, mux, onEvent)
	defer closeSup()
	opts := config.Options{Getenv: io.Getenv, PortBase: *f.port}
	m, err := runner.New(cfg, runner.Options{
		Starter: osproc.NewStarter(paths.Dir, groups),
		Output:  runner.MuxOutput(mux),
		Load: func() (*config.Config, error) {
			next, err := opts.Load(cfg.Path)
			if err == nil {
				tuneGC(io, next)
			}
			return next, err
		},
		NewRouter: newProxyFleet().newRouter,
		Instance:  instance,
		OnEvent:   onEvent,
		Inherited: inherited,
	})
	if err != nil {
		return err
	}
	ln, err := control.Listen(paths.Socket)
	if err != nil {
		return err
	}
	var metricsLn net.Listener
	if cfg.Metrics != "" {
		if metricsLn, err = net.Listen("tcp", cfg.Metrics); err != nil {
			ln.Close()
			return fmt.Errorf("metrics: %w", err)
		}
	}
	lock.Advertise(paths.Socket)
	sayRunning(io, mux, cfg, inherited)
	if metricsLn != nil {
		mux.System("", fmt.Sprintf("metrics at http://%s/metrics", metricsLn.Addr()))
	}
	r := &upRun{cfg: cfg, paths: paths, m: m, mux: mux, ln: ln, metricsLn: metricsLn, names: names, child: child,
		sup: sup, failures: failures, failFast: failFast, noWatch: *f.noWatch}
	return r.run()
}

// loadStack loads the config up runs, checks the services named, and
// makes its run folder.
func loadStack(io IO, c *common, port int, names []string) (*config.Config, control.Paths, error) {
	// The instance is the file itself, not the name it was given by: a
	// symlink retargeted later must not make this instance read another
	// file, nor let a second `up` run the same one.
	if path, err := c.configPath(io); err == nil {
		if real, err := filepath.EvalSymlinks(path); err == nil {
			c.file = real
		}
	}
	cfg, err := loadConfig(io, c, port)
	if err != nil {
		return nil, control.Paths{}, err
	}
	for _, n := range names {
		if cfg.Service(n) == nil {
			return nil, control.Paths{}, fmt.Errorf("%w %q; %s has: %s", runner.ErrUnknownService, n, cfg.Path, strings.Join(cfg.Names(), ", "))
		}
	}
	paths, err := control.PathsFor(cfg.Path, io.Getenv)
	if err != nil {
		return nil, control.Paths{}, err
	}
	return cfg, paths, paths.Ensure()
}

// openStream makes up's one stream of lines: to the terminal, or, for
// the background instance, to its log file (io's output is then the
// file). The caller calls the returned close once up is done.
func openStream(io IO, cfg *config.Config, paths control.Paths, child *detachedChild, f *upFlags) (IO, *logmux.Mux, func(), error) {
	var logFile *logfile.File
	if child != nil {
		lf, err := openBackgroundLog(cfg, paths)
		if err != nil {
			return io, nil, nil, err
		}
		io.Out, io.Err = lf, lf
		f.color.value, *f.timestamps = "never", true
		logFile = lf
	}
	mux := newStream(io, cfg, f.color.enabled(io, io.Out), *f.timestamps)
	if logFile != nil {
		// A file that drops lines (a full disk) says so in the stream,
		// which `recluster logs` still reads.
		logFile.OnTrouble(func(msg string) { mux.System("", msg) })
	}
	// A closed stdout must not kill recluster with SIGPIPE: the workers and
	// the log ring go on, and `recluster logs` still reads them.
	signal.Ignore(syscall.SIGPIPE)
	return io, mux, func() {
		closeOutput(io, mux)
		if logFile != nil {
			logFile.Close()
		}
	}, nil
}

// superviseBy tells a supervisor under systemd (Type=notify) what the
// stack does, beside what onEvent does already. A NOTIFY_SOCKET that
// cannot be reached is said and otherwise ignored, as sd_notify(3) does.
func superviseBy(io IO, mux *logmux.Mux, onEvent func(runner.Event)) (*supervisor, func(runner.Event), func()) {
	n, err := sdnotify.FromEnv(io.Getenv, os.Getpid())
	if err != nil {
		mux.System("", fmt.Sprintf("not telling a supervisor: %v", err))
	}
	if n == nil {
		return nil, onEvent, func() {}
	}
	sup := newSupervisor(n, mux)
	if failing := onEvent; failing != nil {
		onEvent = func(e runner.Event) { failing(e); sup.onEvent(e) }
	} else {
		onEvent = sup.onEvent
	}
	return sup, onEvent, func() { n.Close() }
}

// sayRunning is up's first line, and the sockets it was given.
func sayRunning(io IO, mux *logmux.Mux, cfg *config.Config, inherited []runner.InheritedSocket) {
	rel, _ := filepath.Rel(mustGetwd(io), cfg.Path)
	if rel == "" || strings.HasPrefix(rel, "..") {
		rel = cfg.Path
	}
	mux.System("", fmt.Sprintf("recluster %s (pid %d) running %s", version(), os.Getpid(), rel))
	for _, s := range inherited {
		mux.System("", fmt.Sprintf("given a listening socket (socket activation): %s; it serves what it matches, instead of a socket of recluster's own", s))
	}
}

// upRun is what up's actors share.
type upRun struct {
	cfg   *config.Config
	paths control.Paths
	m     *runner.Manager
	mux   *logmux.Mux
	ln    net.Listener
	// metricsLn, when the file asks for metrics, is where they are served.
	metricsLn net.Listener
	names     []string
	child     *detachedChild
	sup       *supervisor
	failures  chan runner.Event
	failFast  string
	noWatch   bool

	// Set by run, for the actors.
	runCtx       context.Context    // the services' context
	stopServices context.CancelFunc // stops every service
	stopped      chan struct{}      // closed when every worker is gone
	reloads      chan struct{}      // SIGUSR2's reload requests
	watching     chan struct{}      // closed once saves are seen
}

// run runs up's actors until the manager ends. Every goroutine of `up`
// is an actor of this group, each made by a function below: the
// manager, the control server with its socket watcher, the signal
// handler, the SIGUSR2 reloader, the watcher, the end watch, the
// supervisor and the ready printer. The manager ends first (on a signal
// or `down`), and its end interrupts the rest.
func (r *upRun) run() error {
	r.runCtx, r.stopServices = context.WithCancel(context.Background())
	defer r.stopServices()
	r.stopped = make(chan struct{})
	r.reloads = make(chan struct{}, 1)
	r.watching = make(chan struct{})
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR2)
	defer signal.Stop(sigs)

	var g group
	g.add(r.services())
	g.add(r.controlServer())
	g.add(untilInterrupted(func(ctx context.Context) error {
		handleSignals(ctx, sigs, r.reloads, r.mux, r.stopServices, r.m.Kill)
		return nil
	}))
	g.add(untilInterrupted(func(ctx context.Context) error {
		reloadOnRequest(ctx, r.reloads, controller{r.m}, r.mux)
		return nil
	}))
	if r.noWatch {
		close(r.watching)
	} else {
		g.add(r.fileWatch())
	}
	watched := !r.noWatch && len(watchList(r.cfg)) > 0
	g.add(untilInterrupted(func(ctx context.Context) error {
		return endWhenDone(ctx, r.m, r.failures, r.mux, r.failFast, watched)
	}))
	if r.sup != nil {
		g.add(r.supervise())
	}
	if r.metricsLn != nil {
		g.add(r.serveMetrics())
	}
	g.add(untilInterrupted(func(ctx context.Context) error {
		announceReady(ctx, r.m, r.watching, r.mux, r.child, r.cfg)
		return nil
	}))
	return g.run()
}

// services runs the stack until stopServices; its end ends `up`.
func (r *upRun) services() actor {
	return actor{func() error {
		defer close(r.stopped)
		err := r.m.Run(r.runCtx, r.names)
		r.mux.System("", "every service stopped")
		return err
	}, func(error) { r.stopServices() }}
}

// controlServer serves the control socket; `down` stops the services
// and answers once every worker is gone.
func (r *upRun) controlServer() actor {
	down := func(ctx context.Context) error {
		r.mux.System("", "down requested; stopping every service")
		r.stopServices()
		select {
		case <-r.stopped:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	srv := control.NewServer(controller{r.m}, r.mux, control.Info{Pid: os.Getpid(), Config: r.cfg.Path, Version: version()}, down)
	return untilInterrupted(func(ctx context.Context) error {
		return serveControl(ctx, srv, r.ln, r.paths.Socket, r.mux)
	})
}

// serveMetrics serves Prometheus' text format at the file's metrics
// address until `up` ends.
func (r *upRun) serveMetrics() actor {
	srv := metrics.Server(metrics.Handler(r.m.Status))
	return actor{func() error {
		if err := srv.Serve(netlimit.New(r.metricsLn, metrics.MaxConns, nil)); err != http.ErrServerClosed {
			r.mux.System("", fmt.Sprintf("metrics: %v; no more metrics are served", err))
		}
		<-r.stopped // a failed endpoint does not end the stack
		return nil
	}, func(error) { srv.Close() }}
}

// fileWatch reloads watched services on save.
func (r *upRun) fileWatch() actor {
	return untilInterrupted(func(ctx context.Context) error {
		watchFiles(ctx, r.cfg, r.m, r.mux, r.watching, ownFiles(r.child, r.cfg, r.paths))
		<-ctx.Done()
		return nil
	})
}

// supervise tells systemd (Type=notify) what the stack does until the
// services stop.
func (r *upRun) supervise() actor {
	r.sup.m = r.m
	return untilInterrupted(func(ctx context.Context) error {
		r.sup.run(ctx, r.runCtx.Done())
		return nil
	})
}

// takeLock makes this the one instance of the file, or says which is.
func takeLock(cfg *config.Config, paths control.Paths) (*control.InstanceLock, error) {
	lock, err := paths.TakeLock()
	var re *control.RunningError
	if errors.As(err, &re) {
		return nil, fmt.Errorf("%s: %w; use `recluster reload`, `recluster status` or `recluster down`", cfg.Path, re)
	}
	return lock, err
}

// closeOutput writes what is left of the log stream, giving up after a
// few seconds when nothing reads it, and then says what was lost on
// stderr, without waiting on stderr either.
func closeOutput(io IO, mux *logmux.Mux) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	err := mux.Close(ctx)
	if err == nil {
		return
	}
	said := make(chan struct{})
	// Owned by closeOutput for up to a second; a stderr that blocks too
	// leaves it behind, to end with the process.
	go func() {
		fmt.Fprintf(io.Err, "recluster: %v\n", err)
		close(said)
	}()
	select {
	case <-said:
	case <-time.After(time.Second):
	}
}

func mustGetwd(io IO) string {
	wd, _ := io.Getwd()
	return wd
}

func signalName(sig os.Signal) string {
	if s, ok := sig.(syscall.Signal); ok {
		switch s {
		case syscall.SIGINT:
			return "SIGINT"
		case syscall.SIGTERM:
			return "SIGTERM"
		case syscall.SIGHUP:
			return "SIGHUP"
		}
	}
	return sig.String()
}

// instanceMark identifies the instance of one config file in its
// workers' environments: its resolved path's digest.
func instanceMark(path string) string {
	sum := sha256.Sum256([]byte(path))
	return hex.EncodeToString(sum[:12])
}

// endLeftovers ends what a recluster that did not stop cleanly left of
// this config's workers: the groups its log names, then what escaped the
// log (a worker forked just before recluster was killed, a process that
// left its group) but still carries the instance's mark.
func endLeftovers(paths control.Paths, instance string, mux *logmux.Mux) {
	if ended, err := osproc.EndLeftoverGroups(paths.Groups); err != nil {
		mux.System("", fmt.Sprintf("reading %s: %v", paths.Groups, err))
	} else if len(ended) > 0 {
		mux.System("", fmt.Sprintf("ended %d process group(s) left by a recluster that did not stop cleanly", len(ended)))
	}
	if ended := osproc.EndMarkedLeftovers(instance); len(ended) > 0 {
		mux.System("", fmt.Sprintf("ended %d process(es) that a recluster that did not stop cleanly left outside its process groups: %v", len(ended), ended))
	}
}

// newStream is the log stream of `up`, padded for its services' widest
// prefix.
func newStream(io IO, cfg *config.Config, color, timestamps bool) *logmux.Mux {
	maxWorkers := 1
	for _, s := range cfg.Services {
		maxWorkers = max(maxWorkers, s.Workers)
	}
	return logmux.New(io.Out, logmux.Options{Color: color, Timestamps: timestamps, Services: cfg.Names(), MaxWorkers: maxWorkers})
}

// ownFiles are the files `up` writes its stream to, which no save is:
// its redirected output, and the log of `up -d`'s background instance.
func ownFiles(child *detachedChild, cfg *config.Config, paths control.Paths) []string {
	own := ownOutputFiles()
	if child != nil {
		own = append(own, logPath(cfg, paths))
	}
	return own
}
