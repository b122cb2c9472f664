package config

import (
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"
)

// Stage 2 of loading: the node tree to typed values. Each key is checked
// for its type and allowed values; a bad one is reported and the walk goes
// on, so the user sees every problem at once. Values that need the
// filesystem or other services are checked by later stages.

var (
	topKeys     = []string{"env", "envFile", "services", "logFile", "logSize", "metrics"}
	serviceKeys = []string{"command", "dir", "env", "envFile", "workers", "listen", "proxy", "readyWhen", "health", "maxMemory",
		"readyTimeout", "timeout", "respawn", "backoff", "stopSignal", "after", "log", "build", "buildTimeout", "watch",
		"restart", "startLimit", "minUptime", "minReady", "maxSurge", "drainTimeout"}
	watchKeys   = []string{"paths", "ignore", "debounce", "action"}
	logKeys     = []string{"respawns"}
	proxyKeys   = []string{"address", "protocol", "proxyProtocol", "maxConnections", "maxHeaderBytes", "headerTimeout", "idleTimeout"}
	serviceName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)
)

// MaxWorkers is the most workers a service may have.
const MaxWorkers = 100000

// decoder walks a yaml.Node tree by hand so that every error keeps its line
// and column and none stops the walk.
type decoder struct {
	file   string
	dir    string
	opts   Options
	errs   errorList
	expand expander
	// fileEnv is the top-level env as decoded so far, for interpolation.
	fileEnv map[string]string
	// metrics is the top-level metrics address, checked against the
	// services' addresses.
	metrics     *Listen
	metricsNode *yaml.Node
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	line, col := 1, 1
	if n != nil && n.Line > 0 {
		line, col = n.Line, n.Column
	}
	d.errs.add(&FieldError{File: d.file, Line: line, Col: col, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// fileSource is what the top level of the file says, for later stages.
type fileSource struct {
	root       *yaml.Node
	env        []EnvVar
	envFiles   []fileRef
	envFileSet bool
	logFile    string
	logSize    int64
}

// serviceSource is one service being loaded, with the nodes that later
// stages point their errors at.
type serviceSource struct {
	svc         *Service
	node        *yaml.Node            // the name key
	set         map[string]*yaml.Node // the keys the file gives, to their values
	env         []EnvVar
	envFiles    []fileRef
	afterNodes  []*yaml.Node
	listenNodes []*yaml.Node
	proxyNode   *yaml.Node
}

// fileRef is a file the config names, with where it names it.
type fileRef struct {
	name string
	node *yaml.Node
}

func (d *decoder) decodeFile(doc *yaml.Node) (*fileSource, []*serviceSource) {
	if doc.Kind == 0 || len(doc.Content) == 0 {
		d.errorf(nil, "", "the file is empty; it needs a services: mapping with at least one service")
		return nil, nil
	}
	root := resolve(doc.Content[0])
	if root.Kind != yaml.MappingNode {
		d.errorf(root, "", "the file must be a mapping with a services: key, got %s", kindName(root))
		return nil, nil
	}
	top := &fileSource{root: root}
	var services *yaml.Node
	for _, p := range d.pairs(root, "") {
		switch p.key.Value {
		case "env":
			top.env = d.envMap(p.value, "env")
		case "envFile":
			top.envFileSet = true
			top.envFiles = d.fileRefs(p.value, "envFile")
		case "services":
			services = p.value
		case "logFile":
			top.logFile = d.logFile(p.value, "logFile")
		case "logSize":
			top.logSize = d.logSize(p.value, "logSize")
		case "metrics":
			d.metrics, d.metricsNode = d.metricsAddress(p.value, "metrics"), p.value
		default:
			if strings.HasPrefix(p.key.Value, "x-") {
				continue // extension keys hold anchors for merges, as in Compose files
			}
			d.unknownKey(p.key, "", topKeys)
		}
	}
	var sources []*serviceSource
	switch {
	case services == nil:
		d.errorf(root, "", "no services: key; add a services: mapping with at least one service")
	case services.Kind != yaml.MappingNode || len(services.Content) == 0:
		if services.Kind == yaml.MappingNode || services.ShortTag() == "!!null" {
			d.errorf(services, "services", "has no services; add at least one, such as `web: {command: ./server}`")
		} else {
			d.errorf(services, "services", "must be a mapping of service names, got %s", kindName(services))
		}
	default:
		for _, p := range d.pairs(services, "services") {
			if src := d.service(p.key, p.value); src != nil {
				sources = append(sources, src)
			}
		}
	}
	return top, sources
}

func (d *decoder) service(key, n *yaml.Node) *serviceSource {
	name := key.Value
	path := "services." + name
	if !serviceName.MatchString(name) || name == "recluster" {
		d.errorf(key, path, "%q is not a usable service name; use letters, digits, '-' and '_', starting with a letter or digit (and not \"recluster\", which names recluster's own log lines)", name)
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "must be a mapping with at least a command, got %s", kindName(n))
		return nil
	}
	src := &serviceSource{svc: d.opts.newService(name, d.dir), node: key, set: map[string]*yaml.Node{}}
	for _, p := range d.pairs(n, path) {
		k, v := p.key.Value, p.value
		if !d.serviceKey(k, v, join(path, k), src) {
			d.unknownKey(p.key, path, serviceKeys)
			continue
		}
		src.set[k] = v
	}
	if src.set["command"] == nil {
		d.errorf(key, path, "has no command; add command: with a string (split like a shell) or a list (taken as argv)")
	}
	return src
}

// serviceKey decodes one key of a service; it reports false for a key
// that is not one.
func (d *decoder) serviceKey(key string, v *yaml.Node, path string, src *serviceSource) bool {
	svc := src.svc
	switch key {
	case "command":
		svc.Command = d.command(v, path)
	case "dir":
		if s, ok := d.str(v, path); ok {
			svc.Dir = d.abs(s)
		}
	case "env":
		src.env = d.envMap(v, path)
	case "envFile":
		src.envFiles = d.fileRefs(v, path)
	case "workers":
		svc.Workers = d.workers(v, path, svc.Workers)
	case "listen":
		svc.Listen, src.listenNodes = d.listen(v, path, svc.Name)
	case "proxy":
		svc.Proxy, src.proxyNode = d.proxy(v, path, svc.Name)
	case "readyWhen":
		d.readyWhen(v, path, svc)
	case "health":
		svc.Health = d.health(v, path)
	case "maxMemory":
		svc.MaxMemory = d.maxMemory(v, path)
	case "readyTimeout":
		svc.ReadyTimeout = d.duration(v, path, false, svc.ReadyTimeout)
	case "timeout":
		svc.Timeout = d.duration(v, path, true, svc.Timeout)
	case "drainTimeout":
		svc.DrainTimeout = d.duration(v, path, true, svc.DrainTimeout)
	case "respawn":
		svc.Respawn = d.duration(v, path, true, svc.Respawn)
	case "backoff":
		svc.Backoff = d.duration(v, path, true, svc.Backoff)
	case "stopSignal":
		svc.StopSignal = d.signal(v, path, svc.StopSignal)
	case "after":
		svc.After, svc.AfterWhen, src.afterNodes = d.after(v, path)
	case "restart":
		svc.Restart = d.restart(v, path, svc.Restart)
	case "startLimit":
		svc.StartLimit = d.startLimit(v, path, svc.StartLimit)
	case "minUptime":
		svc.MinUptime = d.duration(v, path, true, svc.MinUptime)
	case "minReady":
		svc.MinReady = d.duration(v, path, true, svc.MinReady)
	case "maxSurge":
		svc.MaxSurge = d.maxSurge(v, path)
	case "log":
		d.logOptions(v, path, &svc.Log)
	case "build":
		if cmd := d.command(v, path); cmd.Line != "" || len(cmd.Args) > 0 {
			svc.Build = &cmd
		}
	case "buildTimeout":
		svc.BuildTimeout = d.duration(v, path, false, svc.BuildTimeout)
	case "watch":
		svc.Watch = d.watch(v, path)
	default:
		return false
	}
	return true
}

// watch reads `watch: true`, a glob, a list of globs, or
// {paths, ignore, debounce, action}.
func (d *decoder) watch(n *yaml.Node, path string) *Watch {
	const allowed = `true, a glob ("**/*.py") or a list of globs relative to dir, or {paths: [...], ignore: [...], debounce: 50ms, action: reload|restart}`
	w := &Watch{Debounce: DefaultWatchDebounce, Action: WatchReload}
	switch {
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool":
		if !d.boolean(n, path, false) {
			return nil
		}
		w.Paths = []string{"."}
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str", n.Kind == yaml.SequenceNode:
		w.Paths = d.globs(n, path)
	case n.Kind == yaml.MappingNode:
		for _, p := range d.pairs(n, path) {
			k, v, kp := p.key.Value, p.value, join(path, p.key.Value)
			switch k {
			case "paths":
				w.Paths = d.globs(v, kp)
			case "ignore":
				w.Ignore = d.globs(v, kp)
			case "debounce":
				w.Debounce = d.duration(v, kp, true, w.Debounce)
			case "action":
				if s, ok := d.str(v, kp); ok {
					if s != WatchReload && s != WatchRestart {
						d.errorf(v, kp, "unknown action %q; allowed: reload (zero downtime), restart (stop, then start)", s)
					} else {
						w.Action = s
					}
				}
			default:
				d.unknownKey(p.key, path, watchKeys)
			}
		}
		if w.Paths == nil {
			w.Paths = []string{"."}
		}
	default:
		d.errorf(n, path, "must be %s, got %s", allowed, kindName(n))
		return nil
	}
	return w
}

// globs reads one glob or a list, checking each is a usable pattern
// relative to the service's folder.
func (d *decoder) globs(n *yaml.Node, path string) []string {
	out := []string{}
	d.oneOrList(n, path, func(item *yaml.Node, p string) {
		s, ok := d.str(item, p)
		if !ok {
			return
		}
		switch {
		case s == "":
			d.errorf(item, p, "is empty; a glob names files relative to the service's dir, such as \"**/*.py\"")
		case filepath.IsAbs(s) || strings.HasPrefix(filepath.Clean(s), ".."):
			d.errorf(item, p, "%q leaves the service's dir; a glob is relative to dir and stays below it", s)
		default:
			if _, err := filepath.Match(strings.ReplaceAll(s, "**", "*"), ""); err != nil {
				d.errorf(item, p, "%q is not a glob: %v", s, err)
				return
			}
			out = append(out, filepath.ToSlash(filepath.Clean(s)))
		}
	})
	return out
}

func (d *decoder) unknownKey(k *yaml.Node, path string, allowed []string) {
	msg := fmt.Sprintf("unknown key %q", k.Value)
	if ours, ok := otherToolsKeys[k.Value]; ok && contains(allowed, ours) {
		msg += fmt.Sprintf(" (recluster calls it %q)", ours)
	} else if guess := Closest(k.Value, allowed); guess != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", guess)
	}
	if path == "" {
		msg += "; keys starting with x- are ignored, for anchors"
	}
	d.errorf(k, path, "%s; allowed: %s", msg, strings.Join(allowed, ", "))
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	switch n.ShortTag() {
	case "!!null":
		return "empty"
	case "!!int", "!!float":
		return "a number"
	case "!!bool":
		return "true/false"
	}
	return fmt.Sprintf("%q", n.Value)
}

// noNUL refuses a NUL byte, which no path, argument or variable can hold.
func (d *decoder) noNUL(n *yaml.Node, path, s string) bool {
	if strings.IndexByte(s, 0) >= 0 {
		d.errorf(n, path, "contains a NUL byte (\\0), which no program, path or variable can hold; remove it")
		return false
	}
	return true
}

func (d *decoder) str(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		d.errorf(n, path, "must be a string, got %s", kindName(n))
		return "", false
	}
	return n.Value, d.noNUL(n, path, n.Value)
}

