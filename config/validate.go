package config

import (
	"fmt"
	"net"
	"strings"

	"gopkg.in/yaml.v3"
)

// crossCheck validates what spans services: `after` and shared addresses.
func (d *decoder) crossCheck(sources []*serviceSource) {
	byName := map[string]*serviceSource{}
	for _, s := range sources {
		byName[s.svc.Name] = s
	}
	for _, s := range sources {
		for i, dep := range s.svc.After {
			switch {
			case byName[dep] == nil:
				msg := fmt.Sprintf("names %q, which is not a service", dep)
				if guess := Closest(dep, names(sources)); guess != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", guess)
				}
				d.errorf(s.afterNodes[i], "services."+s.svc.Name+".after", "%s; services: %s", msg, strings.Join(names(sources), ", "))
			case dep == s.svc.Name:
				d.errorf(s.afterNodes[i], "services."+s.svc.Name+".after", "a service cannot start after itself")
			case s.svc.AfterWhen[dep] == AfterCompleted && byName[dep].svc.Restart == RestartAlways:
				d.errorf(s.afterNodes[i], "services."+s.svc.Name+".after."+dep, "waits for %s to complete, but %s has restart: always and never completes; give %s restart: never (a task that runs once) or on-failure, or wait for it to be ready", dep, dep, dep)
			}
		}
	}
	d.checkCycles(sources, byName)
	d.checkAddresses(sources)
}

func names(sources []*serviceSource) []string {
	out := make([]string, len(sources))
	for i, s := range sources {
		out[i] = s.svc.Name
	}
	return out
}

// checkCycles reports each `after` cycle once, naming it in full.
func (d *decoder) checkCycles(sources []*serviceSource, byName map[string]*serviceSource) {
	const (
		unvisited = iota
		onStack
		done
	)
	state := map[string]int{}
	var stack []string
	var visit func(name string)
	visit = func(name string) {
		state[name] = onStack
		stack = append(stack, name)
		src := byName[name]
		for i, dep := range src.svc.After {
			if byName[dep] == nil || dep == name {
				continue // reported already
			}
			switch state[dep] {
			case unvisited:
				visit(dep)
			case onStack:
				start := 0
				for j, n := range stack {
					if n == dep {
						start = j
					}
				}
				cycle := append(append([]string{}, stack[start:]...), dep)
				d.errorf(src.afterNodes[i], "services."+name+".after", "makes a cycle: %s; `after` must form no loop", strings.Join(cycle, " -> "))
			}
		}
		stack = stack[:len(stack)-1]
		state[name] = done
	}
	for _, s := range sources {
		if state[s.svc.Name] == unvisited {
			visit(s.svc.Name)
		}
	}
}

type claimed struct {
	service string
	host    string
	node    *yaml.Node
}

// checkAddresses refuses two services on one address: the second could
// never open its socket. Hosts are compared as they bind: localhost is
// 127.0.0.1, ::ffff:127.0.0.1 is too, and every interface overlaps every
// host of its family on the port.
func (d *decoder) checkAddresses(sources []*serviceSource) {
	unixPaths := map[string]claimed{}
	ports := map[string][]claimed{}
	if m := d.metrics; m != nil {
		if host, port, _ := net.SplitHostPort(m.Address); port != "0" {
			ports[port] = append(ports[port], claimed{"", host, d.metricsNode})
		}
	}
	for _, s := range sources {
		addrs, nodes, paths := s.svc.Listen, s.listenNodes, []string{}
		for range addrs {
			paths = append(paths, "services."+s.svc.Name+".listen")
		}
		if s.svc.Proxy != nil {
			addrs = append(append([]Listen(nil), addrs...), s.svc.Proxy.Address)
			nodes = append(append([]*yaml.Node(nil), nodes...), s.proxyNode)
			paths = append(paths, "services."+s.svc.Name+".proxy")
		}
		for i, l := range addrs {
			n, path := nodes[i], paths[i]
			if l.Network == "unix" {
				if prev, ok := unixPaths[l.Address]; ok {
					d.errorf(n, path, "%s is already the address of %s (line %d); each address belongs to one service", l, describe(prev.service, s.svc.Name), prev.node.Line)
					continue
				}
				unixPaths[l.Address] = claimed{s.svc.Name, "", n}
				continue
			}
			host, port, _ := net.SplitHostPort(l.Address)
			if port == "0" {
				continue // the kernel picks a free port for each
			}
			conflict := false
			for _, prev := range ports[port] {
				if hostsOverlap(prev.host, host) {
					d.errorf(n, path, "%s overlaps %s of %s (line %d); each address belongs to one service", l, net.JoinHostPort(prev.host, port), describe(prev.service, s.svc.Name), prev.node.Line)
					conflict = true
					break
				}
			}
			if !conflict {
				ports[port] = append(ports[port], claimed{s.svc.Name, host, n})
			}
		}
	}
}

func describe(owner, self string) string {
	if owner == "" {
		return "the metrics endpoint"
	}
	if owner == self {
		return "this service"
	}
	return "service " + owner
}
