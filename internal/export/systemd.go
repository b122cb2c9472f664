// Package export writes what other supervisors need to run a recluster
// stack: for systemd, a notify service for recluster itself and one
// socket unit per address the stack serves, so that systemd holds the
// sockets and a restart of recluster refuses no connection.
package export

import (
	"fmt"
	"math"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/recluster/recluster/config"
)

// Unit is one systemd unit file.
type Unit struct {
	Name string // the file name, such as app.service
	Text string
}

// SystemdOptions say what the units run.
type SystemdOptions struct {
	// Name is the stack's unit name; default the config file's folder.
	Name string
	// Bin is the absolute path of the recluster binary.
	Bin string
}

// stopMargin is added to the largest stop timeout: recluster stops its
// services in dependency order and needs a moment of its own.
const stopMargin = 10 * time.Second

var unsafeUnitChars = regexp.MustCompile(`[^A-Za-z0-9_.\-]+`)

// Systemd returns the units for cfg: NAME.service first, then one
// NAME-SOCKET.socket per listen and proxy address.
func Systemd(cfg *config.Config, o SystemdOptions) ([]Unit, error) {
	if cfg.Procfile {
		return nil, fmt.Errorf("export systemd needs a recluster.yml: a Procfile's ports depend on --port; `recluster check --print` shows the YAML to start from")
	}
	if !filepath.IsAbs(o.Bin) {
		return nil, fmt.Errorf("the recluster binary must be an absolute path, got %q", o.Bin)
	}
	name := o.Name
	if name == "" {
		name = filepath.Base(cfg.Dir)
	}
	name = strings.Trim(unsafeUnitChars.ReplaceAllString(name, "-"), "-")
	if name == "" {
		return nil, fmt.Errorf("no usable unit name in %q: give one with --name", o.Name)
	}

	if err := unitSafe("the config's path", cfg.Path); err != nil {
		return nil, err
	}
	if err := unitSafe("the recluster binary's path", o.Bin); err != nil {
		return nil, err
	}
	sockets, err := socketUnits(cfg, name)
	if err != nil {
		return nil, err
	}

	var deps strings.Builder
	for _, s := range sockets {
		fmt.Fprintf(&deps, "Requires=%s\nAfter=%s\n", s.Name, s.Name)
	}
	stopSec := "infinity"
	if stop := sat(longestStop(cfg), stopMargin); stop < maxStopSec*time.Second {
		stopSec = fmt.Sprint(int64((stop + time.Second - 1) / time.Second))
	}
	service := Unit{Name: name + ".service", Text: fmt.Sprintf(`# Written by recluster export systemd from %s.
# systemctl reload %s reloads every service with zero downtime.
[Unit]
Description=recluster %s (%s)
After=network.target
%s
[Service]
Type=notify
NotifyAccess=main
ExecStart=%s up -f %s
ExecReload=%s reload -f %s
WorkingDirectory=%s
KillMode=mixed
TimeoutStopSec=%s
Restart=on-failure

[Install]
WantedBy=multi-user.target
`, cfg.Path, name, name, specifiers(cfg.Path), deps.String(), quote(o.Bin), quote(cfg.Path), quote(o.Bin), quote(cfg.Path), specifiers(cfg.Dir), stopSec)}
	return append([]Unit{service}, sockets...), nil
}