// oneOrList calls f for n, or for each item when n is a list, with the
// item's path.
func (d *decoder) oneOrList(n *yaml.Node, path string, f func(item *yaml.Node, path string)) {
	if n.Kind != yaml.SequenceNode {
		f(n, path)
		return
	}
	for i, item := range n.Content {
		f(resolve(item), fmt.Sprintf("%s[%d]", path, i))
	}
}

// strs accepts one string or a list of strings.
func (d *decoder) strs(n *yaml.Node, path string) ([]string, []*yaml.Node) {
	var out []string
	var nodes []*yaml.Node
	d.oneOrList(n, path, func(item *yaml.Node, p string) {
		if s, ok := d.str(item, p); ok {
			out = append(out, s)
			nodes = append(nodes, item)
		}
	})
	return out, nodes
}

func (d *decoder) fileRefs(n *yaml.Node, path string) []fileRef {
	names, nodes := d.strs(n, path)
	refs := make([]fileRef, len(names))
	for i := range names {
		refs[i] = fileRef{names[i], nodes[i]}
	}
	return refs
}

// duration reads a duration, or reports why it cannot and returns def.
func (d *decoder) duration(n *yaml.Node, path string, allowZero bool, def time.Duration) time.Duration {
	const allowed = `a Go duration ("250ms", "10s", "1h") or a number of seconds (0.3)`
	if n.Kind != yaml.ScalarNode || n.ShortTag() == "!!null" || n.ShortTag() == "!!bool" {
		d.errorf(n, path, "must be %s, got %s", allowed, kindName(n))
		return def
	}
	v, err := parseDuration(n.Value)
	switch {
	case err != nil:
		d.errorf(n, path, "%q is not a duration; use %s", n.Value, allowed)
	case v < 0:
		d.errorf(n, path, "must not be negative, got %q", n.Value)
	case v == 0 && !allowZero:
		d.errorf(n, path, "must be greater than 0, got %q", n.Value)
	default:
		return v
	}
	return def
}

