package config

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/joho/godotenv"
	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"
)

var (
	topKeys     = []string{"env", "envFile", "services"}
	serviceKeys = []string{"command", "dir", "env", "envFile", "workers", "listen", "readyWhen",
		"readyTimeout", "timeout", "respawn", "backoff", "stopSignal", "after", "log"}
	logKeys      = []string{"respawns"}
	serviceName  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)
	envName      = regexp.MustCompile(`^[^=\x00]+$`)
	fdName       = regexp.MustCompile(`^[\x21-\x39\x3b-\x7e]{1,255}$`) // printable ASCII but ':', as systemd allows
	maxPairs     = 10000                                               // a guard against alias bombs through merge keys
	yamlLineInfo = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
)

// decoder walks a yaml.Node tree by hand so that every error keeps its line
// and column and none stops the walk: the user sees all problems at once.
type decoder struct {
	file string
	dir  string
	opts Options
	errs errorList
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	line, col := 1, 1
	if n != nil && n.Line > 0 {
		line, col = n.Line, n.Column
	}
	d.errs.add(&FieldError{File: d.file, Line: line, Col: col, Path: path, Msg: fmt.Sprintf(format, args...)})
}

type pair struct{ key, value *yaml.Node }

func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

// pairs returns a mapping's entries with YAML merge keys (<<) expanded,
// reporting duplicate keys. Explicit keys override merged ones.
func (d *decoder) pairs(n *yaml.Node, path string) []pair {
	var out []pair
	seen := map[string]bool{}
	var merged []pair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, path, "keys must be plain names")
			continue
		}
		if k.Value == "<<" && k.Tag == "!!merge" {
			merged = append(merged, d.mergeSources(v, path)...)
			continue
		}
		if seen[k.Value] {
			d.errorf(k, join(path, k.Value), "is set twice; keep one")
			continue
		}
		seen[k.Value] = true
		out = append(out, pair{k, v})
	}
	for _, p := range merged {
		if !seen[p.key.Value] {
			seen[p.key.Value] = true
			out = append(out, p)
		}
	}
	return out
}

