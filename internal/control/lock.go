package control

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/recluster/recluster/internal/private"
)

// ErrRunning is returned by TakeLock when another `recluster up` holds it.
var ErrRunning = errors.New("already running")

// RunningError names the instance that holds the lock.
type RunningError struct {
	Pid int
}

func (e *RunningError) Error() string {
	if e.Pid <= 0 {
		return "recluster is already starting for this config (its pid is not written yet)"
	}
	return fmt.Sprintf("recluster is already running for this config (pid %d)", e.Pid)
}

func (e *RunningError) Unwrap() error { return ErrRunning }

// InstanceLock is held by one `recluster up` per config file. The kernel
// drops a flock when its holder dies, even by SIGKILL, so a crash never
// leaves a stale lock behind.
type InstanceLock struct {
	files []*os.File
	also  []string // the folders of Also whose lock is held
	links []string // the socket links Advertise made
}

// TakeLock takes the instance lock in Dir and in every folder of Also
// that can be made, and writes our pid into each. Another instance that
// holds any of them is named in a *RunningError.
func (p Paths) TakeLock() (*InstanceLock, error) {
	f, err := lockFile(p.Lock)
	if err != nil {
		return nil, err
	}
	l := &InstanceLock{files: []*os.File{f}}
	for _, d := range p.Also {
		if private.Dir(filepath.Dir(d)) != nil || private.Dir(d) != nil {
			continue // a place we cannot use is one no other up can use either
		}
		f, err := lockFile(filepath.Join(d, "lock"))
		var re *RunningError
		if errors.As(err, &re) {
			l.Unlock()
			return nil, err
		}
		if err == nil {
			l.files = append(l.files, f)
			l.also = append(l.also, d)
		}
	}
	return l, nil
}

func lockFile(path string) (*os.File, error) {
	f, err := private.OpenFile(path, os.O_RDWR|os.O_CREATE)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if err == syscall.EWOULDBLOCK {
			data := make([]byte, 32)
			n, _ := f.ReadAt(data, 0)
			pid, _ := strconv.Atoi(strings.TrimSpace(string(data[:n])))
			return nil, &RunningError{Pid: pid}
		}
		return nil, err
	}
	// One write of a fixed width over what was there, then the length:
	// a racing reader never finds the file empty, as it did between a
	// truncation and the write (and took pid 0).
	pid := fmt.Appendf(nil, "%10d\n", os.Getpid())
	f.WriteAt(pid, 0)
	f.Truncate(int64(len(pid)))
	return f, nil
}

// Advertise puts a link to the control socket in every other folder whose
// lock is held, for clients run with another XDG_RUNTIME_DIR or TMPDIR.
// Unlock removes them.
func (l *InstanceLock) Advertise(socket string) {
	for _, d := range l.also {
		link := filepath.Join(d, "control.sock")
		if st, err := os.Lstat(link); err == nil && st.Mode()&(os.ModeSymlink|os.ModeSocket) == 0 {
			continue // not ours to replace
		}
		os.Remove(link)
		if os.Symlink(socket, link) == nil {
			l.links = append(l.links, link)
		}
	}
}

// Unlock releases the lock.
func (l *InstanceLock) Unlock() error {
	for _, link := range l.links {
		os.Remove(link)
	}
	l.links = nil
	for _, f := range l.files {
		f.Truncate(0)
		f.Close()
	}
	l.files = nil
	return nil
}