func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if d, err := time.ParseDuration(s); err == nil {
		return d, nil
	}
	secs, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(secs) || math.IsInf(secs, 0) || math.Abs(secs) > math.MaxInt64/float64(time.Second) {
		return 0, fmt.Errorf("not a duration: %q", s)
	}
	return time.Duration(secs * float64(time.Second)), nil
}

// envMap reads a mapping of NAME: scalar into ordered pairs.
func (d *decoder) envMap(n *yaml.Node, path string) []EnvVar {
	if n.Kind != yaml.MappingNode {
		if n.ShortTag() != "!!null" {
			d.errorf(n, path, "must be a mapping of NAME: value, got %s", kindName(n))
		}
		return nil
	}
	var out []EnvVar
	// A value may name variables (interpolate): recluster's own
	// environment first, then what the file set before it.
	own := map[string]string{}
	lookup := func(k string) (string, bool) {
		if v := d.opts.Getenv(k); v != "" {
			return v, true
		}
		if v, ok := own[k]; ok {
			return v, true
		}
		v, ok := d.fileEnv[k]
		return v, ok
	}
	for _, p := range d.pairs(n, path) {
		name := p.key.Value
		if err := checkEnvName(name); err != nil {
			d.errorf(p.key, path, "%v", err)
			continue
		}
		if p.value.Kind != yaml.ScalarNode {
			d.errorf(p.value, join(path, name), "must be a string, number or true/false, got %s", kindName(p.value))
			continue
		}
		value := p.value.Value
		if p.value.ShortTag() == "!!null" {
			value = ""
		}
		expanded, err := interpolate(value, lookup)
		if err != nil {
			d.errorf(p.value, join(path, name), "%v", err)
			continue
		}
		if d.noNUL(p.value, join(path, name), expanded) {
			out = append(out, EnvVar{Name: name, Value: expanded})
			own[name] = expanded
			if path == "env" {
				if d.fileEnv == nil {
					d.fileEnv = map[string]string{}
				}
				d.fileEnv[name] = expanded
			}
		}
	}
	return out
}

