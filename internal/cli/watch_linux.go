package cli

import (
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// watchRemoval calls gone each time the file at path is deleted or moved
// away, until stop is closed. A cleaner of /tmp (or a user) removing the
// control socket would otherwise leave `recluster up` unreachable.
func watchRemoval(path string, stop <-chan struct{}, gone func()) error {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return err
	}
	if _, err := unix.InotifyAddWatch(fd, filepath.Dir(path), unix.IN_DELETE|unix.IN_MOVED_FROM); err != nil {
		unix.Close(fd)
		return err
	}
	// Non-blocking, so the file joins Go's poller and Close ends a Read.
	f := os.NewFile(uintptr(fd), "inotify")
	go func() {
		<-stop
		f.Close()
	}()
	name := filepath.Base(path)
	buf := make([]byte, 64*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
	for {
		n, err := f.Read(buf)
		if err != nil {
			return nil // closed by stop
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafePointer(&buf[off]))
			nameBytes := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			if strings.TrimRight(string(nameBytes), "\x00") == name {
				gone()
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
		}
	}
}
