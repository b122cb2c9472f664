package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-multierror"
	"github.com/recluster/recluster/config"
	"github.com/recluster/recluster/internal/osproc"
	"github.com/recluster/recluster/internal/proc"
)

// Options configure a Manager. The zero value runs real processes with
// output discarded and never re-reads the config file.
type Options struct {
	// Starter starts workers. Default: real processes (internal/osproc),
	// with notify sockets in a fresh temporary folder.
	Starter Starter
	// Output receives workers' output and recluster's own lines.
	Output Output
	// OnEvent, when set, is told of every change. It is called from the
	// clusters' loops: it must not block for long.
	OnEvent func(Event)
	// Environ is recluster's own environment, the base of every worker's.
	// Default os.Environ().
	Environ []string
	// Load re-reads the config file for a reload. Default: the config
	// given to New, unchanged.
	Load func() (*config.Config, error)
	// NewRouter makes the proxy of a service that has one. Default:
	// recluster's own (internal/proxy) with the service's settings.
	NewRouter func(RouterSpec) (Router, error)
	// Inherited are listening sockets recluster was given (socket
	// activation, InheritedSockets): each serves the listen or proxy
	// address it matches, instead of a socket of recluster's own.
	Inherited []InheritedSocket
	// Instance, when set, marks every worker's environment
	// (RECLUSTER_INSTANCE=Instance), so that the next run for the same
	// config can end what outlived a crash of this one (`recluster up`
	// does).
	Instance string
}

// Manager runs every service of one config file, each as a cluster. Its
// methods are safe to call from any goroutine while Run runs.
type Manager struct {
	opts    Options
	sockets sockets
	ownRun  string // the temporary folder of a default starter

	mu       sync.Mutex // guards the fields below; never held while waiting
	cfg      *config.Config
	clusters map[string]*cluster
	ends     map[*cluster]context.CancelFunc // each cluster's run ends when called
	runCtx   context.Context
	ready    chan struct{} // closed once every service Run started is ready
	stopping bool
	// pending, members, states and settled: starting in `after` order,
	// and knowing when everything has ended (depends.go).
	pending     map[*cluster]*pendingStart
	members     map[*cluster]bool
	states      map[*cluster]serviceState
	settled     chan struct{}
	settledDone bool
	wg          sync.WaitGroup // every cluster's run
	// usage is the last look at the workers' memory and CPU, at usageAt (fillRSS).
	usageMu sync.Mutex
	usage   map[int]proc.Usage
	usageAt time.Time
	bg      sync.WaitGroup // the starts and blocks of depends.go
}

// New returns a Manager for cfg. Call Run to start it.
func New(cfg *config.Config, opts Options) (*Manager, error) {
	m := &Manager{cfg: cfg, clusters: map[string]*cluster{}, ends: map[*cluster]context.CancelFunc{}, ready: make(chan struct{}),
		pending: map[*cluster]*pendingStart{}, members: map[*cluster]bool{}, states: map[*cluster]serviceState{}, settled: make(chan struct{})}
	m.sockets.inherited = opts.Inherited
	if opts.Output == nil {
		opts.Output = discardOutput{}
	}
	if opts.Environ == nil {
		opts.Environ = os.Environ()
	}
	if opts.Load == nil {
		opts.Load = func() (*config.Config, error) { return cfg, nil }
	}
	if opts.NewRouter == nil {
		opts.NewRouter = newProxy
	}
	if opts.Starter == nil {
		dir, err := os.MkdirTemp("", "recluster-")
		if err != nil {
			return nil, err
		}
		m.ownRun = dir
		opts.Starter = osproc.NewStarter(dir, nil)
	}
	m.opts = opts
	for _, s := range cfg.Services {
		m.clusters[s.Name] = m.newCluster(m.spec(s))
	}
	return m, nil
}

func (m *Manager) spec(s *config.Service) *serviceSpec {
	spec := specFromConfig(s, m.opts.Environ)
	if m.opts.Instance != "" {
		spec.Env = append(spec.Env, osproc.InstanceEnv+"="+m.opts.Instance)
	}
	return spec
}