func (d *decoder) mergeSources(v *yaml.Node, path string) []pair {
	var out []pair
	switch v.Kind {
	case yaml.MappingNode:
		out = d.pairs(v, path)
	case yaml.SequenceNode:
		for _, item := range v.Content {
			if item = resolve(item); item.Kind == yaml.MappingNode {
				out = append(out, d.pairs(item, path)...)
			} else {
				d.errorf(item, path, "a merge (<<) takes a mapping or a list of mappings")
			}
			if len(out) > maxPairs {
				d.errorf(v, path, "merges expand to more than %d keys", maxPairs)
				return nil
			}
		}
	default:
		d.errorf(v, path, "a merge (<<) takes a mapping or a list of mappings")
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (d *decoder) unknownKey(k *yaml.Node, path string, allowed []string) {
	msg := fmt.Sprintf("unknown key %q", k.Value)
	if guess := closest(k.Value, allowed); guess != "" {
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
	case "!!int":
		return "a number"
	case "!!float":
		return "a number"
	case "!!bool":
		return "true/false"
	}
	return fmt.Sprintf("%q", n.Value)
}

func (d *decoder) str(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		d.errorf(n, path, "must be a string, got %s", kindName(n))
		return "", false
	}
	return n.Value, true
}

// strings accepts one string or a list of strings.
func (d *decoder) strs(n *yaml.Node, path string) ([]string, []*yaml.Node) {
	items := []*yaml.Node{n}
	if n.Kind == yaml.SequenceNode {
		items = nil
		for _, item := range n.Content {
			items = append(items, resolve(item))
		}
	}
	var out []string
	var nodes []*yaml.Node
	for i, item := range items {
		p := path
		if n.Kind == yaml.SequenceNode {
			p = fmt.Sprintf("%s[%d]", path, i)
		}
		if s, ok := d.str(item, p); ok {
			out = append(out, s)
			nodes = append(nodes, item)
		}
	}
	return out, nodes
}

func (d *decoder) duration(n *yaml.Node, path string, allowZero bool) (time.Duration, bool) {
	const allowed = `a Go duration ("250ms", "10s", "1h") or a number of seconds (0.3)`
	if n.Kind != yaml.ScalarNode || n.ShortTag() == "!!null" || n.ShortTag() == "!!bool" {
		d.errorf(n, path, "must be %s, got %s", allowed, kindName(n))
		return 0, false
	}
	v, err := parseDuration(n.Value)
	switch {
	case err != nil:
		d.errorf(n, path, "%q is not a duration; use %s", n.Value, allowed)
		return 0, false
	case v < 0:
		d.errorf(n, path, "must not be negative, got %q", n.Value)
		return 0, false
	case v == 0 && !allowZero:
		d.errorf(n, path, "must be greater than 0, got %q", n.Value)
		return 0, false
	}
	return v, true
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
	for _, p := range d.pairs(n, path) {
		name := p.key.Value
		if !envName.MatchString(name) {
			d.errorf(p.key, path, "%q is not a valid variable name; a name is not empty and has no '='", name)
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
		out = append(out, EnvVar{Name: name, Value: value})
	}
	return out
}

// envFiles reads the env files named by n (string or list), relative to the
// config folder.
func (d *decoder) envFiles(n *yaml.Node, path string) []EnvVar {
	names, nodes := d.strs(n, path)
	var out []EnvVar
	for i, name := range names {
		vars, err := readEnvFile(d.abs(name))
		if err != nil {
			d.errorf(nodes[i], path, "%v; envFile names a file of NAME=value lines, relative to %s", err, d.dir)
			continue
		}
		out = append(out, vars...)
	}
	return out
}

func readEnvFile(path string) ([]EnvVar, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, unwrapPathError(err))
	}
	defer f.Close()
	m, err := godotenv.Parse(f)
	if err != nil {
		return nil, fmt.Errorf("cannot parse %s: %w", path, err)
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	out := make([]EnvVar, len(names))
	for i, k := range names {
		out[i] = EnvVar{Name: k, Value: m[k]}
	}
	return out, nil
}

func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

func (d *decoder) abs(p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(d.dir, p)
}

// mergeEnv applies layers in order; a later layer wins. The result is
// sorted by name so that output and tests are stable.
func mergeEnv(layers ...[]EnvVar) []EnvVar {
	m := map[string]string{}
	for _, layer := range layers {
		for _, v := range layer {
			m[v.Name] = v.Value
		}
	}
	out := make([]EnvVar, 0, len(m))
	for k, v := range m {
		out = append(out, EnvVar{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// serviceSource keeps the nodes that cross-service checks point at.
type serviceSource struct {
	svc        *Service
	node       *yaml.Node // the name key
	afterNodes []*yaml.Node
	listenNode []*yaml.Node
}

func (o Options) parseYAML(path string, data []byte) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	d := &decoder{file: path, dir: filepath.Dir(abs), opts: o}
	cfg := &Config{Path: abs, Dir: d.dir}

	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		d.errs.add(yamlSyntaxError(path, data, err))
		return nil, d.errs.err()
	}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		d.errorf(nil, "", "the file is empty; it needs a services: mapping with at least one service")
		return nil, d.errs.err()
	}
	root := resolve(doc.Content[0])
	if root.Kind != yaml.MappingNode {
		d.errorf(root, "", "the file must be a mapping with a services: key, got %s", kindName(root))
		return nil, d.errs.err()
	}

	var globalEnv, globalFiles []EnvVar
	var servicesNode *yaml.Node
	envFileSet := false
	for _, p := range d.pairs(root, "") {
		switch p.key.Value {
		case "env":
			globalEnv = d.envMap(p.value, "env")
		case "envFile":
			envFileSet = true
			globalFiles = d.envFiles(p.value, "envFile")
		case "services":
			servicesNode = p.value
		default:
			if strings.HasPrefix(p.key.Value, "x-") {
				continue // extension keys hold anchors for merges, as in Compose files
			}
			d.unknownKey(p.key, "", topKeys)
		}
	}
	if !envFileSet {
		// ".env" next to the file is read when present, as foreman does.
		if vars, err := readEnvFile(filepath.Join(d.dir, ".env")); err == nil {
			globalFiles = vars
		} else if !errors.Is(err, fs.ErrNotExist) {
			d.errorf(root, "", "%v; fix or remove .env next to the config file", err)
		}
	}

	var sources []*serviceSource
	switch {
	case servicesNode == nil:
		d.errorf(root, "", "no services: key; add a services: mapping with at least one service")
	case servicesNode.Kind != yaml.MappingNode || len(servicesNode.Content) == 0:
		if servicesNode.Kind == yaml.MappingNode || servicesNode.ShortTag() == "!!null" {
			d.errorf(servicesNode, "services", "has no services; add at least one, such as `web: {command: ./server}`")
		} else {
			d.errorf(servicesNode, "services", "must be a mapping of service names, got %s", kindName(servicesNode))
		}
	default:
		for _, p := range d.pairs(servicesNode, "services") {
			src := d.service(p.key, p.value, globalEnv, globalFiles)
			if src != nil {
				sources = append(sources, src)
				cfg.Services = append(cfg.Services, src.svc)
			}
		}
	}
	d.crossCheck(sources)
	if err := d.errs.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func yamlSyntaxError(file string, data []byte, err error) *FieldError {
	msg := strings.TrimSpace(err.Error())
	line := 1
	if m := yamlLineInfo.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
	}
	// yaml.v3 names the line where the enclosing block starts, not the line
	// at fault. The first prefix of the file that fails the same way ends
	// at the line at fault.
	lines := strings.SplitAfter(string(data), "\n")
	col := 1
	if len(lines) <= 2000 {
		var probe yaml.Node
		for n := line; n <= len(lines); n++ {
			perr := yaml.Unmarshal([]byte(strings.Join(lines[:n], "")), &probe)
			if perr != nil && strings.HasSuffix(perr.Error(), msg) {
				if n != line {
					msg += fmt.Sprintf(" (in the block that starts on line %d)", line)
					line = n
				}
				break
			}
		}
	}
	if line-1 < len(lines) {
		text := lines[line-1]
		col = len(text) - len(strings.TrimLeft(text, " \t")) + 1
	}
	return &FieldError{File: file, Line: line, Col: col, Msg: "invalid YAML: " + msg}
}

func (d *decoder) service(key, n *yaml.Node, globalEnv, globalFiles []EnvVar) *serviceSource {
	name := key.Value
	path := "services." + name
	if !serviceName.MatchString(name) || name == "recluster" {
		d.errorf(key, path, "%q is not a usable service name; use letters, digits, '-' and '_', starting with a letter or digit (and not \"recluster\", which names recluster's own log lines)", name)
	}
	svc := &Service{
		Name:         name,
		Dir:          d.dir,
		Workers:      d.opts.NumCPU,
		ReadyTimeout: DefaultReadyTimeout,
		Timeout:      d.opts.defaultTimeout(),
		Respawn:      DefaultRespawn,
		Backoff:      DefaultBackoff,
		StopSignal:   DefaultStopSignal,
		Log:          LogOptions{Respawns: true},
	}
	src := &serviceSource{svc: svc, node: key}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "must be a mapping with at least a command, got %s", kindName(n))
		return nil
	}
	var env, files []EnvVar
	hasCommand := false
	for _, p := range d.pairs(n, path) {
		k, v, fpath := p.key, p.value, join(path, p.key.Value)
		switch k.Value {
		case "command":
			hasCommand = true
			svc.Command = d.command(v, fpath)
		case "dir":
			if s, ok := d.str(v, fpath); ok {
				svc.Dir = d.abs(s)
				if st, err := os.Stat(svc.Dir); err != nil {
					d.errorf(v, fpath, "%s does not exist; dir is a folder, relative to %s", svc.Dir, d.dir)
				} else if !st.IsDir() {
					d.errorf(v, fpath, "%s is not a folder", svc.Dir)
				}
			}
		case "env":
			env = d.envMap(v, fpath)
		case "envFile":
			files = d.envFiles(v, fpath)
		case "workers":
			svc.Workers = d.workers(v, fpath)
		case "listen":
			svc.Listen, src.listenNode = d.listen(v, fpath, name)
		case "readyWhen":
			if s, ok := d.str(v, fpath); ok {
				switch rw := ReadyWhen(s); rw {
				case ReadyStarted, ReadyListening, ReadyNotified:
					svc.ReadyWhen = rw
				default:
					d.errorf(v, fpath, "unknown readyWhen %q; allowed: started, listening, ready", s)
				}
			}
		case "readyTimeout":
			svc.ReadyTimeout, _ = d.durationOr(v, fpath, false, svc.ReadyTimeout)
		case "timeout":
			svc.Timeout, _ = d.durationOr(v, fpath, true, svc.Timeout)
		case "respawn":
			svc.Respawn, _ = d.durationOr(v, fpath, true, svc.Respawn)
		case "backoff":
			svc.Backoff, _ = d.durationOr(v, fpath, true, svc.Backoff)
		case "stopSignal":
			svc.StopSignal = d.signal(v, fpath)
		case "after":
			svc.After, src.afterNodes = d.strs(v, fpath)
		case "log":
			d.logOptions(v, fpath, &svc.Log)
		default:
			d.unknownKey(k, path, serviceKeys)
		}
	}
	if !hasCommand {
		d.errorf(key, path, "has no command; add command: with a string (split like a shell) or a list (taken as argv)")
	}
	if svc.ReadyWhen == "" {
		svc.ReadyWhen = ReadyStarted
		if len(svc.Listen) > 0 {
			svc.ReadyWhen = ReadyListening
		}
	}
	if svc.Backoff > 0 && svc.Backoff < svc.Respawn {
		svc.Backoff = svc.Respawn
	}
	svc.Env = mergeEnv(globalEnv, globalFiles, files, env)
	return src
}

