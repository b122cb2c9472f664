// Package config reads a recluster file (YAML or Procfile), fills in the
// defaults README.md documents and validates it. It produces plain, immutable data:
// the runner never looks at YAML, and nothing here knows about processes.
package config

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// Defaults that users see, as README.md's table of keys gives them.
const (
	DefaultRespawn           = time.Second
	DefaultBackoff           = 30 * time.Second
	DefaultStartLimit        = 5
	DefaultMinUptime         = 5 * time.Second
	DefaultMinReady          = 2 * time.Second
	DefaultTimeout           = time.Second
	DefaultProductionTimeout = time.Hour
	DefaultReadyTimeout      = 60 * time.Second
	DefaultDrainTimeout      = 30 * time.Second
	DefaultBuildTimeout      = 10 * time.Minute
	DefaultWatchDebounce     = 50 * time.Millisecond
	DefaultStopSignal        = syscall.SIGTERM
	DefaultProcfilePortBase  = 5000
)

// ReadyWhen says when a worker counts as ready.
type ReadyWhen string

const (
	ReadyStarted   ReadyWhen = "started"
	ReadyListening ReadyWhen = "listening"
	ReadyNotified  ReadyWhen = "ready"
)

// Restart policies: when a worker that exited by itself is started again.
const (
	RestartAlways    = "always"     // whatever its exit
	RestartOnFailure = "on-failure" // after a non-zero exit or a signal; exit 0 is done
	RestartNever     = "never"      // a task: it runs once
)

// After conditions: what a service waits for of a dependency.
const (
	AfterReady     = "ready"     // every worker ready
	AfterStarted   = "started"   // its workers started
	AfterCompleted = "completed" // every worker exited 0 for good (a task)
)

// Config is one validated recluster file.
type Config struct {
	// Path is the absolute path of the file that was read.
	Path string
	// Dir is the folder relative paths in the file are resolved against.
	Dir string
	// Procfile is true when Path is a Procfile rather than YAML.
	Procfile bool
	// Services in the order the file declares them.
	Services []*Service
	// LogFile is where `up -d` writes its log stream; "" is up.log in
	// the run folder. LogSize is how big it grows before it is rotated.
	LogFile string
	LogSize int64
	// Metrics, when set, is where `up` serves Prometheus' text format
	// (host:port; ":9090" is every interface).
	Metrics string
}