// Run starts the named services (all when names is empty) and what they
// need, each once its `after` conditions are met (depends.go). When ctx
// is done it stops every service gracefully, a service only after those
// that start after it, and returns once every worker is gone. A Manager
// runs once.
func (m *Manager) Run(ctx context.Context, names []string) error {
	m.mu.Lock()
	selected, err := closure(m.cfg, names)
	if err != nil {
		m.mu.Unlock()
		return err
	}
	if m.runCtx != nil {
		m.mu.Unlock()
		return errors.New("a Manager runs once")
	}
	m.runCtx = ctx
	for _, c := range m.clusters {
		m.runCluster(c)
	}
	var firstReady []chan struct{}
	for _, name := range selected {
		c := m.clusters[name]
		m.wait(c, c.spec, nil)
		firstReady = append(firstReady, c.firstReady)
	}
	acts := m.decide()
	m.bg.Add(1)
	go func() {
		defer m.bg.Done()
		for _, ch := range firstReady {
			select {
			case <-ch:
			case <-ctx.Done():
				return
			}
		}
		close(m.ready)
	}()
	m.mu.Unlock()
	m.act(acts)

	<-ctx.Done()
	m.mu.Lock()
	m.stopping = true // no cluster is added from here on
	m.mu.Unlock()
	m.bg.Wait()
	m.stopInOrder()
	m.mu.Lock()
	for _, end := range m.ends {
		end()
	}
	m.mu.Unlock()
	m.wg.Wait()
	m.sockets.closeAll()
	if s, ok := m.opts.Starter.(*osproc.Starter); ok {
		s.Close()
	}
	if m.ownRun != "" {
		os.RemoveAll(m.ownRun)
	}
	return nil
}

// runCluster runs c's loop until Run's end, or until c's service is
// removed; the caller holds mu.
func (m *Manager) runCluster(c *cluster) {
	ctx, end := context.WithCancel(context.Background())
	m.ends[c] = end
	m.wg.Add(1)
	// Owned by the Manager; ends when end is called (Run's end, or the
	// service's removal) and the cluster's workers are gone.
	go func() {
		defer m.wg.Done()
		c.run(ctx)
	}()
}

// endCluster stops a cluster whose service left the config file and waits
// for its run to return, which releases its sockets.
func (m *Manager) endCluster(ctx context.Context, c *cluster) error {
	err := c.Stop(ctx)
	m.mu.Lock()
	end := m.ends[c]
	delete(m.ends, c)
	m.mu.Unlock()
	if end != nil {
		end()
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	m.opts.Output.System(c.name, "removed from the config file; stopped")
	return err
}

// closure returns names plus everything they need through `after`, in
// file order.
func closure(cfg *config.Config, names []string) ([]string, error) {
	if len(names) == 0 {
		return cfg.Names(), nil
	}
	want := map[string]bool{}
	var visit func(string) error
	visit = func(n string) error {
		s := cfg.Service(n)
		if s == nil {
			return unknownService(cfg, n)
		}
		if want[n] {
			return nil
		}
		want[n] = true
		for _, d := range s.After {
			if err := visit(d); err != nil {
				return err
			}
		}
		return nil
	}
	for _, n := range names {
		if err := visit(n); err != nil {
			return nil, err
		}
	}
	var out []string
	for _, n := range cfg.Names() {
		if want[n] {
			out = append(out, n)
		}
	}
	return out, nil
}

func unknownService(cfg *config.Config, name string) error {
	return fmt.Errorf("%w %q; %s has: %s", ErrUnknownService, name, cfg.Path, strings.Join(cfg.Names(), ", "))
}

// stopInOrder stops every service, each once the services that start after
// it have stopped.
func (m *Manager) stopInOrder() {
	m.mu.Lock()
	stopped := map[string]chan struct{}{}
	dependents := map[string][]string{}
	for name := range m.clusters {
		stopped[name] = make(chan struct{})
	}
	for _, s := range m.cfg.Services {
		for _, d := range s.After {
			dependents[d] = append(dependents[d], s.Name)
		}
	}
	var wg sync.WaitGroup
	for name, c := range m.clusters {
		var waitFor []chan struct{}
		for _, d := range dependents[name] {
			if ch, ok := stopped[d]; ok {
				waitFor = append(waitFor, ch)
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(stopped[name])
			for _, ch := range waitFor {
				<-ch
			}
			c.Stop(context.Background())
		}()
	}
	m.mu.Unlock()
	wg.Wait()
}

// Ready is closed once every service that Run started has been ready.
func (m *Manager) Ready() <-chan struct{} { return m.ready }

// Kill sends SIGKILL to every worker of every service at once.
func (m *Manager) Kill() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.clusters {
		go c.Kill()
	}
}

// lookup returns the named clusters, all in file order when names is empty.
func (m *Manager) lookup(names []string) ([]*cluster, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(names) == 0 {
		names = m.cfg.Names()
	}
	var out []*cluster
	for _, n := range names {
		c := m.clusters[n]
		if c == nil {
			return nil, unknownService(m.cfg, n)
		}
		out = append(out, c)
	}
	return out, nil
}

// each runs f on every cluster at once and joins the errors, each naming
// its service.
func each(cs []*cluster, f func(*cluster) error) error {
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(c); err != nil {
				errs[i] = &ServiceError{Service: c.name, Err: err}
			}
		}()
	}
	wg.Wait()
	var merr *multierror.Error
	for _, e := range errs {
		if e != nil {
			merr = multierror.Append(merr, e)
		}
	}
	if merr != nil {
		merr.ErrorFormat = func(es []error) string {
			lines := make([]string, len(es))
			for i, e := range es {
				lines[i] = e.Error()
			}
			return strings.Join(lines, "\n")
		}
	}
	return merr.ErrorOrNil()
}

