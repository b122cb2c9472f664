package config

import (
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Decoding the addresses a service serves: its own sockets (listen) and
// the one its proxy holds.

// listen reads one address or a list of them.
func (d *decoder) listen(n *yaml.Node, path, service string) ([]Listen, []*yaml.Node) {
	if n.Kind == yaml.SequenceNode && len(n.Content) == 0 {
		d.errorf(n, path, "is an empty list; give at least one address or leave listen out")
	}
	var out []Listen
	var nodes []*yaml.Node
	d.oneOrList(n, path, func(item *yaml.Node, p string) {
		if item.Kind != yaml.ScalarNode || (item.ShortTag() != "!!str" && item.ShortTag() != "!!int") {
			d.errorf(item, p, "must be a port, \"host:port\", \"[v6]:port\" or \"unix:/path\", got %s", kindName(item))
			return
		}
		if !d.noNUL(item, p, item.Value) {
			return
		}
		l, err := parseListen(item.Value, service, d.dir)
		if err != nil {
			d.errorf(item, p, "%v", err)
			return
		}
		out = append(out, l)
		nodes = append(nodes, item)
	})
	return out, nodes
}

// proxy reads `proxy: 8080`, `proxy: "host:port"` or
// `proxy: {address: …, protocol: tcp|http, proxyProtocol: 1|2}`.
func (d *decoder) proxy(n *yaml.Node, path, service string) (*Proxy, *yaml.Node) {
	const allowed = `a port (8080), "host:port", or {address: 8080, protocol: tcp|http, proxyProtocol: 1|2}`
	p := &Proxy{Protocol: ProtocolTCP, HeaderTimeout: DefaultHeaderTimeout, MaxHeaderBytes: DefaultMaxHeaderBytes}
	idleSet := false
	addrNode := n
	switch n.Kind {
	case yaml.ScalarNode:
	case yaml.MappingNode:
		addrNode = nil
		var ppNode *yaml.Node
		for _, kv := range d.pairs(n, path) {
			k, v := kv.key.Value, kv.value
			switch k {
			case "address":
				addrNode = v
			case "protocol":
				if s, ok := d.str(v, join(path, k)); ok {
					if s != ProtocolTCP && s != ProtocolHTTP {
						d.errorf(v, join(path, k), "unknown protocol %q; allowed: tcp (connections move whole), http (each request goes to a ready worker)", s)
					} else {
						p.Protocol = s
					}
				}
			case "proxyProtocol":
				ppNode = v
				p.ProxyProtocol = d.proxyProtocol(v, join(path, k))
			case "maxConnections":
				p.MaxConnections = d.maxConnections(v, join(path, k))
			case "maxHeaderBytes":
				p.MaxHeaderBytes = d.headerBytes(v, join(path, k))
			case "headerTimeout":
				p.HeaderTimeout = d.duration(v, join(path, k), false, p.HeaderTimeout)
			case "idleTimeout":
				idleSet = true
				p.IdleTimeout = d.duration(v, join(path, k), true, p.IdleTimeout)
			default:
				d.unknownKey(kv.key, path, proxyKeys)
			}
		}
		if addrNode == nil {
			d.errorf(n, path, "has no address; give one: %s", allowed)
			return nil, n
		}
		if p.ProxyProtocol > 0 && p.Protocol == ProtocolHTTP {
			d.errorf(ppNode, join(path, "proxyProtocol"), "is for protocol tcp; in http mode the proxy sets X-Forwarded-For and X-Forwarded-Proto instead")
		}
	default:
		d.errorf(n, path, "must be %s, got %s", allowed, kindName(n))
		return nil, n
	}
	if addrNode.Kind != yaml.ScalarNode || (addrNode.ShortTag() != "!!str" && addrNode.ShortTag() != "!!int") {
		d.errorf(addrNode, path, "must be %s, got %s", allowed, kindName(addrNode))
		return nil, addrNode
	}
	if !d.noNUL(addrNode, path, addrNode.Value) {
		return nil, addrNode
	}
	l, err := parseListen(addrNode.Value, service, d.dir)
	switch {
	case err != nil:
		d.errorf(addrNode, path, "%v", err)
		return nil, addrNode
	case l.Network != "tcp":
		d.errorf(addrNode, path, "%s is not a tcp address; the proxy serves tcp or http on a port: %s", l, allowed)
		return nil, addrNode
	case l.Name != service:
		d.errorf(addrNode, path, "takes no socket name; a name is for the fds of listen")
		return nil, addrNode
	}
	if !idleSet && p.Protocol == ProtocolHTTP {
		p.IdleTimeout = DefaultProxyIdleTimeout
	}
	// Its fd name, under socket activation of recluster itself (export
	// systemd names its socket unit so); workers never see this socket.
	l.Name = service + ProxySocketSuffix
	p.Address = l
	return p, addrNode
}

func (d *decoder) proxyProtocol(n *yaml.Node, path string) int {
	const allowed = "true (version 1), 1 or 2, or false"
	if n.Kind == yaml.ScalarNode {
		switch strings.ToLower(n.Value) {
		case "true", "1", "v1":
			return 1
		case "2", "v2":
			return 2
		case "false", "0":
			return 0
		}
	}
	d.errorf(n, path, "must be %s, got %s", allowed, kindName(n))
	return 0
}

// maxConnections reads a proxy's bound on open client connections.
func (d *decoder) maxConnections(n *yaml.Node, path string) int {
	const allowed = "a whole number of connections from 1 to 1000000"
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
		d.errorf(n, path, "must be %s, got %s", allowed, kindName(n))
		return 0
	}
	v, err := strconv.Atoi(n.Value)
	if err != nil || v < 1 || v > 1000000 {
		d.errorf(n, path, "must be %s, got %q", allowed, n.Value)
		return 0
	}
	return v
}

// headerBytes reads a proxy's bound on an http request's header.
func (d *decoder) headerBytes(n *yaml.Node, path string) int {
	const allowed = "a size from 1KiB to 16MiB, such as 64KiB or 32768 (a bare number is bytes)"
	v, ok := d.size(n, path, allowed, 1<<10, 16<<20)
	if !ok {
		return DefaultMaxHeaderBytes
	}
	return int(v)
}
