package osproc

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// shellShim is how a worker that inherits sockets is started: Go cannot
// learn a child's pid before exec, but the socket-activation protocol
// wants LISTEN_PID to be the worker's own pid. /bin/sh sets it to its pid
// and execs the command, which keeps the pid, as systemd-socket-activate
// does. The shell starts in well under a millisecond, where a re-exec of
// recluster's own 11 MB binary took 3 to 4 (BENCHMARKS.md). The exec
// closes fd (the parent's pipe), whose EOF tells the parent the shell is
// done; the path is found beforehand, so a missing program fails the
// start with the same message as any other.
func shellShim(fd int, argv []string) (string, []string) {
	script := fmt.Sprintf(`LISTEN_PID=$$; export LISTEN_PID; exec "$@" %d>&-`, fd)
	return "/bin/sh", append([]string{"recluster-exec", "-c", script, "recluster-exec"}, argv...)
}

var errNotFound = errors.New("executable file not found in $PATH")

// LookPath finds file as the worker's own PATH would: a name with a slash
// is taken as it is, relative to dir; a bare name is searched in path.
func LookPath(file, path, dir string) (string, error) {
	if strings.Contains(file, "/") {
		full := file
		if !filepath.IsAbs(full) {
			full = filepath.Join(dir, file)
		}
		if err := executable(full); err != nil {
			return "", &fs.PathError{Op: "exec", Path: file, Err: err}
		}
		return file, nil
	}
	for _, d := range filepath.SplitList(path) {
		if d == "" {
			d = "."
		}
		full := filepath.Join(d, file)
		if !filepath.IsAbs(full) {
			full = filepath.Join(dir, full)
		}
		if executable(full) == nil {
			return full, nil
		}
	}
	return "", &fs.PathError{Op: "exec", Path: file, Err: errNotFound}
}

func executable(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return unwrap(err)
	}
	if st.IsDir() {
		return syscall.EISDIR
	}
	if st.Mode()&0o111 == 0 {
		return fs.ErrPermission
	}
	return nil
}

func unwrap(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
