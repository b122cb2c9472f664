package config

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Probe is how recluster checks one worker: an http GET, a tcp connect, a
// command, or (readiness only) a line of the worker's own output. Exactly
// one of HTTP, TCP, Exec and Output is set.
type Probe struct {
	// HTTP is the URL a GET goes to; 2xx passes. A path in the file
	// ("/healthz") is on the worker's own PORT: http://127.0.0.1:${PORT}/healthz.
	// ${PORT} and ${WORKER_ID} are the worker's.
	HTTP string
	// TCP is the host:port a connect goes to; `tcp: true` in the file is
	// the worker's own PORT (127.0.0.1:${PORT}).
	TCP string
	// Exec runs in the service's dir and environment, with the worker's
	// WORKER_ID, PORT and RECLUSTER_WORKER_PID; exit 0 passes.
	Exec *Command
	// Output is a regular expression one line of the worker's output
	// must match.
	Output string
	// Every is the time from one probe's start to the next; Timeout ends
	// one that takes longer (a failure).
	Every, Timeout time.Duration
	// Failures, for health, is how many failures in a row make a worker
	// sick.
	Failures int
}

// Kind names the probe as the log and `status` say it.
func (p *Probe) Kind() string {
	switch {
	case p.HTTP != "":
		return "http"
	case p.TCP != "":
		return "tcp"
	case p.Exec != nil:
		return "exec"
	}
	return "output"
}

// ReadyProbe: readiness by a probe (Service.ReadyProbe), set by
// `readyWhen: {http|tcp|exec|output: …}`.
const ReadyProbe ReadyWhen = "probe"

// Probe defaults. A readiness probe runs often, since a reload waits on
// it; a health probe rarely, since it runs for as long as the worker does
// (Kubernetes' liveness defaults are 10s, 1s and 3).
const (
	DefaultReadyProbeEvery   = 250 * time.Millisecond
	DefaultReadyProbeTimeout = time.Second
	DefaultHealthEvery       = 10 * time.Second
	DefaultHealthTimeout     = 2 * time.Second
	DefaultHealthFailures    = 3
	// ownPortHost is where a probe of the worker's own PORT goes: the
	// worker binds it on this machine.
	ownPortHost = "127.0.0.1:${PORT}"
)

const (
	readyProbeAllowed = `started, listening, ready, or a probe: {http: /healthz}, {tcp: true}, {exec: "cmd"} or {output: "regex"}, with every: and timeout:`
	healthAllowed     = `a probe: {http: /healthz}, {tcp: true} or {exec: "cmd"}, with every: (10s), timeout: (2s) and failures: (3)`
	// Memory is sampled every few seconds, so a bound below a few MiB
	// would replace a worker for its first page faults.
	minMaxMemory = 1 << 20
	maxMaxMemory = 1 << 40
)

// readyWhen reads `readyWhen`: a word, or a probe.
func (d *decoder) readyWhen(n *yaml.Node, path string, svc *Service) {
	if n.Kind == yaml.MappingNode {
		if p := d.probe(n, path, false); p != nil {
			svc.ReadyWhen, svc.ReadyProbe = ReadyProbe, p
		}
		return
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		d.errorf(n, path, "must be %s, got %s", readyProbeAllowed, kindName(n))
		return
	}
	switch rw := ReadyWhen(n.Value); rw {
	case ReadyStarted, ReadyListening, ReadyNotified:
		svc.ReadyWhen = rw
	default:
		d.errorf(n, path, "unknown readyWhen %q; allowed: %s", n.Value, readyProbeAllowed)
	}
}

// health reads `health`: a probe of ready workers.
func (d *decoder) health(n *yaml.Node, path string) *Probe {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "must be %s, got %s", healthAllowed, kindName(n))
		return nil
	}
	return d.probe(n, path, true)
}

// probe reads a probe's mapping; health probes have failures and no
// output.
func (d *decoder) probe(n *yaml.Node, path string, health bool) *Probe {
	allowed, keys := readyProbeAllowed, []string{"http", "tcp", "exec", "output", "every", "timeout"}
	p := &Probe{Every: DefaultReadyProbeEvery, Timeout: DefaultReadyProbeTimeout}
	if health {
		allowed, keys = healthAllowed, []string{"http", "tcp", "exec", "every", "timeout", "failures"}
		p = &Probe{Every: DefaultHealthEvery, Timeout: DefaultHealthTimeout, Failures: DefaultHealthFailures}
	}
	var kinds []string
	ok := true
	for _, kv := range d.pairs(n, path) {
		k, v, kp := kv.key.Value, kv.value, join(path, kv.key.Value)
		switch {
		case k == "http":
			kinds = append(kinds, k)
			p.HTTP, ok = d.probeURL(v, kp)
		case k == "tcp":
			kinds = append(kinds, k)
			p.TCP, ok = d.probeAddress(v, kp)
		case k == "exec":
			kinds = append(kinds, k)
			cmd := d.command(v, kp)
			p.Exec = &cmd
		case k == "output" && !health:
			kinds = append(kinds, k)
			if s, good := d.str(v, kp); good {
				if _, err := regexp.Compile(s); err != nil {
					d.errorf(v, kp, "is not a regular expression: %v", err)
				} else if s == "" {
					d.errorf(v, kp, "is empty; give a regular expression a line of the worker's output matches once it is ready")
				}
				p.Output = s
			}
		case k == "output":
			kinds = append(kinds, k)
			d.errorf(kv.key, kp, "cannot tell that a worker is sick: a line it printed once stays printed; use http, tcp or exec")
		case k == "every":
			p.Every = d.duration(v, kp, false, p.Every)
		case k == "timeout":
			p.Timeout = d.duration(v, kp, false, p.Timeout)
		case k == "failures" && health:
			p.Failures = d.probeFailures(v, kp)
		default:
			d.unknownKey(kv.key, path, keys)
		}
	}
	switch {
	case len(kinds) == 0:
		d.errorf(n, path, "has no probe; must be %s", allowed)
		return nil
	case len(kinds) > 1:
		d.errorf(n, path, "has %d probes (%s); give one", len(kinds), strings.Join(kinds, ", "))
		return nil
	case !ok:
		return nil
	}
	return p
}

