// Package peers fetches the tools recluster is measured against into
// ~/.cache/recluster-bench, never into the repository: goreman and
// process-compose built at pinned versions in a throwaway module (the
// module proxy will not list their versions for `go install`), and PM2,
// the Node recluster and the Node foreman installed with npm.
package peers

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Cache is the folder the peers live in.
func Cache() string {
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "recluster-bench")
}

var goPeers = map[string][2]string{
	"goreman":         {"github.com/mattn/goreman", "v0.3.19"},
	"process-compose": {"github.com/f1bonacc1/process-compose", "v1.103.0"},
}

// Go returns the path of a Go peer's binary, building it first if needed.
func Go(name string) (string, error) {
	mod, ok := goPeers[name]
	if !ok {
		return "", fmt.Errorf("unknown Go peer %q", name)
	}
	bin := filepath.Join(Cache(), "go", name)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	tmp, err := os.MkdirTemp("", "peer-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	for _, args := range [][]string{{"mod", "init", "tmp"}, {"get", mod[0] + "@" + mod[1]}, {"build", "-o", bin, mod[0]}} {
		cmd := exec.Command("go", args...)
		cmd.Dir = tmp
		cmd.Env = append(os.Environ(), "GONOSUMDB="+mod[0], "GOFLAGS=-mod=mod")
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("go %v: %w", args, err)
		}
	}
	return bin, nil
}

// NPM installs the pinned npm peers (once) and returns their
// node_modules folder.
func NPM() (string, error) {
	dir := filepath.Join(Cache(), "npm")
	mods := filepath.Join(dir, "node_modules")
	ok := true
	for _, p := range []string{"pm2", "recluster", "foreman"} {
		if _, err := os.Stat(filepath.Join(mods, p, "package.json")); err != nil {
			ok = false
		}
	}
	if ok {
		return mods, nil
	}
	os.MkdirAll(dir, 0o755)
	cmd := exec.Command("npm", "install", "--no-audit", "--no-fund", "--prefix", dir, "pm2@7.0.4", "recluster@1.0.0", "foreman@3.0.1")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return mods, cmd.Run()
}