// checkEnvName refuses what cannot be a variable's name in an environment:
// empty, or holding '=', a NUL, white space or control characters.
func checkEnvName(name string) error {
	if name == "" || strings.IndexFunc(name, func(r rune) bool { return r == '=' || r <= ' ' || r == 0x7f }) >= 0 {
		return fmt.Errorf("%q is not a valid variable name; a name is not empty and has no '=', spaces or control characters", name)
	}
	return nil
}

func (d *decoder) command(n *yaml.Node, path string) Command {
	switch {
	case n.Kind == yaml.SequenceNode:
		if len(n.Content) == 0 {
			d.errorf(n, path, "is an empty list; give the program and its arguments")
			return Command{}
		}
		args := make([]string, 0, len(n.Content))
		for i, item := range n.Content {
			item = resolve(item)
			p := fmt.Sprintf("%s[%d]", path, i)
			switch {
			case item.Kind != yaml.ScalarNode || item.ShortTag() == "!!null":
				d.errorf(item, p, "must be a string, got %s", kindName(item))
			case strings.TrimSpace(item.Value) == "" && i == 0:
				d.errorf(item, p, "the program name is empty")
			case strings.TrimSpace(item.Value) == "":
				d.errorf(item, p, "is blank; remove it, or write the argument it stands for")
			case d.noNUL(item, p, item.Value):
				args = append(args, item.Value)
			}
		}
		return Command{Args: args}
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str":
		if !d.noNUL(n, path, n.Value) {
			return Command{}
		}
		cmd, err := parseCommandLine(n.Value)
		if err != nil {
			d.errorf(n, path, "%v; a command is a program and its arguments, split like a shell", err)
		}
		return cmd
	}
	d.errorf(n, path, "must be a string (split like a shell) or a list (taken as argv), got %s", kindName(n))
	return Command{}
}

