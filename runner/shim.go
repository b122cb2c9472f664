package runner

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// shimEnv marks a re-exec of recluster's own binary as the exec shim; its
// value is the fd to report an exec failure on.
const shimEnv = "RECLUSTER_EXEC_SHIM_FD"

// RunShimIfRequested must be the first thing main (and a test binary's
// TestMain) does. When recluster starts a worker that inherits sockets, it
// runs itself first: Go cannot learn a child's pid before exec, but the
// socket-activation protocol wants LISTEN_PID to be the worker's own pid.
// The shim sets LISTEN_PID to its pid and execs the command, which keeps
// the pid, as systemd-socket-activate does. It does not return when it
// runs.
func RunShimIfRequested() {
	v, ok := os.LookupEnv(shimEnv)
	if !ok {
		return
	}
	os.Unsetenv(shimEnv)
	errFD, err := strconv.Atoi(v)
	if err != nil || len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "recluster: bad exec shim call")
		os.Exit(127)
	}
	syscall.CloseOnExec(errFD)
	os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	path, err := lookPath(os.Args[1], os.Getenv("PATH"), ".")
	if err == nil {
		err = syscall.Exec(path, os.Args[1:], os.Environ())
		err = &fs.PathError{Op: "exec", Path: os.Args[1], Err: err}
	}
	syscall.Write(errFD, []byte(err.Error()))
	os.Exit(127)
}

var errNotFound = errors.New("executable file not found in $PATH")

// lookPath finds file as the worker's own PATH would: a name with a slash
// is taken as it is, relative to dir; a bare name is searched in path.
func lookPath(file, path, dir string) (string, error) {
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
