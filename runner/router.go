package runner

import (
	"fmt"
	"net"
	"strconv"

	"github.com/recluster/recluster/config"
)

// Router is the traffic side of a proxied service (package proxy): it owns
// the service's public address and sends new connections or requests only
// to the backends it was given. The runner gives it the ready workers of
// the serving generation, and drains a worker through it before stopping
// the worker.
type Router interface {
	// Serve accepts until Close; the cluster runs it on a goroutine it
	// joins before it returns.
	Serve() error
	// SetBackends sets where new work goes: worker key → address.
	SetBackends(backends map[string]string)
	// Drain stops sending work to a backend and calls done (on any
	// goroutine) once it has nothing in flight.
	Drain(key string, done func())
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
	Listener net.Listener
	// Log prints one of recluster's own lines about the service.
	Log func(string)
}

// routerHandle is one Router, shared by every generation whose spec has
// the same proxy setting, and closed when the last of them is done.
type routerHandle struct {
	proxy  config.Proxy
	router Router
	users  int
	served chan struct{} // closed when Serve has returned
}

// routerFor returns the router for gen's proxy setting, making it when
// none serves that setting yet; nil when the service has no proxy.
func (c *cluster) routerFor(gen *generation) (*routerHandle, error) {
	p := gen.spec.Proxy
	if p == nil {
		return nil, nil
	}
	if h := c.routers[*p]; h != nil {
		h.users++
		return h, nil
	}
	if c.opts.NewRouter == nil {
		return nil, fmt.Errorf("%s: proxy %s: this recluster runs no proxy", c.name, p)
	}
	f := gen.lease.files[len(gen.lease.files)-1] // the proxy's socket comes last
	ln, err := net.FileListener(f)               // a dup: closing it leaves the socket
	if err != nil {
		return nil, fmt.Errorf("%s: proxy %s: %w", c.name, p, err)
	}
	r, err := c.opts.NewRouter(RouterSpec{Service: c.name, Proxy: *p, Listener: ln,
		Log: func(line string) { c.opts.Output.System(c.name, line) }})
	if err != nil {
		ln.Close()
		return nil, err
	}
	h := &routerHandle{proxy: *p, router: r, users: 1, served: make(chan struct{})}
	// Owned by the cluster: ends when the router is closed, and run waits
	// for it before it returns.
	go func() {
		defer close(h.served)
		if err := r.Serve(); err != nil {
			c.opts.Output.System(c.name, fmt.Sprintf("proxy %s: %v", p, err))
		}
	}()
	if c.routers == nil {
		c.routers = map[config.Proxy]*routerHandle{}
	}
	c.routers[*p] = h
	return h, nil
}

// releaseRouter drops one generation's use of h, closing it after the last.
func (c *cluster) releaseRouter(h *routerHandle) {
	if h == nil {
		return
	}
	if h.users--; h.users > 0 {
		return
	}
	delete(c.routers, h.proxy)
	h.router.Close()
	c.closedRouters = append(c.closedRouters, h)
}

// backendKey names a worker to its router.
func backendKey(w *worker) string {
	return w.ref.String() + "@" + strconv.Itoa(w.ref.Generation) + "#" + strconv.Itoa(w.pid)
}

// syncBackends gives each router the ready workers of the current
// generation that are not stopping.
func (c *cluster) syncBackends() {
	if len(c.routers) == 0 {
		return
	}
	backends := map[*routerHandle]map[string]string{}
	for _, h := range c.routers {
		backends[h] = map[string]string{}
	}
	if c.current != nil && c.current.router != nil && c.phase != phaseStopping && c.phase != phaseShutDown {
		for _, s := range c.slots {
			if w := s.worker; w != nil && w.state == Ready && !w.stopAsked {
				backends[c.current.router][backendKey(w)] = w.backendAddr()
			}
		}
		// A rolling reload (maxSurge) serves with both generations, or
		// it would shrink as the old one stops.
		if op := c.reload; op != nil && op.rolling() && op.gen.router != nil {
			for _, w := range op.workers {
				if w.state == Ready && !w.stopAsked {
					backends[op.gen.router][backendKey(w)] = w.backendAddr()
				}
			}
		}
	}
	for h, b := range backends {
		h.router.SetBackends(b)
	}
}