// Service returns the named service, or nil.
func (c *Config) Service(name string) *Service {
	for _, s := range c.Services {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Names returns the service names in file order.
func (c *Config) Names() []string {
	names := make([]string, len(c.Services))
	for i, s := range c.Services {
		names[i] = s.Name
	}
	return names
}

// Service is one cluster of identical workers, with every default applied.
type Service struct {
	Name    string
	Command Command
	// Dir is absolute.
	Dir string
	// Env is what the file adds to recluster's own environment, in order of
	// precedence (a later entry wins): top-level env, env files, the
	// service's env. Names are unique.
	Env     []EnvVar
	Workers int
	Listen  []Listen
	// Proxy, when set, is the public address recluster serves for the
	// service, sending connections or requests on to workers that each
	// listen on a port of their own ($PORT).
	Proxy     *Proxy
	ReadyWhen ReadyWhen
	// ReadyProbe, with ReadyWhen ReadyProbe, is the probe a new worker
	// must pass to be ready.
	ReadyProbe *Probe
	// Health, when set, keeps probing ready workers; one that fails it
	// Failures times in a row is replaced, its replacement started first.
	Health *Probe
	// MaxMemory, when not 0, bounds a worker's memory (its process
	// group's resident set, in bytes): over it, the worker is replaced
	// as a sick one is.
	MaxMemory    int64
	ReadyTimeout time.Duration
	Timeout      time.Duration
	// DrainTimeout, for a proxied service, is how long an old worker may
	// keep work in flight before it gets its stop signal anyway.
	DrainTimeout time.Duration
	Respawn      time.Duration
	Backoff      time.Duration
	StopSignal   syscall.Signal
	// After names the services this one starts after, in file order;
	// AfterWhen gives each one's condition (AfterReady, AfterStarted or
	// AfterCompleted).
	After     []string
	AfterWhen map[string]string
	// Restart is RestartAlways, RestartOnFailure or RestartNever.
	Restart string
	// StartLimit is how many times in a row a worker may exit before it
	// was ready, or sooner than MinUptime after its start, before the
	// service is failed; 0 never fails it.
	StartLimit int
	MinUptime  time.Duration
	// MinReady is how long a new worker must stay ready, without
	// exiting, before a reload counts it ready (Kubernetes'
	// minReadySeconds).
	MinReady time.Duration
	// MaxSurge is how many new workers a reload runs beyond Workers at
	// once, replacing the old ones as many at a time; 0 is all of them.
	MaxSurge int
	Log      LogOptions
	// Build, when set, runs once per generation before its workers start,
	// in Dir with the service's environment, for at most BuildTimeout.
	Build        *Command
	BuildTimeout time.Duration
	// Watch, when set, reloads (or restarts) the service when files it
	// names change.
	Watch *Watch
	// fromFiles names the variables of Env that an env file set: Print
	// shows where they come from, never their values (secrets live
	// there).
	fromFiles map[string]bool
}

// Watch says which files a service's reload follows.
type Watch struct {
	// Paths are globs relative to the service's Dir ("**" is any depth);
	// a folder stands for everything below it.
	Paths []string
	// Ignore are globs of files that do not count, beside the defaults
	// (.git, node_modules, editor swap and backup files) and what the
	// nearest .gitignore files ignore.
	Ignore   []string
	Debounce time.Duration
	// Action is WatchReload (zero downtime) or WatchRestart (for services
	// that cannot run two generations side by side).
	Action string
}

const (
	WatchReload  = "reload"
	WatchRestart = "restart"
)

// LogOptions are the service's `log` settings.
type LogOptions struct {
	Respawns bool
}

// EnvVar is one NAME=value pair.
type EnvVar struct {
	Name, Value string
}

// Options change how a file is read; the zero value reads the real
// environment and machine.
type Options struct {
	// Getenv reads recluster's own environment (production defaults, $VAR in
	// commands is expanded later, at spawn time). Default os.Getenv.
	Getenv func(string) string
	// NumCPU is the default worker count. Default runtime.NumCPU.
	NumCPU int
	// PortBase is the first PORT in Procfile mode. Default 5000.
	PortBase int

	// Hooks for tests, here rather than in globals: Load runs
	// concurrently (a save, SIGUSR2 and the API at once), and a global
	// counter written from it was a data race. onLoad runs inside Load;
	// onSyntaxProbe for each parse that locates a syntax error.
	onLoad        func()
	onSyntaxProbe func()
}

func (o Options) withDefaults() Options {
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if o.NumCPU <= 0 {
		o.NumCPU = runtime.NumCPU()
	}
	if o.PortBase <= 0 {
		o.PortBase = DefaultProcfilePortBase
	}
	return o
}

// defaultTimeout is 1h in production, where cutting a request short costs
// more than a slow stop, and 1s elsewhere.
func (o Options) defaultTimeout() time.Duration {
	for _, name := range []string{"RECLUSTER_ENV", "NODE_ENV"} {
		if strings.EqualFold(o.Getenv(name), "production") {
			return DefaultProductionTimeout
		}
	}
	return DefaultTimeout
}

// Load reads, defaults and validates the file at path with the real
// environment. A Procfile is recognised by its base name.
func Load(path string) (*Config, error) {
	return Options{}.Load(path)
}

// Load reads, defaults and validates the file at path. Every problem is
// returned at once, as a *multierror.Error of *FieldError. It never
// panics: a running `up` re-reads its file on every reload, and a fault
// here must cost that reload, never the stack.
func (o Options) Load(path string) (cfg *Config, err error) {
	defer func() {
		if r := recover(); r != nil {
			cfg = nil
			err = errorList{{File: path, Line: 1, Col: 1, Msg: fmt.Sprintf(
				"recluster failed while reading this file (%v); nothing was changed; please report it with the file", r)}}.err()
		}
	}()
	if o.onLoad != nil {
		o.onLoad()
	}
	o = o.withDefaults()
	data, err := readRegular(path, MaxConfigBytes, "-f")
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	if IsProcfile(path) {
		return o.parseProcfile(path, data)
	}
	return o.parseYAML(path, data)
}

// parseYAML runs the stages of loading a YAML file in order: parse
// (parse.go), decode (decode.go), defaults (defaults.go), validate
// (validate.go) and what the file names on disk (files.go).
func (o Options) parseYAML(path string, data []byte) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	d := &decoder{file: path, dir: filepath.Dir(abs), opts: o}
	doc, ok := d.parseDocument(data)
	if !ok {
		return nil, d.errs.err()
	}
	top, sources := d.decodeFile(doc)
	if top == nil {
		return nil, d.errs.err()
	}
	for _, src := range sources {
		if _, given := src.set["workers"]; !given && src.svc.Restart != RestartAlways {
			// A task runs once, not once per CPU: a migration must not
			// run twice side by side.
			src.svc.Workers = 1
		}
		derive(src.svc)
	}
	d.crossCheck(sources)
	for _, src := range sources {
		d.checkProbes(src)
	}
	d.checkFiles(top, sources)
	for _, src := range sources {
		if err := src.svc.Command.requiredUnset(workerLookup(src.svc, o.Getenv)); err != nil {
			d.errorf(src.set["command"], "services."+src.svc.Name+".command", "%v; set it in recluster's environment, the service's env or an env file", err)
		}
	}
	if err := d.errs.err(); err != nil {
		return nil, err
	}
	cfg := &Config{Path: abs, Dir: d.dir, LogFile: top.logFile, LogSize: cmp.Or(top.logSize, DefaultLogSize)}
	if d.metrics != nil {
		cfg.Metrics = d.metrics.Address
	}
	for _, src := range sources {
		cfg.Services = append(cfg.Services, src.svc)
	}
	return cfg, nil
}
