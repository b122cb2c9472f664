// Package private checks and opens the folders and files recluster keeps
// for one user: the run folder, its lock, its group log and its control
// socket. Anything there may have been planted by another user or left by
// an older run, so nothing is trusted, and nothing is repaired: a folder
// or file that is not the user's alone is refused with what is wrong.
package private

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// Dir makes sure dir exists as a folder that belongs to the user and that
// no one else may enter or list, creating it (0700) when it is missing.
func Dir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	st, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("refusing %s: it is not a folder (%s); remove it", dir, kind(st))
	}
	return check(dir, st, "chmod 700")
}

// CheckDir refuses dir unless it is a folder of the user's, closed to
// others; unlike Dir it creates nothing.
func CheckDir(dir string) error {
	st, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("refusing %s: it is not a folder (%s)", dir, kind(st))
	}
	return check(dir, st, "chmod 700")
}

// CheckSocket refuses path unless it is a socket of the user's that no one
// else may connect to.
func CheckSocket(path string) error {
	st, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if st.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("refusing %s: it is not a socket (%s)", path, kind(st))
	}
	return check(path, st, "chmod 600")
}

// OpenFile opens a regular file of the user's that others cannot read or
// write, never through a symlink; with os.O_CREATE it creates it 0600.
func OpenFile(path string, flag int) (*os.File, error) {
	f, err := os.OpenFile(path, flag|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("refusing %s: it is a symlink; remove it", path)
		}
		return nil, err
	}
	st, err := f.Stat()
	if err == nil && !st.Mode().IsRegular() {
		err = fmt.Errorf("refusing %s: it is not a regular file (%s); remove it", path, kind(st))
	}
	if err == nil {
		err = check(path, st, "chmod 600")
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// check refuses what another user owns or may open.
func check(path string, st fs.FileInfo, fix string) error {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Getuid() {
		return fmt.Errorf("refusing %s: it belongs to uid %d, not to you (uid %d); remove it, or set XDG_RUNTIME_DIR to a folder of yours", path, sys.Uid, os.Getuid())
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("refusing %s: other users may use it (mode %04o); recluster keeps its files where only you can: run `%s %s` if it is yours, or remove it", path, perm, fix, path)
	}
	return nil
}

func kind(st fs.FileInfo) string {
	switch m := st.Mode(); {
	case m&fs.ModeSymlink != 0:
		return "a symlink"
	case m.IsDir():
		return "a folder"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m.IsRegular():
		return "a file"
	}
	return st.Mode().Type().String()
}
