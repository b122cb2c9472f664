package control

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// ErrRunning is returned by Lock when another `recluster up` holds it.
var ErrRunning = errors.New("already running")

// RunningError names the instance that holds the lock.
type RunningError struct {
	Pid int
}

func (e *RunningError) Error() string {
	return fmt.Sprintf("recluster is already running for this config (pid %d)", e.Pid)
}

func (e *RunningError) Unwrap() error { return ErrRunning }

// InstanceLock is held by one `recluster up` per config file. The kernel
// drops a flock when its holder dies, even by SIGKILL, so a crash never
// leaves a stale lock behind.
type InstanceLock struct {
	f *os.File
}

// Lock takes the instance lock and writes our pid into it.
func (p Paths) TakeLock() (*InstanceLock, error) { return lockFile(p.Lock) }

func lockFile(path string) (*InstanceLock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
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
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return &InstanceLock{f: f}, nil
}

// Unlock releases the lock.
func (l *InstanceLock) Unlock() error {
	l.f.Truncate(0)
	return l.f.Close()
}
