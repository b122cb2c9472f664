package runner

// generation is one set of workers started from one spec. It holds a
// lease on the spec's sockets, which its workers inherit, for as long as
// it may start workers; once retired, it lets go when its last worker is
// gone. So a socket stays open while anything may still accept on it, and
// closes (a moved `listen`, a removed service) when nothing can.
type generation struct {
	num     int
	spec    *serviceSpec
	lease   *lease
	router  *routerHandle // the proxy its ready workers serve behind, if any
	live    map[*worker]struct{}
	retired bool
	// build is its build under way; built, that the build succeeded.
	build *builder
	built bool
	// release gives back the lease and the router, once.
	release func()
}

func (c *cluster) newGeneration(spec *serviceSpec) (*generation, error) {
	l, err := c.acquire(spec)
	if err != nil {
		return nil, err
	}
	gen := &generation{num: c.maxGen + 1, spec: spec, lease: l, live: map[*worker]struct{}{}}
	if gen.router, err = c.routerFor(spec, l); err != nil {
		l.release()
		return nil, err
	}
	c.maxGen++
	released := false
	gen.release = func() {
		if !released {
			released = true
			l.release()
			c.releaseRouter(gen.router)
		}
	}
	return gen, nil
}

// retire says no worker will join the generation any more.
func (g *generation) retire() {
	g.retired = true
	g.releaseIfDone()
}

func (g *generation) workerGone(w *worker) {
	delete(g.live, w)
	g.releaseIfDone()
}

func (g *generation) releaseIfDone() {
	if g.retired && len(g.live) == 0 && g.build == nil {
		g.release()
	}
}
