package proxy

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/recluster/recluster/internal/load"
)

// TestDrainsUnderKeepAliveLoadLoseNothing replaces the backends over and
// over under keep-alive load, closing each old backend (its idle
// connections too) once its drain ends, as a reload does: no request
// may fail.
func TestDrainsUnderKeepAliveLoadLoseNothing(t *testing.T) {
	p, addr := startProxy(t, Options{Protocol: "http"})
	type server struct {
		key string
		srv *http.Server
		ln  net.Listener
	}
	start := func(gen, id int) server {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// Chunked, as an ASGI server answers with no length.
			w.Write([]byte("hello "))
			http.NewResponseController(w).Flush()
			w.Write([]byte(strings.Repeat("x", 100)))
		})}
		go srv.Serve(ln)
		return server{fmt.Sprintf("w%d@%d", id, gen), srv, ln}
	}
	current := []server{start(1, 0), start(1, 1)}
	set := func(ss []server) {
		m := map[string]string{}
		for _, s := range ss {
			m[s.key] = s.ln.Addr().String()
		}
		p.SetBackends(m)
	}
	set(current)
	l := load.Start(addr, load.Options{Conns: 6, KeepAlive: true})
	l.WaitServed(50, deadlineForTests)
	for gen := 2; gen <= 30; gen++ {
		next := []server{start(gen, 0), start(gen, 1)}
		set(next)
		var wg sync.WaitGroup
		for _, old := range current {
			wg.Add(1)
			p.Drain(old.key, func() { old.srv.Close(); wg.Done() })
		}
		wg.Wait()
		current = next
		l.WaitServed(20, deadlineForTests)
	}
	if r := l.Finish(); r.Failed() > 0 {
		t.Errorf("%d of %d requests failed through 29 replacements: %v %q", r.Failed(), int(r.OK)+r.Failed(), r.Failures, r.Examples)
	}
}
