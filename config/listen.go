package config

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Listen is one socket the service's workers inherit.
type Listen struct {
	// Name is the fd's name in LISTEN_FDNAMES; the service name by default.
	Name string
	// Network is "tcp" or "unix".
	Network string
	// Address is "host:port" for tcp (host empty for every interface) and an
	// absolute path for unix.
	Address string
}

func (l Listen) String() string {
	if l.Network == "unix" {
		return "unix:" + l.Address
	}
	return l.Address
}

func parseListen(s, service, dir string) (Listen, error) {
	const allowed = `use a port (8080), "host:port", "[v6]:port" or "unix:/path", each optionally "name=" first`
	l := Listen{Name: service}
	if name, rest, ok := strings.Cut(s, "="); ok && !strings.HasPrefix(s, "unix:") {
		if !isFDName(name) {
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

// bindHost is the address a tcp host binds as: localhost is 127.0.0.1 and
// an IPv4-mapped IPv6 address is its IPv4 one, as the runner opens them;
// "" is every interface of both families.
func bindHost(host string) string {
	if host == "localhost" {
		return "127.0.0.1"
	}
	if ip := net.ParseIP(host); ip != nil {
		if v4 := ip.To4(); v4 != nil {
			return v4.String()
		}
		return ip.String()
	}
	return host
}

// hostsOverlap reports whether two hosts on one port would clash in bind:
// the same address, or one of them every interface of the other's family.
func hostsOverlap(a, b string) bool {
	a, b = bindHost(a), bindHost(b)
	isV4 := func(h string) bool { return strings.Contains(h, ".") }
	switch {
	case a == "" || b == "" || a == b:
		return true
	case a == "0.0.0.0":
		return isV4(b)
	case b == "0.0.0.0":
		return isV4(a)
	case a == "::":
		return !isV4(b)
	case b == "::":
		return !isV4(a)
	}
	return false
}

// ProxySocketSuffix makes a proxy address's fd name: SERVICE-proxy.
const ProxySocketSuffix = "-proxy"

// Proxy is a service's proxied public address. It is comparable, so it
// can key the proxy serving it.
type Proxy struct {
	// Address is a tcp address, as a listen entry.
	Address Listen
	// Protocol is ProtocolTCP (connections move whole) or ProtocolHTTP
	// (each request goes to a worker).
	Protocol string
	// ProxyProtocol is 0, or the version (1 or 2) of the PROXY protocol
	// header that tells a tcp worker the client's address.
	ProxyProtocol int
	// MaxConnections bounds the client connections open at once; 0 is
	// recluster's default, a share of its descriptor limit.
	MaxConnections int
	// MaxHeaderBytes bounds an http request's header (0: the default,
	// DefaultMaxHeaderBytes); HeaderTimeout the time to read it.
	MaxHeaderBytes int
	HeaderTimeout  time.Duration
	// IdleTimeout closes an idle client connection: between requests in
	// http mode (default DefaultProxyIdleTimeout), with no byte moving
	// in tcp mode (0, the default there, never).
	IdleTimeout time.Duration
}

// newProxy is a proxy of addr with every default.
func newProxy(addr Listen, protocol string) *Proxy {
	p := &Proxy{Address: addr, Protocol: protocol, MaxHeaderBytes: DefaultMaxHeaderBytes, HeaderTimeout: DefaultHeaderTimeout}
	if protocol == ProtocolHTTP {
		p.IdleTimeout = DefaultProxyIdleTimeout
	}
	return p
}

// Defaults of a proxy's bounds.
const (
	DefaultMaxHeaderBytes   = 64 << 10
	DefaultHeaderTimeout    = 10 * time.Second
	DefaultProxyIdleTimeout = 2 * time.Minute
)

const (
	ProtocolTCP  = "tcp"
	ProtocolHTTP = "http"
)

func (p Proxy) String() string { return p.Protocol + "://" + p.Address.String() }

// isFDName says whether name may be a socket's LISTEN_FDNAMES entry: 1 to
// 255 printable ASCII characters but ':', as systemd allows. A loop, not
// a regular expression: `{1,255}` compiles to 255 copies of the class,
// which every start of the binary paid for (1 ms and 200 KB at init).
func isFDName(name string) bool {
	if len(name) < 1 || len(name) > 255 {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 0x21 || c > 0x7e || c == ':' {
			return false
		}
	}
	return true
}