// ServiceError is one service's part of a failed operation.
type ServiceError struct {
	Service string
	Err     error
}

func (e *ServiceError) Error() string { return e.Service + ": " + e.Err.Error() }
func (e *ServiceError) Unwrap() error { return e.Err }

// Start starts stopped services and returns when every worker is ready.
func (m *Manager) Start(ctx context.Context, names []string) error {
	cs, err := m.lookup(names)
	if err != nil {
		return err
	}
	m.unpend(cs)
	return each(cs, func(c *cluster) error { return c.Start(ctx) })
}

// Stop stops services and returns when every worker is gone.
func (m *Manager) Stop(ctx context.Context, names []string) error {
	cs, err := m.lookup(names)
	if err != nil {
		return err
	}
	m.unpend(cs)
	return each(cs, func(c *cluster) error { return c.Stop(ctx) })
}

// Restart stops, then starts services: not zero-downtime.
func (m *Manager) Restart(ctx context.Context, names []string) error {
	cs, err := m.lookup(names)
	if err != nil {
		return err
	}
	return each(cs, func(c *cluster) error { return c.Restart(ctx, nil) })
}

// Scale sets worker counts live.
func (m *Manager) Scale(ctx context.Context, counts map[string]int) error {
	names := make([]string, 0, len(counts))
	for n := range counts {
		names = append(names, n)
	}
	sort.Strings(names)
	cs, err := m.lookup(names)
	if err != nil {
		return err
	}
	return each(cs, func(c *cluster) error { return c.Scale(ctx, counts[c.name]) })
}

// Status returns every service's snapshot, in file order.
func (m *Manager) Status(ctx context.Context) ([]ServiceStatus, error) {
	cs, err := m.lookup(nil)
	if err != nil {
		return nil, err
	}
	out := make([]ServiceStatus, 0, len(cs))
	for _, c := range cs {
		st, err := c.Status(ctx)
		if err != nil {
			return nil, err
		}
		// Show the bound address, such as the port the kernel chose for 0.
		m.mu.Lock()
		sc := m.cfg.Service(c.name)
		m.mu.Unlock()
		if sc != nil && len(sc.Listen) == len(st.Listen) {
			for i, l := range sc.Listen {
				if addr := m.sockets.boundAddr(l); addr != "" {
					st.Listen[i] = addr
				}
			}
		}
		if sc != nil && sc.Proxy != nil {
			if addr := m.sockets.boundAddr(sc.Proxy.Address); addr != "" {
				st.Proxy = sc.Proxy.Protocol + "://" + addr
			}
		}
		out = append(out, st)
	}
	m.fillRSS(out)
	return out, nil
}

// rssFresh is how old a look at the workers' memory may be for status: a
// look reads every process's stat, and status may be asked for many
// times a second (a live view, a test waiting on it).
const rssFresh = time.Second

