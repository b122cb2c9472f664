package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/joho/godotenv"
)

// Stage 5 of loading: what the file names on disk. Folders must exist and
// env files must parse; their variables join each service's environment.

func (d *decoder) checkFiles(top *fileSource, sources []*serviceSource) {
	var globalFiles []EnvVar
	if top.envFileSet {
		globalFiles = d.readEnvFiles(top.envFiles, "envFile")
	} else if vars, err := readEnvFile(filepath.Join(d.dir, ".env"), d.opts.Getenv); err == nil {
		// ".env" next to the file is read when present, as foreman does.
		globalFiles = vars
	} else if !errors.Is(err, fs.ErrNotExist) {
		d.errorf(top.root, "", "%v; fix or remove .env next to the config file", err)
	}
	for _, src := range sources {
		svc, path := src.svc, "services."+src.svc.Name
		if n := src.set["dir"]; n != nil {
			if st, err := os.Stat(svc.Dir); err != nil {
				d.errorf(n, path+".dir", "%s does not exist; dir is a folder, relative to %s", svc.Dir, d.dir)
			} else if !st.IsDir() {
				d.errorf(n, path+".dir", "%s is not a folder", svc.Dir)
			}
		}
		files := d.readEnvFiles(src.envFiles, path+".envFile")
		svc.Env = mergeEnv(top.env, globalFiles, files, src.env)
		svc.fromFiles = fromFiles([][]EnvVar{globalFiles, files}, src.env)
	}
}

func (d *decoder) readEnvFiles(refs []fileRef, path string) []EnvVar {
	var out []EnvVar
	for _, ref := range refs {
		vars, err := readEnvFile(d.abs(ref.name), d.opts.Getenv)
		if err != nil {
			d.errorf(ref.node, path, "%v; envFile names a file of NAME=value lines, relative to %s", err, d.dir)
			continue
		}
		out = append(out, vars...)
	}
	return out
}

// readEnvFile parses an env file with godotenv and interpolates its
// values as sh and Docker Compose do (interpolate), against getenv
// (recluster's own environment) then the variables the file set before;
// a single-quoted value is taken as written. It refuses what no
// environment can hold.
func readEnvFile(path string, getenv func(string) string) ([]EnvVar, error) {
	data, err := readRegular(path, MaxEnvFileBytes, "envFile")
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, unwrapPathError(err))
	}
	if i := bytes.IndexAny(data, dollarStandIns); i >= 0 {
		return nil, fmt.Errorf("cannot use %s: it holds the control byte %#x at offset %d, which no value can", path, data[i], i)
	}
	// godotenv would expand $VAR itself, from the file alone, and garble
	// ${VAR:-default}: it parses with each dollar standing in.
	standIn := strings.NewReplacer(`\$`, escapedDollar, "$", dollar)
	m, err := godotenv.Parse(strings.NewReader(standIn.Replace(string(data))))
	if err != nil {
		return nil, fmt.Errorf("cannot parse %s: %w", path, err)
	}
	defs := envFileDefinitions(data, m)
	out := make([]EnvVar, 0, len(defs))
	set := map[string]string{}
	lookup := func(k string) (string, bool) {
		if v := getenv(k); v != "" {
			return v, true
		}
		v, ok := set[k]
		return v, ok
	}
	for _, def := range defs {
		k := def.name
		if err := checkEnvName(k); err != nil {
			return nil, fmt.Errorf("cannot use %s: %w", path, err)
		}
		value := m[k]
		if def.literal {
			value = strings.NewReplacer(escapedDollar, `\$`, dollar, "$").Replace(value)
		} else {
			value, err = interpolate(strings.NewReplacer(escapedDollar, "$$", dollar, "$").Replace(value), lookup)
			if err != nil {
				return nil, fmt.Errorf("cannot use %s: %s: %w", path, k, err)
			}
		}
		if strings.IndexByte(value, 0) >= 0 {
			return nil, fmt.Errorf("cannot use %s: %s holds a NUL byte, which no variable can", path, k)
		}
		set[k] = value
		out = append(out, EnvVar{Name: k, Value: value})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// What stands in for "$" and "\$" while godotenv parses an env file.
const (
	dollar         = "\x00"
	escapedDollar  = "\x01"
	dollarStandIns = dollar + escapedDollar
)

// envFileDefinition is where an env file sets a variable (its last
// definition, which godotenv keeps), and whether its value is single-
// quoted, so taken as written.
type envFileDefinition struct {
	name    string
	at      int
	literal bool
}

// envFileDefinitions lists the variables of m in the order data defines
// them, so that each value sees only those set before it, as in sh.
func envFileDefinitions(data []byte, m map[string]string) []envFileDefinition {
	last := map[string]envFileDefinition{}
	for _, at := range envFileLine.FindAllSubmatchIndex(data, -1) {
		name := string(data[at[2]:at[3]])
		last[name] = envFileDefinition{name: name, at: at[0], literal: at[4] >= 0}
	}
	defs := make([]envFileDefinition, 0, len(m))
	for k := range m {
		def, ok := last[k]
		if !ok {
			def = envFileDefinition{name: k, at: len(data)}
		}
		defs = append(defs, def)
	}
	sort.Slice(defs, func(i, j int) bool { return defs[i].at < defs[j].at })
	return defs
}

// envFileLine is the start of a definition in an env file: its name, and
// a single quote when its value is one.
var envFileLine = regexp.MustCompile(`(?m)^[ \t]*(?:export[ \t]+)?([^\s=:#'"]+)[ \t]*[=:][ \t]*(')?`)

func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
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

// fromFiles names the variables whose value comes from an env file: set
// by one of files and not by a later layer.
func fromFiles(files [][]EnvVar, later []EnvVar) map[string]bool {
	out := map[string]bool{}
	for _, layer := range files {
		for _, v := range layer {
			out[v.Name] = true
		}
	}
	for _, v := range later {
		delete(out, v.Name)
	}
	if len(out) == 0 {
		return nil
	}
	return out
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
