package cli

import (
	"sync"
	"syscall"

	"github.com/recluster/recluster/internal/proxy"
	"github.com/recluster/recluster/runner"
)

// proxyFleet makes the proxies of one `up` and gives each the default
// bound on its client connections: an equal share of half the
// descriptor limit (Go raises the soft limit to the hard one as
// recluster starts), at 3 descriptors a connection (the client's socket,
// the worker's, and a pooled one to spare), from 64 to 10,000. The other
// half stays for workers, their pipes and the control socket, so a flood
// on one proxy can neither starve another service's nor stop `up` from
// supervising. A proxy's maxConnections, when set, overrides its share.
type proxyFleet struct {
	limit int // the descriptor limit

	mu   sync.Mutex
	live map[*fleetProxy]struct{}
}

func newProxyFleet() *proxyFleet {
	f := &proxyFleet{limit: 1024, live: map[*fleetProxy]struct{}{}}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur > 0 {
		f.limit = int(min(rl.Cur, 1<<30))
	}
	return f
}

// share is each proxy's default bound when n proxies run.
func (f *proxyFleet) share(n int) int {
	const fdsPerConn = 3
	return min(max(f.limit/2/fdsPerConn/max(n, 1), 64), 10000)
}

// newRouter makes the proxy of a service that has one.
func (f *proxyFleet) newRouter(spec runner.RouterSpec) (runner.Router, error) {
	opts := proxy.OptionsFor(spec.Proxy, spec.Wait)
	opts.Log = spec.Log
	fp := &fleetProxy{Proxy: proxy.New(spec.Listener, opts), fleet: f}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.live[fp] = struct{}{}
	f.rebalance()
	return fp, nil
}

// rebalance gives every live proxy its share; the caller holds mu.
func (f *proxyFleet) rebalance() {
	share := f.share(len(f.live))
	for p := range f.live {
		p.SetDefaultMaxConns(share)
	}
}

// fleetProxy is a proxy that leaves its fleet when closed.
type fleetProxy struct {
	*proxy.Proxy
	fleet *proxyFleet
}

func (p *fleetProxy) Close() error {
	err := p.Proxy.Close()
	p.fleet.mu.Lock()
	defer p.fleet.mu.Unlock()
	delete(p.fleet.live, p)
	p.fleet.rebalance()
	return err
}
