// Package control is recluster's control API: HTTP with JSON over a unix
// socket that `recluster up` serves, and the typed client every other verb
// uses. It knows nothing of YAML or processes: the server drives a small
// Controller interface, and its wire format is its own (api.go).
package control

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

	"github.com/recluster/recluster/internal/private"
)

// Paths are where one running instance keeps its files. They derive from
// the config file's resolved path, so every verb finds the instance from
// any folder and through any symlink, and stay short whatever that path's
// length: a unix socket path is limited to about 107 bytes.
type Paths struct {
	// Dir is private to the user (0700).
	Dir string
	// Socket is the control socket.
	Socket string
	// Lock is held (flock) by the running `recluster up` and holds its pid.
	Lock string
	// Groups lists the live workers' process groups, for crash cleanup.
	Groups string
	// Also are the folders where a command run with another
	// XDG_RUNTIME_DIR or TMPDIR would look: `up` holds a lock in each, so
	// that a second `up` for the file refuses wherever it runs, and a
	// client looks there when Dir has no socket.
	Also []string
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
	user := fmt.Sprintf("recluster-%d", os.Getuid())
	var bases []string
	if xdg := getenv("XDG_RUNTIME_DIR"); xdg != "" && isDir(xdg) {
		bases = append(bases, filepath.Join(xdg, "recluster"))
	}
	tmp := getenv("TMPDIR")
	if tmp == "" {
		tmp = "/tmp"
	}
	bases = append(bases, filepath.Join(tmp, user), filepath.Join("/tmp", user))
	var dirs []string
	for _, b := range bases {
		d := filepath.Join(b, id)
		// A very deep XDG_RUNTIME_DIR or TMPDIR cannot hold a socket.
		if len(filepath.Join(d, "control.sock")) <= 104 && !contains(dirs, d) {
			dirs = append(dirs, d)
		}
	}
	dir := dirs[0]
	return Paths{Dir: dir, Socket: filepath.Join(dir, "control.sock"), Lock: filepath.Join(dir, "lock"),
		Groups: filepath.Join(dir, "groups"), Also: dirs[1:]}, nil
}

// Ensure creates the folders, private to the user, and refuses a folder
// that someone else owns or others can enter: another user could otherwise
// plant a socket or a file there. It repairs nothing.
func (p Paths) Ensure() error {
	for _, d := range []string{filepath.Dir(p.Dir), p.Dir} {
		if err := private.Dir(d); err != nil {
			return err
		}
	}
	return nil
}

// sockets lists the control sockets a client may find, in order.
func (p Paths) sockets() []string {
	out := []string{p.Socket}
	for _, d := range p.Also {
		out = append(out, filepath.Join(d, "control.sock"))
	}
	return out
}

func isDir(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
