package config

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
)

// IsProcfile reports whether path names a Procfile (Procfile, Procfile.dev…).
func IsProcfile(path string) bool {
	base := filepath.Base(path)
	return base == "Procfile" || strings.HasPrefix(base, "Procfile.")
}

// releasePhase makes a `release` line what it is on Heroku: a task that
// runs once, before the other lines start; they start only once it has
// exited 0.
func releasePhase(cfg *Config) {
	release := cfg.Service("release")
	if release == nil {
		return
	}
	release.Restart = RestartNever
	for _, s := range cfg.Services {
		if s != release {
			s.After = []string{release.Name}
			s.AfterWhen = map[string]string{release.Name: AfterCompleted}
		}
	}
}

// parseProcfile reads foreman's format: one `name: command` a line. Each
// service gets one worker, readyWhen started and PORT = base + 100 × index,
// foreman's rule, so a Procfile app finds the same ports as under foreman.
// The `web` line is served there by recluster's http proxy instead, and
// its workers get ports of their own: so `reload web` loses nothing and
// `scale web=3` works. A `release` line runs once, first (releasePhase).
func (o Options) parseProcfile(path string, data []byte) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	d := &decoder{file: path, dir: filepath.Dir(abs), opts: o}
	cfg := &Config{Path: abs, Dir: d.dir, Procfile: true, LogSize: DefaultLogSize}

	dotenv, err := readEnvFile(filepath.Join(d.dir, ".env"), o.Getenv)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		d.errs.add(&FieldError{File: path, Line: 1, Col: 1, Msg: fmt.Sprintf("%v; fix or remove .env next to the Procfile", err)})
	}
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), len(data)+1)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		raw := sc.Text()
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		col := strings.Index(raw, line) + 1
		name, command, ok := strings.Cut(line, ":")
		name = strings.TrimSpace(name)
		if !ok {
			d.errs.add(&FieldError{File: path, Line: lineNo, Col: col, Msg: "expected `name: command`; a Procfile line names a service, a colon, then its command"})
			continue
		}
		if !serviceName.MatchString(name) || name == "recluster" {
			d.errs.add(&FieldError{File: path, Line: lineNo, Col: col, Msg: fmt.Sprintf("%q is not a usable service name; use letters, digits, '-' and '_'", name)})
			continue
		}
		cmdCol := col + len(name) + 1 + (len(command) - len(strings.TrimLeft(command, " \t")))
		if first, dup := seen[name]; dup {
			d.errs.add(&FieldError{File: path, Line: lineNo, Col: col, Path: name, Msg: fmt.Sprintf("is declared twice (first on line %d); keep one", first)})
			continue
		}
		seen[name] = lineNo
		cmd, err := parseCommandLine(strings.TrimSpace(command))
		if err == nil && strings.IndexByte(command, 0) >= 0 {
			err = errors.New("contains a NUL byte (\\0), which no program can receive")
		}
		if err != nil {
			d.errs.add(&FieldError{File: path, Line: lineNo, Col: cmdCol, Path: name, Msg: fmt.Sprintf("command %v; a command is a program and its arguments, split like a shell", err)})
			continue
		}
		port := o.PortBase + 100*len(cfg.Services)
		if port < 1 || port > 65535 {
			d.errs.add(&FieldError{File: path, Line: lineNo, Col: col, Path: name, Msg: fmt.Sprintf(
				"its PORT would be %d (the base %d + 100 × %d services before it), but a port is 1 to 65535; use a lower --port, or fewer lines", port, o.PortBase, len(cfg.Services))})
			continue
		}
		svc := o.newService(name, d.dir)
		svc.Command = cmd
		svc.Env = mergeEnv(dotenv, []EnvVar{{Name: "PORT", Value: strconv.Itoa(port)}})
		svc.fromFiles = fromFiles([][]EnvVar{dotenv}, []EnvVar{{Name: "PORT"}})
		svc.Workers = 1
		if name == "web" {
			svc.Proxy = newProxy(Listen{Name: name, Network: "tcp", Address: ":" + strconv.Itoa(port)}, ProtocolHTTP)
			svc.ReadyWhen = ReadyListening
		}
		derive(svc)
		if err := cmd.requiredUnset(workerLookup(svc, o.Getenv)); err != nil {
			d.errs.add(&FieldError{File: path, Line: lineNo, Col: col, Path: name, Msg: fmt.Sprintf("%v; set it in recluster's environment or .env", err)})
		}
		cfg.Services = append(cfg.Services, svc)
	}
	if err := sc.Err(); err != nil {
		d.errs.add(&FieldError{File: path, Line: lineNo + 1, Col: 1, Msg: err.Error()})
	}
	releasePhase(cfg)
	if len(cfg.Services) == 0 && len(d.errs) == 0 {
		d.errs.add(&FieldError{File: path, Line: 1, Col: 1, Msg: "no services; a Procfile has one `name: command` a line"})
	}
	if err := d.errs.err(); err != nil {
		return nil, err
	}
	return cfg, nil
}
