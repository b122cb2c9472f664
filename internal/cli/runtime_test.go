package cli

import (
	"fmt"
	"runtime/debug"
	"testing"

	"github.com/recluster/recluster/config"
)

// TestTuneGCFollowsTheConfig: the collector's target is raised while a
// service has an http proxy and back to Go's default once none has, and
// GOGC, when set, is left alone.
func TestTuneGCFollowsTheConfig(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(defaultGCPercent))
	current := func() int {
		p := debug.SetGCPercent(defaultGCPercent)
		debug.SetGCPercent(p)
		return p
	}
	noEnv := IO{Getenv: func(string) string { return "" }}
	httpProxy := &config.Config{Services: []*config.Service{
		{Name: "tcp", Proxy: &config.Proxy{Protocol: config.ProtocolTCP}},
		{Name: "web", Proxy: &config.Proxy{Protocol: config.ProtocolHTTP}},
	}}
	tcpOnly := &config.Config{Services: []*config.Service{{Name: "tcp", Proxy: &config.Proxy{Protocol: config.ProtocolTCP}}}}

	tuneGC(noEnv, httpProxy)
	if got := current(); got != proxyGCPercent {
		t.Errorf("with an http proxy: GC percent %d, want %d", got, proxyGCPercent)
	}
	tuneGC(noEnv, tcpOnly)
	if got := current(); got != defaultGCPercent {
		t.Errorf("after the http proxy went: GC percent %d, want %d", got, defaultGCPercent)
	}
	debug.SetGCPercent(250)
	tuneGC(IO{Getenv: func(k string) string {
		if k == "GOGC" {
			return "250"
		}
		return ""
	}}, httpProxy)
	if got := current(); got != 250 {
		t.Errorf("with GOGC=250: GC percent %d", got)
	}
}

// TestWorthCollecting: a small stack is left alone (a first collection
// would cost more memory than it frees); a big one is collected.
func TestWorthCollecting(t *testing.T) {
	stack := func(workers ...int) *config.Config {
		cfg := &config.Config{}
		for i, n := range workers {
			cfg.Services = append(cfg.Services, &config.Service{Name: fmt.Sprint("s", i), Workers: n})
		}
		return cfg
	}
	ones := func(n int) []int {
		out := make([]int, n)
		for i := range out {
			out[i] = 1
		}
		return out
	}
	for _, c := range []struct {
		cfg  *config.Config
		want bool
	}{
		{stack(ones(10)...), false}, // 10 services
		{stack(ones(100)...), true}, // 100 services
		{stack(collectFromWorkers - 1), false},
		{stack(collectFromWorkers), true},
		{stack(16, 16), true},
		{stack(2000), true},
	} {
		if got := worthCollecting(c.cfg); got != c.want {
			t.Errorf("worthCollecting(%d services) = %v, want %v", len(c.cfg.Services), got, c.want)
		}
	}
}