func (d *decoder) workers(n *yaml.Node, path string, def int) int {
	const allowed = "must be a whole number from 1 to 100000"
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" {
		v, err := strconv.ParseInt(n.Value, 0, 64)
		if err == nil && v >= 1 && v <= MaxWorkers {
			return int(v)
		}
		d.errorf(n, path, "%s, got %s", allowed, n.Value)
		return def
	}
	d.errorf(n, path, "%s, got %s", allowed, kindName(n))
	return def
}

func (d *decoder) signal(n *yaml.Node, path string, def unix.Signal) unix.Signal {
	const allowed = "a signal name such as SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2 or SIGKILL"
	s, ok := d.str(n, path)
	if !ok {
		return def
	}
	name := strings.ToUpper(strings.TrimSpace(s))
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	sig := unix.SignalNum(name)
	if sig == 0 {
		d.errorf(n, path, "unknown signal %q; use %s", s, allowed)
		return def
	}
	return sig
}

// boolean reads true/false (and YAML 1.1's yes/no, on/off).
func (d *decoder) boolean(n *yaml.Node, path string, def bool) bool {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!bool" {
		switch strings.ToLower(n.Value) {
		case "true", "yes", "on", "y":
			return true
		}
		return false
	}
	d.errorf(n, path, "must be true or false, got %s", kindName(n))
	return def
}

func (d *decoder) logOptions(n *yaml.Node, path string, out *LogOptions) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "must be a mapping such as {respawns: false}, got %s", kindName(n))
		return
	}
	for _, p := range d.pairs(n, path) {
		switch p.key.Value {
		case "respawns":
			out.Respawns = d.boolean(p.value, join(path, "respawns"), out.Respawns)
		default:
			d.unknownKey(p.key, path, logKeys)
		}
	}
}
