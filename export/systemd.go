// Package export writes what other supervisors need to run a recluster
// stack: for systemd, a notify service for recluster itself and one
// socket unit per address the stack serves, so that systemd holds the
// sockets and a restart of recluster refuses no connection.
package export

import (
	"fmt"
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
		return nil, fmt.Errorf("export systemd needs a recluster.yml: a Procfile's ports depend on --port; `recluster config print` shows the YAML to start from")
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

	var sockets []Unit
	seen := map[string]bool{}
	stop := time.Duration(0)
	for _, svc := range cfg.Services {
		svcStop := svc.Timeout
		if svc.Proxy != nil {
			// A proxied worker drains before its stop signal.
			svcStop += svc.DrainTimeout
		}
		stop = max(stop, svcStop)
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
`, cfg.Path, name, svc.Name, what, a.l, stream, fdName, name)})
		}
	}

	var deps strings.Builder
	for _, s := range sockets {
		fmt.Fprintf(&deps, "Requires=%s\nAfter=%s\n", s.Name, s.Name)
	}
	stopSec := int((stop + stopMargin + time.Second - 1) / time.Second)
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
TimeoutStopSec=%d
Restart=on-failure

[Install]
WantedBy=multi-user.target
`, cfg.Path, name, name, cfg.Path, deps.String(), o.Bin, quote(cfg.Path), o.Bin, quote(cfg.Path), strings.ReplaceAll(cfg.Dir, "%", "%%"), stopSec)}
	return append([]Unit{service}, sockets...), nil
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