// probeURL reads an http probe's target: a path on the worker's own PORT,
// or an http URL.
func (d *decoder) probeURL(n *yaml.Node, path string) (string, bool) {
	const allowed = `a path on the worker's own PORT ("/healthz"), or an http URL ("http://127.0.0.1:${PORT}/healthz")`
	s, ok := d.str(n, path)
	switch {
	case !ok:
		return "", false
	case strings.HasPrefix(s, "/"):
		return "http://" + ownPortHost + s, true
	case strings.HasPrefix(s, "http://"):
		return s, true
	}
	d.errorf(n, path, "must be %s, got %q", allowed, s)
	return "", false
}

// probeAddress reads a tcp probe's target: true (the worker's own PORT),
// a port on this machine, or host:port.
func (d *decoder) probeAddress(n *yaml.Node, path string) (string, bool) {
	const allowed = "true (the worker's own PORT), a port (9000), or host:port"
	if n.Kind == yaml.ScalarNode {
		switch n.ShortTag() {
		case "!!bool":
			if d.boolean(n, path, false) {
				return ownPortHost, true
			}
		case "!!int":
			if port, err := strconv.Atoi(n.Value); err == nil && port >= 1 && port <= 65535 {
				return "127.0.0.1:" + n.Value, true
			}
		case "!!str":
			if _, _, err := splitHostPortVars(n.Value); err == nil {
				return n.Value, true
			}
		}
	}
	d.errorf(n, path, "must be %s, got %s", allowed, describeValue(n))
	return "", false
}

// splitHostPortVars is net.SplitHostPort for an address whose port may be
// ${PORT}.
func splitHostPortVars(addr string) (string, string, error) {
	i := strings.LastIndexByte(addr, ':')
	if i <= 0 || i == len(addr)-1 {
		return "", "", fmt.Errorf("no host:port")
	}
	return addr[:i], addr[i+1:], nil
}

func (d *decoder) probeFailures(n *yaml.Node, path string) int {
	const allowed = "a whole number of failures in a row, from 1 to 100"
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" {
		if v, err := strconv.Atoi(n.Value); err == nil && v >= 1 && v <= 100 {
			return v
		}
	}
	d.errorf(n, path, "must be %s, got %s", allowed, describeValue(n))
	return DefaultHealthFailures
}

// maxMemory reads `maxMemory`, a size.
func (d *decoder) maxMemory(n *yaml.Node, path string) int64 {
	v, _ := d.size(n, path, "a size from 1MiB to 1TiB, such as 512MiB or 2G (a bare number is bytes)", minMaxMemory, maxMaxMemory)
	return v
}

// describeValue is a scalar's value, quoted, or the kind of node it is.
func describeValue(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return strconv.Quote(n.Value)
	}
	return kindName(n)
}

// checkProbes refuses a probe that cannot check the one worker it is
// for: a path or `tcp: true` needs the worker's own PORT, which a worker
// has behind proxy (or in Procfile mode); with listen, workers share the
// address, so a probe of it reaches any worker, not the one checked.
func (d *decoder) checkProbes(src *serviceSource) {
	svc := src.svc
	for _, c := range []struct {
		key   string
		probe *Probe
	}{{"readyWhen", svc.ReadyProbe}, {"health", svc.Health}} {
		p := c.probe
		if p == nil {
			continue
		}
		path := "services." + svc.Name + "." + c.key
		target := p.HTTP + p.TCP
		ownPort := strings.Contains(target, "${PORT}")
		perWorker := ownPort || strings.Contains(target, "${WORKER_ID}")
		switch {
		case target == "":
			// exec and output reach the worker itself.
		case ownPort && svc.Proxy == nil && !hasEnv(svc, "PORT"):
			d.errorf(src.set[c.key], path, "checks the worker's own PORT, which recluster gives a worker behind proxy; without proxy, give the address the worker serves on ({%s: http://127.0.0.1:9000/healthz}), or use exec", p.Kind())
		case len(svc.Listen) > 0 && !perWorker:
			d.errorf(src.set[c.key], path, "with listen, the workers share one socket, so a probe of %s reaches any worker, not the one it checks; use exec (it gets the worker's pid as RECLUSTER_WORKER_PID), output, or an address that names ${WORKER_ID}", target)
		}
	}
}

func hasEnv(svc *Service, name string) bool {
	for _, e := range svc.Env {
		if e.Name == name {
			return true
		}
	}
	return false
}