// fillRSS puts each worker's memory and CPU time in its status, from one look at
// /proc for all of them (or the last one, if recent), off the clusters'
// loops.
func (m *Manager) fillRSS(sts []ServiceStatus) {
	m.usageMu.Lock()
	defer m.usageMu.Unlock()
	if time.Since(m.usageAt) > rssFresh {
		m.usage, m.usageAt = m.lookAtMemory(sts), time.Now()
	}
	for i := range sts {
		for j := range sts[i].Workers {
			if u, ok := m.usage[sts[i].Workers[j].Pid]; ok {
				sts[i].Workers[j].RSS, sts[i].Workers[j].CPUSeconds = u.RSS, u.CPUSeconds
			}
		}
	}
}

func (m *Manager) lookAtMemory(sts []ServiceStatus) map[int]proc.Usage {
	pgids := map[int]bool{}
	for _, st := range sts {
		for _, w := range st.Workers {
			if w.Pid > 0 {
				pgids[w.Pid] = true
			}
		}
	}
	return groupUsage(pgids)
}

// Reload re-reads the config file and replaces the named services' workers
// (every service when names is empty) with a new generation, with zero
// downtime. An invalid file changes nothing. On a reload of all, services
// added to the file start and removed ones stop. On success it reports
// what the old generations' stops cut short.
func (m *Manager) Reload(ctx context.Context, names []string) (ReloadReport, error) {
	cfg, err := m.opts.Load()
	if err != nil {
		return ReloadReport{}, err
	}
	return m.reload(ctx, cfg, names, false)
}

// ReloadConfig re-reads the config file after it was saved: services
// whose settings changed are reloaded, added ones start and removed ones
// stop; the others are left alone. It returns the config now in force, or
// why the file was refused (nothing changes then).
func (m *Manager) ReloadConfig(ctx context.Context) (*config.Config, error) {
	cfg, err := m.opts.Load()
	if err != nil {
		return nil, err
	}
	_, err = m.reload(ctx, cfg, nil, true)
	return cfg, err
}

// Building says whether the named service is building now: files that
// change then are the build's output.
func (m *Manager) Building(name string) bool {
	m.mu.Lock()
	c := m.clusters[name]
	m.mu.Unlock()
	return c != nil && time.Now().UnixNano() < c.buildingUntil.Load()
}

func (m *Manager) reload(ctx context.Context, cfg *config.Config, names []string, onlyChanged bool) (ReloadReport, error) {
	m.mu.Lock()
	if m.runCtx == nil {
		m.mu.Unlock()
		return ReloadReport{}, errors.New("not running")
	}
	if m.stopping {
		m.mu.Unlock()
		return ReloadReport{}, ErrShuttingDown
	}
	all := len(names) == 0
	if all {
		names = cfg.Names()
	}
	for _, n := range names {
		if cfg.Service(n) == nil {
			m.mu.Unlock()
			if m.clusters[n] != nil {
				return ReloadReport{}, fmt.Errorf("%q is no longer in %s; `recluster reload` with no names stops removed services", n, cfg.Path)
			}
			return ReloadReport{}, unknownService(cfg, n)
		}
	}
	var jobs []reloadJob
	for _, n := range names {
		spec := m.spec(cfg.Service(n))
		if c := m.clusters[n]; c != nil {
			if onlyChanged && reflect.DeepEqual(m.cfg.Service(n), cfg.Service(n)) {
				continue
			}
			if p := m.pending[c]; p != nil {
				p.after, p.when = spec.After, spec.AfterWhen
			}
			jobs = append(jobs, reloadJob{c: c, spec: spec})
			continue
		}
		c := m.newCluster(spec)
		m.clusters[n] = c
		m.runCluster(c)
		done := make(chan error, 1)
		m.wait(c, spec, done)
		jobs = append(jobs, reloadJob{c: c, done: done})
	}
	var removed []*cluster
	if all {
		for n, c := range m.clusters {
			if cfg.Service(n) == nil {
				removed = append(removed, c)
				delete(m.clusters, n)
				m.forget(c)
			}
		}
	}
	m.cfg = cfg
	acts := m.decide()
	m.mu.Unlock()
	m.act(acts)

	return m.carryOut(ctx, jobs, removed)
}
