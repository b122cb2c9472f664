package config

import (
	"fmt"
	"io"
	"strconv"

	"golang.org/x/sys/unix"
	"gopkg.in/yaml.v3"
)

type printedLog struct {
	Respawns bool `yaml:"respawns"`
}

type printedProxy struct {
	Address        string `yaml:"address"`
	Protocol       string `yaml:"protocol"`
	ProxyProtocol  int    `yaml:"proxyProtocol,omitempty"`
	MaxConnections any    `yaml:"maxConnections"`
	MaxHeaderBytes int    `yaml:"maxHeaderBytes"`
	HeaderTimeout  string `yaml:"headerTimeout"`
	IdleTimeout    string `yaml:"idleTimeout"`
}

type printedService struct {
	Command      any               `yaml:"command"`
	Dir          string            `yaml:"dir"`
	Env          map[string]string `yaml:"env,omitempty"`
	Workers      int               `yaml:"workers"`
	Listen       []string          `yaml:"listen,omitempty"`
	Proxy        *printedProxy     `yaml:"proxy,omitempty"`
	ReadyWhen    any               `yaml:"readyWhen"`
	Health       *printedProbe     `yaml:"health,omitempty"`
	MaxMemory    string            `yaml:"maxMemory,omitempty"`
	ReadyTimeout string            `yaml:"readyTimeout"`
	Timeout      string            `yaml:"timeout"`
	DrainTimeout string            `yaml:"drainTimeout,omitempty"`
	Respawn      string            `yaml:"respawn"`
	Backoff      string            `yaml:"backoff"`
	StopSignal   string            `yaml:"stopSignal"`
	Restart      string            `yaml:"restart"`
	StartLimit   int               `yaml:"startLimit"`
	MinUptime    string            `yaml:"minUptime"`
	MinReady     string            `yaml:"minReady"`
	MaxSurge     int               `yaml:"maxSurge,omitempty"`
	After        any               `yaml:"after,flow,omitempty"`
	Log          printedLog        `yaml:"log"`
	Build        any               `yaml:"build,omitempty"`
	BuildTimeout string            `yaml:"buildTimeout,omitempty"`
	Watch        *printedWatch     `yaml:"watch,omitempty"`
}

type printedProbe struct {
	HTTP     string `yaml:"http,omitempty"`
	TCP      string `yaml:"tcp,omitempty"`
	Exec     any    `yaml:"exec,omitempty"`
	Output   string `yaml:"output,omitempty"`
	Every    string `yaml:"every"`
	Timeout  string `yaml:"timeout"`
	Failures int    `yaml:"failures,omitempty"`
}

func printProbe(p *Probe) *printedProbe {
	if p == nil {
		return nil
	}
	pp := &printedProbe{HTTP: p.HTTP, TCP: p.TCP, Output: p.Output, Every: p.Every.String(), Timeout: p.Timeout.String(), Failures: p.Failures}
	if c := p.Exec; c != nil {
		pp.Exec = c.Line
		if c.Args != nil {
			pp.Exec = c.Args
		}
	}
	return pp
}

type printedWatch struct {
	Paths    []string `yaml:"paths,flow"`
	Ignore   []string `yaml:"ignore,flow,omitempty"`
	Debounce string   `yaml:"debounce"`
	Action   string   `yaml:"action"`
}

// Print writes cfg as YAML with every default filled in, so users can see
// what a default became. Env holds what the file adds (env, env files),
// not recluster's own environment.
func Print(w io.Writer, cfg *Config) error {
	services := &yaml.Node{Kind: yaml.MappingNode}
	for _, s := range cfg.Services {
		value, err := printService(s)
		if err != nil {
			return err
		}
		services.Content = append(services.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: s.Name}, value)
	}
	doc := &yaml.Node{Kind: yaml.MappingNode}
	if cfg.LogFile != "" {
		doc.Content = append(doc.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "logFile"}, &yaml.Node{Kind: yaml.ScalarNode, Value: cfg.LogFile})
	}
	if cfg.Metrics != "" {
		doc.Content = append(doc.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "metrics"}, &yaml.Node{Kind: yaml.ScalarNode, Value: cfg.Metrics})
	}
	doc.Content = append(doc.Content,
		&yaml.Node{Kind: yaml.ScalarNode, Value: "logSize"}, &yaml.Node{Kind: yaml.ScalarNode, Value: strconv.FormatInt(cfg.LogSize, 10)},
		&yaml.Node{Kind: yaml.ScalarNode, Value: "services"}, services)
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return err
	}
	return enc.Close()
}