func (d *decoder) durationOr(n *yaml.Node, path string, allowZero bool, def time.Duration) (time.Duration, bool) {
	if v, ok := d.duration(n, path, allowZero); ok {
		return v, true
	}
	return def, false
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
			if item.Kind != yaml.ScalarNode || item.ShortTag() == "!!null" {
				d.errorf(item, fmt.Sprintf("%s[%d]", path, i), "must be a string, got %s", kindName(item))
				continue
			}
			args = append(args, item.Value)
		}
		if len(args) > 0 && args[0] == "" {
			d.errorf(n.Content[0], path+"[0]", "the program name is empty")
		}
		return Command{Args: args}
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str":
		cmd, err := parseCommandLine(n.Value)
		if err != nil {
			d.errorf(n, path, "%v; a command is a program and its arguments, split like a shell", err)
		}
		return cmd
	}
	d.errorf(n, path, "must be a string (split like a shell) or a list (taken as argv), got %s", kindName(n))
	return Command{}
}

func (d *decoder) workers(n *yaml.Node, path string) int {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" {
		v, err := strconv.ParseInt(n.Value, 0, 64)
		if err == nil && v >= 1 && v <= 100000 {
			return int(v)
		}
		d.errorf(n, path, "must be a whole number from 1 to 100000, got %s", n.Value)
		return d.opts.NumCPU
	}
	d.errorf(n, path, "must be a whole number from 1 to 100000, got %s", kindName(n))
	return d.opts.NumCPU
}