// socketUnits makes NAME-SOCKET.socket for each listen and proxy address
// of cfg, in the order of the file.
func socketUnits(cfg *config.Config, name string) ([]Unit, error) {
	var sockets []Unit
	seen := map[string]bool{}
	for _, svc := range cfg.Services {
		type addr struct {
			l     config.Listen
			proxy bool
		}
		var addrs []addr
		for _, l := range svc.Listen {
			addrs = append(addrs, addr{l, false})
		}
		if svc.Proxy != nil {
			addrs = append(addrs, addr{svc.Proxy.Address, true})
		}
		for _, a := range addrs {
			fdName := a.l.Name // a listen entry's name, or SERVICE-proxy
			// Entries may share a name (two listen addresses of one
			// service): their units are numbered; the fd name stays, and
			// recluster tells them apart by address.
			base := name + "-" + unsafeUnitChars.ReplaceAllString(fdName, "-")
			unit := base + ".socket"
			for i := 2; seen[unit]; i++ {
				unit = fmt.Sprintf("%s-%d.socket", base, i)
			}
			seen[unit] = true
			stream, err := listenStream(a.l)
			if err == nil {
				err = unitSafe("the address "+a.l.String(), stream)
			}
			if err != nil {
				return nil, fmt.Errorf("service %s: %w", svc.Name, err)
			}
			what := "listen"
			if a.proxy {
				what = "proxy"
			}
			sockets = append(sockets, Unit{Name: unit, Text: fmt.Sprintf(`# Written by recluster export systemd from %s.
# Held by systemd, so connections wait here while recluster restarts.
[Unit]
Description=recluster %s: %s %s %s

[Socket]
ListenStream=%s
FileDescriptorName=%s
Service=%s.service
Backlog=4096

[Install]
WantedBy=sockets.target
`, cfg.Path, name, svc.Name, what, specifiers(a.l.String()), specifiers(stream), fdName, name)})
		}
	}
	return sockets, nil
}

// listenStream is the address as ListenStream= takes it.
func listenStream(l config.Listen) (string, error) {
	if l.Network == "unix" {
		return l.Address, nil
	}
	host, port, _ := strings.Cut(l.Address, "]:")
	if !strings.HasPrefix(l.Address, "[") {
		i := strings.LastIndexByte(l.Address, ':')
		host, port = l.Address[:i], l.Address[i+1:]
	} else {
		host = host[1:]
	}
	if port == "0" {
		return "", fmt.Errorf("%s: a socket unit needs a fixed port, not 0", l)
	}
	switch host {
	case "":
		return port, nil // every address, both families, as recluster binds ":port"
	case "localhost":
		return "127.0.0.1:" + port, nil
	}
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + port, nil
	}
	return host + ":" + port, nil
}

// quote quotes a path for an Exec line when it needs it.
func quote(s string) string {
	if strings.ContainsAny(s, " \t\"'\\$%;") {
		return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, `$`, `$$`, `%`, `%%`).Replace(s) + `"`
	}
	return s
}

// maxStopSec is the longest TimeoutStopSec written as a number; past it
// (a timeout of years) the unit says infinity rather than overflow.
const maxStopSec = 1 << 31

// longestStop is the longest a stop of the whole stack can take:
// services stop in reverse `after` order, so a chain of them stops one
// after the other, each taking its drain (behind a proxy) and its
// timeout.
func longestStop(cfg *config.Config) time.Duration {
	memo := map[string]time.Duration{}
	var chain func(name string) time.Duration
	chain = func(name string) time.Duration {
		if d, ok := memo[name]; ok {
			return d
		}
		memo[name] = 0 // config refuses cycles; this only stops one
		svc := cfg.Service(name)
		if svc == nil {
			return 0
		}
		own := sat(svc.Timeout, 0)
		if svc.Proxy != nil {
			own = sat(own, svc.DrainTimeout)
		}
		var after time.Duration
		for _, dep := range svc.After {
			after = max(after, chain(dep))
		}
		memo[name] = sat(own, after)
		return memo[name]
	}
	var longest time.Duration
	for _, svc := range cfg.Services {
		longest = max(longest, chain(svc.Name))
	}
	return longest
}

// sat adds durations, stopping at the largest rather than wrapping.
func sat(a, b time.Duration) time.Duration {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// unitSafe refuses what no unit file can hold: a line break or another
// control character in a value would end the line and start another
// directive (an ExecStartPre= of the path's choosing).
func unitSafe(what, s string) error {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("%s %q holds a control character (%U), which a systemd unit cannot hold safely; move or rename it", what, s, r)
		}
	}
	return nil
}

// specifiers escapes systemd's % specifiers (systemd.unit(7)): %h, %n
// and the like in a path would otherwise be replaced, silently making it
// another path.
func specifiers(s string) string { return strings.ReplaceAll(s, "%", "%%") }
