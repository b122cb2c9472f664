package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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
	} else if vars, err := readEnvFile(filepath.Join(d.dir, ".env")); err == nil {
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
		vars, err := readEnvFile(d.abs(ref.name))
		if err != nil {
			d.errorf(ref.node, path, "%v; envFile names a file of NAME=value lines, relative to %s", err, d.dir)
			continue
		}
		out = append(out, vars...)
	}
	return out
}

// readEnvFile parses an env file with godotenv, refusing what no
// environment can hold.
func readEnvFile(path string) ([]EnvVar, error) {
	data, err := readRegular(path, MaxEnvFileBytes, "envFile")
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, unwrapPathError(err))
	}
	m, err := godotenv.Parse(bytes.NewReader(data))
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
		if err := checkEnvName(k); err != nil {
			return nil, fmt.Errorf("cannot use %s: %w", path, err)
		}
		if strings.IndexByte(m[k], 0) >= 0 {
			return nil, fmt.Errorf("cannot use %s: %s holds a NUL byte, which no variable can", path, k)
		}
		out[i] = EnvVar{Name: k, Value: m[k]}
	}
	return out, nil
}

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
