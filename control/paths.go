// Package control is recluster's control API: HTTP with JSON over a unix
// socket that `recluster up` serves, and the typed client every other verb
// uses. It knows nothing of YAML or processes: the server drives a small
// Controller interface that runner.Manager satisfies.
package control

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
)

// Paths are where one running instance keeps its files. They derive from
// the config file's absolute path, so every verb finds the instance from
// any folder, and stay short whatever that path's length: a unix socket
// path is limited to about 107 bytes.
type Paths struct {
	// Dir is private to the user (0700).
	Dir string
	// Socket is the control socket.
	Socket string
	// Lock is held (flock) by the running `recluster up` and holds its pid.
	Lock string
	// Groups lists the live workers' process groups, for crash cleanup.
	Groups string
}

// PathsFor returns the paths for the config file at configPath. The base is
// $XDG_RUNTIME_DIR/recluster when set, else recluster-UID in the temporary
// folder.
func PathsFor(configPath string, getenv func(string) string) (Paths, error) {
	abs, err := filepath.Abs(configPath)
	if err != nil {
		return Paths{}, err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	sum := sha256.Sum256([]byte(abs))
	id := hex.EncodeToString(sum[:])[:16]
	base := ""
	if xdg := getenv("XDG_RUNTIME_DIR"); xdg != "" && isDir(xdg) {
		base = filepath.Join(xdg, "recluster")
	} else {
		tmp := getenv("TMPDIR")
		if tmp == "" {
			tmp = "/tmp"
		}
		base = filepath.Join(tmp, fmt.Sprintf("recluster-%d", os.Getuid()))
	}
	dir := filepath.Join(base, id)
	p := Paths{Dir: dir, Socket: filepath.Join(dir, "control.sock"), Lock: filepath.Join(dir, "lock"), Groups: filepath.Join(dir, "groups")}
	if len(p.Socket) > 104 {
		// A very deep XDG_RUNTIME_DIR or TMPDIR: fall back to /tmp.
		base = filepath.Join("/tmp", fmt.Sprintf("recluster-%d", os.Getuid()))
		dir = filepath.Join(base, id)
		p = Paths{Dir: dir, Socket: filepath.Join(dir, "control.sock"), Lock: filepath.Join(dir, "lock"), Groups: filepath.Join(dir, "groups")}
	}
	return p, nil
}

// Ensure creates the folders, private to the user, and refuses a folder
// that someone else owns or others can enter: another user could otherwise
// plant a socket there.
func (p Paths) Ensure() error {
	for _, d := range []string{filepath.Dir(p.Dir), p.Dir} {
		if err := os.Mkdir(d, 0o700); err != nil && !os.IsExist(err) {
			return err
		}
		st, err := os.Lstat(d)
		if err != nil {
			return err
		}
		if !st.IsDir() {
			return fmt.Errorf("%s is not a folder", d)
		}
		if err := checkOwner(d, st); err != nil {
			return err
		}
		if st.Mode().Perm()&0o077 != 0 {
			if err := os.Chmod(d, 0o700); err != nil {
				return fmt.Errorf("%s is open to other users and cannot be made private: %w", d, err)
			}
		}
	}
	return nil
}

func isDir(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}
