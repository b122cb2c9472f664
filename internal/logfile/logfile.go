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

// File is safe for concurrent use. A write that fails (a full disk, a
// rotation that cannot rename) never ends it: the lines are dropped and
// counted, every later write tries again (reopening the file, or starting
// it over when it cannot be rotated), and once one succeeds the file says
// how many lines it lost and why. Write never fails, so the log stream
// goes on.
type File struct {
	path string
	max  int64

	mu       sync.Mutex
	f        *os.File
	size     int64
	midLine  bool  // the last write ended inside a line
	broken   error // why lines are being dropped, until a write succeeds
	dropped  int   // lines dropped since broken
	trouble  func(string)
	reported bool // broken was said to trouble
}

// OnTrouble sets where the file says that it drops lines, and that it
// works again (the log stream, which goes on without it).
func (l *File) OnTrouble(f func(string)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.trouble = f
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
// in a file of its own. It fails only once the file is closed.
func (l *File) Write(p []byte) (int, error) {
	l.mu.Lock()
	if l.f == nil {
		l.mu.Unlock()
		return 0, os.ErrClosed
	}
	var say []string
	if l.broken != nil {
		if msg, ok := l.recoverLocked(); ok {
			say = append(say, msg)
		}
	}
	if l.broken == nil {
		if rest, err := l.writeLocked(p); err != nil {
			l.broken = err
			l.dropped += bytes.Count(rest, []byte{'\n'})
			if len(rest) > 0 && rest[len(rest)-1] != '\n' {
				l.dropped++
			}
		}
	} else {
		l.dropped += max(bytes.Count(p, []byte{'\n'}), 1)
	}
	if l.broken != nil && !l.reported {
		l.reported = true
		say = append(say, fmt.Sprintf("the log file %s: %v; its lines are dropped and counted until it works again", l.path, l.broken))
	}
	trouble := l.trouble
	l.mu.Unlock()
	if trouble != nil {
		for _, s := range say {
			trouble(s)
		}
	}
	return len(p), nil
}

// writeLocked writes p whole, rotating as it goes, and returns what it
// could not write and why.
func (l *File) writeLocked(p []byte) ([]byte, error) {
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
				return p, err
			}
			continue
		}
		n, err := l.f.Write(p[:cut])
		l.size += int64(n)
		if n > 0 {
			l.midLine = p[n-1] != '\n'
		}
		if err != nil {
			return p[n:], err
		}
		p = p[cut:]
	}
	return nil, nil
}

// recoverLocked tries the file again after a failure: it reopens it (it
// may have been removed or replaced meanwhile), ends a line cut short,
// and says what was lost. It reports what to tell the stream.
func (l *File) recoverLocked() (string, bool) {
	f, err := openOwn(l.path)
	if err != nil {
		return "", false
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return "", false
	}
	old, oldSize, oldMid := l.f, l.size, l.midLine
	l.f, l.size = f, st.Size()
	if !os.SameFile(mustStat(old), st) {
		l.midLine = false
	}
	notice := fmt.Sprintf("recluster | the log file dropped %d line(s): %v\n", l.dropped, l.broken)
	if l.midLine {
		notice = "\n" + notice
	}
	if _, err := l.writeLocked([]byte(notice)); err != nil {
		l.f.Close()
		l.f, l.size, l.midLine = old, oldSize, oldMid
		return "", false
	}
	old.Close()
	msg := fmt.Sprintf("the log file %s works again; %d line(s) were dropped (%v)", l.path, l.dropped, l.broken)
	l.broken, l.dropped, l.reported = nil, 0, false
	return msg, true
}

func mustStat(f *os.File) os.FileInfo {
	st, err := f.Stat()
	if err != nil {
		return nil
	}
	return st
}

// rotate renames the file to NAME.1, replacing the one before, and starts
// a new one. When it cannot rename (another user's NAME.1 in a shared
// folder, say), it starts the file over instead, so that it stays within
// its size, and says so in it.
func (l *File) rotate() error {
	renameErr := os.Rename(l.path, l.path+".1")
	if renameErr != nil {
		if err := l.f.Truncate(0); err != nil {
			return fmt.Errorf("rotating: %v; and starting it over: %w", renameErr, err)
		}
		// The notice does not count towards the size: counted, a
		// notice longer than the size would rotate for ever.
		l.size, l.midLine = 0, false
		_, err := fmt.Fprintf(l.f, "recluster | the log file could not be rotated (%v); it was started over\n", renameErr)
		return err
	}
	f, err := openOwn(l.path)
	if err != nil {
		return err
	}
	l.f.Close()
	l.f, l.size, l.midLine = f, 0, false
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
