package cli

import (
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
