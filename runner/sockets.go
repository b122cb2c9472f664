package runner

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"github.com/recluster/recluster/config"
	"github.com/recluster/recluster/internal/listen"
	"github.com/recluster/recluster/internal/osproc"
)

// sockets opens each listening socket once and shares it between every
// holder of a lease on it: a socket outlives the workers that accept on
// it, which is why a reload refuses no connection. The sockets are plain
// blocking fds, never accepted on here and never registered with Go's
// poller, so a connection does not wake recluster.
type sockets struct {
	mu   sync.Mutex
	open map[config.Listen]*socket // keyed without the fd name
	// inherited are the sockets recluster was given (activation.go),
	// used before binding; inUse says which an open socket is.
	inherited []InheritedSocket
	inUse     map[int]bool
}

type socket struct {
	file  *os.File
	refs  int
	inode uint64 // of a unix socket's file, to remove only our own
	// from is 1 + the index of the inherited socket this is, or 0: an
	// inherited socket is never closed nor its file removed, since its
	// owner (systemd) keeps it for the next recluster.
	from int
}

// lease is a hold on some of the sockets, taken by acquire and given back,
// once, by release; the sockets nothing holds are closed (and a unix
// socket's file removed).
type lease struct {
	s      *sockets
	listen []config.Listen
	files  []*os.File
	opened []config.Listen // the sockets this lease opened, rather than shared
	once   sync.Once
}

// acquire returns a lease on one socket per listen entry, opening what is
// not open yet. It takes all or nothing.
func (s *sockets) acquire(ls []config.Listen) (*lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open == nil {
		s.open = map[config.Listen]*socket{}
	}
	l := &lease{s: s}
	for _, want := range ls {
		key := want
		key.Name = ""
		sk := s.open[key]
		if sk == nil {
			if sk = s.adopt(want); sk == nil {
				var err error
				if sk, err = openListener(want); err != nil {
					s.releaseLocked(l.listen)
					return nil, err
				}
			}
			s.open[key] = sk
			l.opened = append(l.opened, want)
		}
		sk.refs++
		l.listen = append(l.listen, want)
		l.files = append(l.files, sk.file)
	}
	return l, nil
}

// adopt returns an inherited socket for want, marked in use, or nil.
func (s *sockets) adopt(want config.Listen) *socket {
	i := matchInherited(want, s.inherited, func(i int) bool { return s.inUse[i] })
	if i < 0 {
		return nil
	}
	if s.inUse == nil {
		s.inUse = map[int]bool{}
	}
	s.inUse[i] = true
	return &socket{file: s.inherited[i].File, from: i + 1}
}

// release gives the lease back; later calls do nothing.
func (l *lease) release() {
	if l == nil {
		return
	}
	l.once.Do(func() {
		l.s.mu.Lock()
		defer l.s.mu.Unlock()
		l.s.releaseLocked(l.listen)
	})
}

func (s *sockets) releaseLocked(ls []config.Listen) {
	for _, l := range ls {
		key := l
		key.Name = ""
		sk := s.open[key]
		if sk == nil {
			continue
		}
		if sk.refs--; sk.refs > 0 {
			continue
		}
		delete(s.open, key)
		s.closeSocket(key, sk)
	}
}

// closeSocket closes an open socket, or gives an inherited one back.
func (s *sockets) closeSocket(key config.Listen, sk *socket) {
	if sk.from > 0 {
		delete(s.inUse, sk.from-1)
		return
	}
	sk.close(key)
}

// closeAll closes every socket, whatever holds it.
func (s *sockets) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, sk := range s.open {
		s.closeSocket(key, sk)
		delete(s.open, key)
	}
}

// close closes the socket and removes its file, if the file at the path is
// still the one it bound: another program may have taken the path since.
func (sk *socket) close(key config.Listen) {
	sk.file.Close()
	if key.Network == "unix" {
		if ino, ok := listen.InodeAt(key.Address); ok && ino == sk.inode {
			os.Remove(key.Address)
		}
	}
}

// boundAddr returns the bound address of the socket for l (the port the
// kernel chose for port 0), or "".
func (s *sockets) boundAddr(l config.Listen) string {
	s.mu.Lock()
	key := l
	key.Name = ""
	sk := s.open[key]
	s.mu.Unlock()
	if sk == nil {
		return ""
	}
	addr, _ := listen.Addr(int(sk.file.Fd()))
	return addr
}

func openListener(l config.Listen) (*socket, error) {
	fd, err := listen.Open(l)
	if errors.Is(err, syscall.EADDRINUSE) && l.Network == "tcp" {
		if holder := osproc.PortHolder(l.Address); holder != "" {
			err = fmt.Errorf("%w (held by %s)", err, holder)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", l, err)
	}
	sk := &socket{file: os.NewFile(uintptr(fd), l.String())}
	if l.Network == "unix" {
		sk.inode, _ = listen.InodeAt(l.Address)
	}
	return sk, nil
}
