package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ErrNotFound is returned by Find when no config file is found.
var ErrNotFound = errors.New("no recluster.yml, recluster.yaml or Procfile found")

// Find returns the config file for a command run in dir: recluster.yml or
// recluster.yaml in dir or its nearest parent that has one, else a Procfile
// in dir itself (a Procfile further up likely belongs to another project).
func Find(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for d := abs; ; {
		for _, name := range []string{"recluster.yml", "recluster.yaml"} {
			p := filepath.Join(d, name)
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				return p, nil
			}
		}
		parent := filepath.Dir(d)
		if parent == d {
			break
		}
		d = parent
	}
	p := filepath.Join(abs, "Procfile")
	if st, err := os.Stat(p); err == nil && !st.IsDir() {
		return p, nil
	}
	return "", fmt.Errorf("%w in %s or its parents; pass -f FILE", ErrNotFound, abs)
}
