package runner

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/recluster/recluster/config"
	"github.com/recluster/recluster/internal/proxy"
)

// Router is the traffic side of a proxied service (package proxy): it owns
// the service's public address and sends new connections or requests only
// to the backends it was given. The runner gives it the ready workers of
// the serving generation, and drains a worker through it before stopping
// the worker. One Router serves an address for as long as the service
// has it: through reloads, restarts and stops, and whatever the proxy
// settings of each generation, so that a client that comes while no
// worker is ready waits for one instead of being refused.
type Router interface {
	// Serve accepts until Close; the cluster runs it on a goroutine it
	// joins before it returns.
	Serve() error
	// Configure sets how new connections are handled: the serving
	// generation's proxy settings, and how long work waits for a ready
	// backend. Those accepted already go on as they began.
	Configure(p config.Proxy, wait time.Duration)
	// SetBackends sets where new work goes: worker key → address.
	SetBackends(backends map[string]string)
	// Drain stops sending work to a backend and calls done (on any
	// goroutine) once it has nothing in flight but upgraded connections.
	Drain(key string, done func())
	// Release says the backend's worker is gone, and calls done (on any
	// goroutine, within seconds) with how many requests or connections
	// its end cut.
	Release(key string, done func(cut int))
	// InFlight says how many connections or requests are in flight to a
	// backend.
	InFlight(key string) int
	// Close stops accepting; Serve returns once what is in flight ends.
	Close() error
}

// RouterSpec is what a Router is made from.
type RouterSpec struct {
	Service  string
	Proxy    config.Proxy
	Wait     time.Duration // how long work waits for a ready backend
	Listener net.Listener
	// Log prints one of recluster's own lines about the service.
	Log func(string)
}

// routerHandle is the Router of one address, shared by every generation
// that serves there and by the spec in force, and closed when the last of
// them lets go.
type routerHandle struct {
	addr   config.Listen
	router Router
	users  int
	// proxy and wait are what Configure was last given.
	proxy  config.Proxy
	wait   time.Duration
	served chan struct{} // closed when Serve has returned
}

// routerFor returns the router for spec's proxy address, making it on the
// lease's socket when none serves there yet; nil when spec has no proxy.
func (c *cluster) routerFor(spec *serviceSpec, l *lease) (*routerHandle, error) {
	p := spec.Proxy
	if p == nil {
		return nil, nil
	}
	if h := c.routers[p.Address]; h != nil {
		h.users++
		return h, nil
	}
	f := l.files[len(l.files)-1]   // the proxy's socket comes last
	ln, err := net.FileListener(f) // a dup: closing it leaves the socket
	if err != nil {
		return nil, fmt.Errorf("%s: proxy %s: %w", c.name, p, err)
	}
	r, err := c.opts.NewRouter(RouterSpec{Service: c.name, Proxy: *p, Wait: spec.ReadyTimeout, Listener: ln,
		Log: func(line string) { c.opts.Output.System(c.name, c.name+" "+line) }})
	if err != nil {
		ln.Close()
		return nil, err
	}
	h := &routerHandle{addr: p.Address, router: r, users: 1, proxy: *p, wait: spec.ReadyTimeout, served: make(chan struct{})}
	// Owned by the cluster: ends when the router is closed, and run waits
	// for it before it returns.
	go func() {
		defer close(h.served)
		if err := r.Serve(); err != nil {
			c.opts.Output.System(c.name, fmt.Sprintf("proxy %s: %v", p, err))
		}
	}()
	if c.routers == nil {
		c.routers = map[config.Listen]*routerHandle{}
	}
	c.routers[p.Address] = h
	return h, nil
}

// releaseRouter drops one user of h, closing it after the last.
func (c *cluster) releaseRouter(h *routerHandle) {
	if h == nil {
		return
	}
	if h.users--; h.users > 0 {
		return
	}
	delete(c.routers, h.addr)
	h.router.Close()
	c.closedRouters = append(c.closedRouters, h)
}

// configure gives h the settings of spec, when they changed.
func (h *routerHandle) configure(spec *serviceSpec) {
	if spec.Proxy == nil || spec.Proxy.Address != h.addr {
		return
	}
	if *spec.Proxy != h.proxy || spec.ReadyTimeout != h.wait {
		h.proxy, h.wait = *spec.Proxy, spec.ReadyTimeout
		h.router.Configure(h.proxy, h.wait)
	}
}

// backendKey names a worker to its router.
func backendKey(w *worker) string {
	return w.ref.String() + "@" + strconv.Itoa(w.ref.Generation) + "#" + strconv.Itoa(w.pid)
}

// newProxy is the Router a Manager makes by default: recluster's proxy
// with the service's settings.
func newProxy(spec RouterSpec) (Router, error) {
	opts := proxy.OptionsFor(spec.Proxy, spec.Wait)
	opts.Log = spec.Log
	return proxy.New(spec.Listener, opts), nil
}