func (d *decoder) signal(n *yaml.Node, path string) syscall.Signal {
	const allowed = "a signal name such as SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2 or SIGKILL"
	s, ok := d.str(n, path)
	if !ok {
		return DefaultStopSignal
	}
	name := strings.ToUpper(strings.TrimSpace(s))
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	sig := unix.SignalNum(name)
	if sig == 0 {
		d.errorf(n, path, "unknown signal %q; use %s", s, allowed)
		return DefaultStopSignal
	}
	return sig
}

func (d *decoder) logOptions(n *yaml.Node, path string, out *LogOptions) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "must be a mapping such as {respawns: false}, got %s", kindName(n))
		return
	}
	for _, p := range d.pairs(n, path) {
		switch p.key.Value {
		case "respawns":
			if p.value.Kind == yaml.ScalarNode && p.value.ShortTag() == "!!bool" {
				out.Respawns, _ = strconv.ParseBool(strings.ToLower(p.value.Value))
				if v := strings.ToLower(p.value.Value); v == "yes" || v == "on" {
					out.Respawns = true
				}
			} else {
				d.errorf(p.value, join(path, "respawns"), "must be true or false, got %s", kindName(p.value))
			}
		default:
			d.unknownKey(p.key, path, logKeys)
		}
	}
}

// listen reads one address or a list of them.
func (d *decoder) listen(n *yaml.Node, path, service string) ([]Listen, []*yaml.Node) {
	items := []*yaml.Node{n}
	if n.Kind == yaml.SequenceNode {
		items = nil
		for _, item := range n.Content {
			items = append(items, resolve(item))
		}
		if len(items) == 0 {
			d.errorf(n, path, "is an empty list; give at least one address or leave listen out")
		}
	}
	var out []Listen
	var nodes []*yaml.Node
	for i, item := range items {
		p := path
		if n.Kind == yaml.SequenceNode {
			p = fmt.Sprintf("%s[%d]", path, i)
		}
		if item.Kind != yaml.ScalarNode || (item.ShortTag() != "!!str" && item.ShortTag() != "!!int") {
			d.errorf(item, p, "must be a port, \"host:port\", \"[v6]:port\" or \"unix:/path\", got %s", kindName(item))
			continue
		}
		l, err := parseListen(item.Value, service, d.dir)
		if err != nil {
			d.errorf(item, p, "%v", err)
			continue
		}
		out = append(out, l)
		nodes = append(nodes, item)
	}
	return out, nodes
}

