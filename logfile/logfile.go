// Package logfile is the file that `recluster up -d` writes its log stream
// to: bounded in size by rotation (NAME → NAME.1, one old file kept), so
// the newest lines are always there and the disk use is at most twice the
// size. It takes writes of whole lines, as logmux makes them (a batch of
// many), and rotates only between lines, so no line is cut across files.
package logfile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
)

// File is safe for concurrent use.
type File struct {
	path string
	max  int64

	mu   sync.Mutex
	f    *os.File
	size int64
}

// Open opens (creating, mode 0600) or appends to path. It refuses a
// symlink or a file that is not the user's own: the log may sit in a
// folder others can write to.
func Open(path string, max int64) (*File, error) {
	if max <= 0 {
		return nil, errors.New("logfile: the size must be above 0")
	}
	f, err := openOwn(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &File{path: path, max: max, f: f, size: st.Size()}, nil
}

func openOwn(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("the log file: %w", err)
	}
	st, err := f.Stat()
	if err == nil {
		sys, ok := st.Sys().(*syscall.Stat_t)
		switch {
		case !st.Mode().IsRegular():
			err = fmt.Errorf("the log file %s is not a regular file", path)
		case ok && int(sys.Uid) != os.Getuid():
			err = fmt.Errorf("the log file %s belongs to uid %d, not to you (uid %d)", path, sys.Uid, os.Getuid())
		}
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// Write appends p, rotating whenever the next whole lines would take the
// file past its size; a single line longer than the size is kept whole,
// in a file of its own.
func (l *File) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return 0, os.ErrClosed
	}
	written := 0
	for len(p) > 0 {
		room := l.max - l.size
		cut := len(p)
		if int64(len(p)) > room {
			cut = 0
			if room > 0 {
				cut = bytes.LastIndexByte(p[:room], '\n') + 1
			}
			if cut == 0 && l.size == 0 { // one line longer than the size
				if cut = bytes.IndexByte(p, '\n') + 1; cut == 0 {
					cut = len(p)
				}
			}
		}
		if cut == 0 {
			if err := l.rotate(); err != nil {
				return written, err
			}
			continue
		}
		n, err := l.f.Write(p[:cut])
		l.size += int64(n)
		written += n
		if err != nil {
			return written, err
		}
		p = p[cut:]
	}
	return written, nil
}

// rotate renames the file to NAME.1, replacing the one before, and starts
// a new one.
func (l *File) rotate() error {
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		return fmt.Errorf("rotating the log file: %w", err)
	}
	f, err := openOwn(l.path)
	if err != nil {
		return err
	}
	l.f.Close()
	l.f, l.size = f, 0
	return nil
}

// Close closes the file.
func (l *File) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
