package runner

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"time"

	"github.com/recluster/recluster/config"
	"github.com/recluster/recluster/internal/osproc"
)

// serviceSpec is one service as a cluster runs it: the config's settings
// plus the environment resolved for it. A spec is immutable once a cluster
// has it; a reload brings a new one.
type serviceSpec struct {
	Name    string
	Command config.Command
	Dir     string
	Env     []string // complete worker environment but the per-worker variables
	Workers int
	// FileWorkers is the config's own count. Workers differs from it
	// once a live scale has been carried across a reload (keepScale).
	FileWorkers  int
	Listen       []config.Listen
	Proxy        *config.Proxy
	ReadyWhen    config.ReadyWhen
	ReadyProbe   *config.Probe
	Health       *config.Probe
	MaxMemory    int64
	ReadyTimeout time.Duration
	StopTimeout  time.Duration
	DrainTimeout time.Duration
	StopSignal   syscall.Signal
	Respawn      time.Duration
	Backoff      time.Duration
	LogRespawns  bool
	After        []string
	AfterWhen    map[string]string
	Restart      string
	StartLimit   int
	MinUptime    time.Duration
	MinReady     time.Duration
	MaxSurge     int
	Build        *config.Command
	BuildTimeout time.Duration
}

// specFromConfig turns a config service into a spec, with base as
// recluster's own environment (os.Environ()).
func specFromConfig(s *config.Service, base []string) *serviceSpec {
	env := mergeEnviron(base, s.Env)
	restart := s.Restart
	if restart == "" {
		restart = config.RestartAlways
	}
	return &serviceSpec{
		Name:         s.Name,
		Command:      s.Command,
		Dir:          s.Dir,
		Env:          env,
		Workers:      s.Workers,
		FileWorkers:  s.Workers,
		Listen:       s.Listen,
		Proxy:        s.Proxy,
		ReadyWhen:    s.ReadyWhen,
		ReadyProbe:   s.ReadyProbe,
		Health:       s.Health,
		MaxMemory:    s.MaxMemory,
		ReadyTimeout: s.ReadyTimeout,
		StopTimeout:  s.Timeout,
		DrainTimeout: s.DrainTimeout,
		StopSignal:   s.StopSignal,
		Respawn:      s.Respawn,
		Backoff:      s.Backoff,
		LogRespawns:  s.Log.Respawns,
		After:        s.After,
		AfterWhen:    s.AfterWhen,
		Restart:      restart,
		StartLimit:   s.StartLimit,
		MinUptime:    s.MinUptime,
		MinReady:     s.MinReady,
		MaxSurge:     s.MaxSurge,
		Build:        s.Build,
		BuildTimeout: s.BuildTimeout,
	}
}

// mergeEnviron overlays vars on base, dropping variables recluster sets per
// worker or that belong to recluster's own socket activation, so a worker
// never inherits another's.
func mergeEnviron(base []string, vars []config.EnvVar) []string {
	skip := map[string]bool{"LISTEN_FDS": true, "LISTEN_PID": true, "LISTEN_FDNAMES": true, "NOTIFY_SOCKET": true, osproc.InstanceEnv: true,
		"WATCHDOG_USEC": true, "WATCHDOG_PID": true,
		"RECLUSTER_READY_FD": true, "WORKER_ID": true, "RECLUSTER_SERVICE": true, "RECLUSTER_GENERATION": true}
	for _, v := range vars {
		skip[v.Name] = true
	}
	out := make([]string, 0, len(base)+len(vars))
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if !skip[k] {
			out = append(out, kv)
		}
	}
	for _, v := range vars {
		out = append(out, v.Name+"="+v.Value)
	}
	return out
}

// Output receives workers' output and recluster's own lines. logmux.Mux
// implements it.
type Output interface {
	// Open returns the worker's stdout and stderr streams; the runner
	// closes both when the worker's output has ended.
	Open(w WorkerRef) (stdout, stderr io.WriteCloser)
	// Retire marks the worker's later lines as those of a retiring
	// generation.
	Retire(w WorkerRef)
	// System prints one of recluster's own lines about service.
	System(service, line string)
	// Tail returns up to n of the worker's last lines.
	Tail(w WorkerRef, n int) []string
}

// discardOutput is the Output of a runner given none.
type discardOutput struct{}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

func (discardOutput) Open(WorkerRef) (io.WriteCloser, io.WriteCloser) {
	return nopCloser{io.Discard}, nopCloser{io.Discard}
}
func (discardOutput) Retire(WorkerRef)             {}
func (discardOutput) System(string, string)        {}
func (discardOutput) Tail(WorkerRef, int) []string { return nil }

// Errors callers branch on.
var (
	ErrUnknownService = errors.New("unknown service")
	ErrSuperseded     = errors.New("superseded by a newer reload")
	ErrStopped        = errors.New("the service was stopped")
	ErrShuttingDown   = errors.New("recluster is shutting down")
)

// WorkerFailedError says why a worker that was to become ready did not.
type WorkerFailedError struct {
	Worker WorkerRef
	Pid    int
	// Exit is set when the worker exited before it was ready.
	Exit *ExitStatus
	// Timeout is set when it was not ready within ReadyTimeout; Probe,
	// then, is what its readiness probe last said, if it has one.
	Timeout time.Duration
	Probe   string
	// MinReady is set when it exited after it said it was ready, but
	// within minReady of that.
	MinReady time.Duration
	// Tail is the worker's last lines of output.
	Tail []string
}

func (e *WorkerFailedError) Error() string {
	var b strings.Builder
	switch {
	case e.Exit != nil && e.Exit.Err != nil:
		fmt.Fprintf(&b, "%s (generation %d) could not start: %v", e.Worker, e.Worker.Generation, e.Exit.Err)
	case e.Exit != nil && e.MinReady > 0:
		fmt.Fprintf(&b, "%s (generation %d, pid %d) exited within minReady (%s) of being ready: %s", e.Worker, e.Worker.Generation, e.Pid, e.MinReady, e.Exit)
	case e.Exit != nil:
		fmt.Fprintf(&b, "%s (generation %d, pid %d) exited before it was ready: %s", e.Worker, e.Worker.Generation, e.Pid, e.Exit)
	default:
		fmt.Fprintf(&b, "%s (generation %d, pid %d) was not ready within %s", e.Worker, e.Worker.Generation, e.Pid, e.Timeout)
		if e.Probe != "" {
			fmt.Fprintf(&b, "; its readiness probe last said: %s", e.Probe)
		}
	}
	if len(e.Tail) > 0 {
		fmt.Fprintf(&b, "; its last lines:")
		for _, l := range e.Tail {
			b.WriteString("\n    " + l)
		}
	}
	return b.String()
}

// sockets lists every address the spec's generation holds: its listen
// sockets, then its proxy's public address.
func (s *serviceSpec) sockets() []config.Listen {
	if s.Proxy == nil {
		return s.Listen
	}
	return append(append([]config.Listen(nil), s.Listen...), s.Proxy.Address)
}

// withoutVar returns env without the entries of name.
func withoutVar(env []string, name string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k != name {
			out = append(out, kv)
		}
	}
	return out
}