// printService is one service as Print shows it, every default filled in.
func printService(s *Service) (*yaml.Node, error) {
	ps := printedService{
		Dir:          s.Dir,
		Workers:      s.Workers,
		ReadyWhen:    s.ReadyWhen,
		ReadyTimeout: s.ReadyTimeout.String(),
		Timeout:      s.Timeout.String(),
		Respawn:      s.Respawn.String(),
		Backoff:      s.Backoff.String(),
		StopSignal:   unix.SignalName(s.StopSignal),
		Restart:      s.Restart,
		StartLimit:   s.StartLimit,
		MinUptime:    s.MinUptime.String(),
		MinReady:     s.MinReady.String(),
		MaxSurge:     s.MaxSurge,
		Log:          printedLog{Respawns: s.Log.Respawns},
	}
	if s.ReadyProbe != nil {
		ps.ReadyWhen = printProbe(s.ReadyProbe)
	}
	ps.Health = printProbe(s.Health)
	if s.MaxMemory > 0 {
		ps.MaxMemory = fmt.Sprintf("%dMiB", s.MaxMemory>>20)
		if s.MaxMemory%(1<<20) != 0 {
			ps.MaxMemory = strconv.FormatInt(s.MaxMemory, 10)
		}
	}
	if len(s.After) > 0 {
		ps.After = s.After
		for _, dep := range s.After {
			if s.AfterWhen[dep] != AfterReady {
				ps.After = s.AfterWhen // conditions to show
				break
			}
		}
	}
	if s.Command.Args != nil {
		ps.Command = s.Command.Args
	} else {
		ps.Command = s.Command.Line
	}
	if len(s.Env) > 0 {
		ps.Env = map[string]string{}
		for _, e := range s.Env {
			ps.Env[e.Name] = e.Value
			if s.fromFiles[e.Name] {
				ps.Env[e.Name] = "(from an env file; not shown)"
			}
		}
	}
	if b := s.Build; b != nil {
		ps.Build, ps.BuildTimeout = b.Line, s.BuildTimeout.String()
		if b.Args != nil {
			ps.Build = b.Args
		}
	}
	if w := s.Watch; w != nil {
		ps.Watch = &printedWatch{Paths: w.Paths, Ignore: w.Ignore, Debounce: w.Debounce.String(), Action: w.Action}
	}
	if p := s.Proxy; p != nil {
		ps.Proxy = &printedProxy{Address: p.Address.String(), Protocol: p.Protocol, ProxyProtocol: p.ProxyProtocol,
			MaxConnections: p.MaxConnections, MaxHeaderBytes: p.MaxHeaderBytes,
			HeaderTimeout: p.HeaderTimeout.String(), IdleTimeout: p.IdleTimeout.String()}
		if p.MaxConnections == 0 {
			ps.Proxy.MaxConnections = "auto" // a share of the descriptor limit, decided by `up`
		}
		ps.DrainTimeout = s.DrainTimeout.String()
	}
	for _, l := range s.Listen {
		addr := l.String()
		if l.Name != s.Name {
			addr = l.Name + "=" + addr
		}
		ps.Listen = append(ps.Listen, addr)
	}
	var value yaml.Node
	if err := value.Encode(ps); err != nil {
		return nil, err
	}
	if s.Command.Shell {
		value.Content[1].LineComment = "runs under /bin/sh -c"
	}
	return &value, nil
}