func parseListen(s, service, dir string) (Listen, error) {
	const allowed = `use a port (8080), "host:port", "[v6]:port" or "unix:/path", each optionally "name=" first`
	l := Listen{Name: service}
	if name, rest, ok := strings.Cut(s, "="); ok && !strings.HasPrefix(s, "unix:") {
		if !fdName.MatchString(name) {
			return l, fmt.Errorf("%q is not a usable socket name; a name is 1 to 255 printable ASCII characters without ':' or spaces", name)
		}
		l.Name, s = name, rest
	}
	if path, ok := strings.CutPrefix(s, "unix:"); ok {
		if path == "" {
			return l, fmt.Errorf("unix: needs a path; %s", allowed)
		}
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		if len(path) > 107 {
			return l, fmt.Errorf("unix socket path %s is %d bytes, more than the 107 the system allows", path, len(path))
		}
		l.Network, l.Address = "unix", path
		return l, nil
	}
	host, port := "", s
	if strings.Contains(s, ":") {
		h, p, err := net.SplitHostPort(s)
		if err != nil {
			return l, fmt.Errorf("%q is not an address; %s", s, allowed)
		}
		host, port = h, p
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return l, fmt.Errorf("%q is not a port; a port is a number from 0 to 65535; %s", port, allowed)
	}
	if host != "" && host != "localhost" && net.ParseIP(host) == nil {
		return l, fmt.Errorf("%q is not an IP address; listen takes IP addresses or localhost, so that the socket is opened where you expect", host)
	}
	l.Network = "tcp"
	l.Address = net.JoinHostPort(host, strconv.Itoa(n))
	return l, nil
}
