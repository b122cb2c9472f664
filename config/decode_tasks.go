package config

import (
	"slices"
	"strconv"

	"gopkg.in/yaml.v3"
)

// Decoding what makes a service a task or a server: its restart policy,
// its crash-loop limit and what it waits for of the services it starts
// after.

// otherToolsKeys are the names other process managers (docker compose,
// process-compose, PM2, supervisord) give to recluster's keys, so that a
// key carried over is answered with ours.
var otherToolsKeys = map[string]string{
	"depends_on":     "after",
	"dependsOn":      "after",
	"replicas":       "workers",
	"instances":      "workers",
	"numprocs":       "workers",
	"scale":          "workers",
	"restart_policy": "restart",
	"autorestart":    "restart",
	"availability":   "restart",
	"working_dir":    "dir",
	"workingDir":     "dir",
	"cwd":            "dir",
	"directory":      "dir",
	"environment":    "env",
	"env_file":       "envFile",
	"stopsignal":     "stopSignal",
	"stop_signal":    "stopSignal",
	"kill_timeout":   "timeout",
	"min_uptime":     "minUptime",
	"max_restarts":   "startLimit",
	"startretries":   "startLimit",
	"ports":          "listen",
	"port":           "listen",
}

func contains(list []string, s string) bool { return slices.Contains(list, s) }

// after reads `after: [db, cache]` (each must be ready) or
// `after: {migrate: completed, db: ready, cache: started}`.
func (d *decoder) after(n *yaml.Node, path string) ([]string, map[string]string, []*yaml.Node) {
	when := map[string]string{}
	if n.Kind != yaml.MappingNode {
		names, nodes := d.strs(n, path)
		for _, name := range names {
			when[name] = AfterReady
		}
		return names, when, nodes
	}
	var names []string
	var nodes []*yaml.Node
	for _, p := range d.pairs(n, path) {
		name, kp := p.key.Value, join(path, p.key.Value)
		cond, ok := d.str(p.value, kp)
		if !ok {
			continue
		}
		switch cond {
		case AfterReady, AfterStarted, AfterCompleted:
		default:
			d.errorf(p.value, kp, "unknown condition %q; allowed: ready (every worker ready), started (its workers started), completed (it ran and exited 0, for a task)", cond)
			continue
		}
		names = append(names, name)
		nodes = append(nodes, p.key)
		when[name] = cond
	}
	return names, when, nodes
}

func (d *decoder) restart(n *yaml.Node, path, def string) string {
	s, ok := d.str(n, path)
	if !ok {
		return def
	}
	switch s {
	case RestartAlways, RestartOnFailure, RestartNever:
		return s
	case "no", "false":
		d.errorf(n, path, "unknown restart %q (for no restarts, recluster says never); allowed: always, on-failure, never", s)
	default:
		d.errorf(n, path, "unknown restart %q; allowed: always (whatever the exit), on-failure (after a non-zero exit or a signal), never (a task that runs once)", s)
	}
	return def
}

func (d *decoder) startLimit(n *yaml.Node, path string, def int) int {
	const allowed = "must be a whole number of exits in a row, 0 (never give up) to 1000000"
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" {
		if v, err := strconv.ParseInt(n.Value, 0, 64); err == nil && v >= 0 && v <= 1000000 {
			return int(v)
		}
		d.errorf(n, path, "%s, got %s", allowed, n.Value)
		return def
	}
	d.errorf(n, path, "%s, got %s", allowed, kindName(n))
	return def
}

// maxSurge is a number of workers, or "all" (0), the default.
func (d *decoder) maxSurge(n *yaml.Node, path string) int {
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!str" && n.Value == "all" {
		return 0
	}
	const allowed = `must be how many new workers a reload may run beyond workers at once, 1 to 100000, or "all" (the default: the whole new generation at once)`
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!int" {
		if v, err := strconv.ParseInt(n.Value, 0, 64); err == nil && v >= 1 && v <= MaxWorkers {
			return int(v)
		}
		d.errorf(n, path, "%s, got %s", allowed, n.Value)
		return 0
	}
	d.errorf(n, path, "%s, got %s", allowed, kindName(n))
	return 0
}
