package proxy

import (
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// finWatch tells a tcp copy that its source has ended while the copy
// waits on Go's poller without having read to EAGAIN (copyHalf skips
// that read after a short one, as nginx and HAProxy do). The read that
// emptied the socket may have taken the data and left a FIN already
// queued, and Go's poller drops the EPOLLRDHUP that said so: the copy
// would wait for ever. So a copy that skips registers its source here,
// in an epoll set of its own that asks for nothing but RDHUP, HUP and
// ERR (edge-triggered: an end already there is reported at once, and
// bytes arriving wake nothing), and the watcher kicks it with a read
// deadline in the past, which ends the wait; the copy then reads.
// A kick is only ever a hint: a spurious one costs a read.
type finWatch struct {
	mu      sync.Mutex
	epfd    int // -1 until the first watch; -2 once stopped or failed
	wakefd  int // an eventfd in the set that ends the watcher
	conns   map[int32]net.Conn
	stopped chan struct{} // closed when the watcher's goroutine ends
}

func newFinWatch() *finWatch {
	return &finWatch{epfd: -1, conns: map[int32]net.Conn{}}
}

// watch registers fd (c's) to be kicked when its peer ends; false when
// it cannot, and the copy must read to EAGAIN as before.
func (w *finWatch) watch(fd int, c net.Conn) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.epfd == -1 && !w.start() {
		w.epfd = -2
	}
	if w.epfd < 0 {
		return false
	}
	// Entered before the kernel can report it, so no report is missed.
	w.conns[int32(fd)] = c
	ev := unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(fd)}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		delete(w.conns, int32(fd))
		return false
	}
	return true
}

// forget is called by a copy that registered fd, before its socket is
// closed; the kernel drops the registration itself at the close.
func (w *finWatch) forget(fd int) {
	w.mu.Lock()
	delete(w.conns, int32(fd))
	w.mu.Unlock()
}

// start makes the set and the goroutine; w.mu is held.
func (w *finWatch) start() bool {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return false
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return false
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wakefd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wakefd)
		return false
	}
	w.epfd, w.wakefd, w.stopped = epfd, wakefd, make(chan struct{})
	// Owned by the finWatch; ends at stop, which the proxy's Serve calls
	// once every tcp connection has ended. It blocks a thread in
	// epoll_wait while connections live, as Go's own poller does.
	go w.run(epfd, wakefd)
	return true
}

func (w *finWatch) run(epfd, wakefd int) {
	defer close(w.stopped)
	defer unix.Close(epfd)
	defer unix.Close(wakefd)
	events := make([]unix.EpollEvent, 64)
	var kick []net.Conn
	for {
		n, err := unix.EpollWait(epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return
		}
		kick = kick[:0]
		w.mu.Lock()
		for _, ev := range events[:n] {
			if ev.Fd == int32(wakefd) {
				w.mu.Unlock()
				return
			}
			if c, ok := w.conns[ev.Fd]; ok {
				kick = append(kick, c)
			}
		}
		w.mu.Unlock()
		for _, c := range kick {
			c.SetReadDeadline(aLongTimeAgo)
		}
		clear(kick)
	}
}

// stop ends the watcher once no copy needs it.
func (w *finWatch) stop() {
	w.mu.Lock()
	epfd, wakefd, stopped := w.epfd, w.wakefd, w.stopped
	w.epfd = -2
	w.mu.Unlock()
	if epfd < 0 {
		return
	}
	unix.Write(wakefd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	<-stopped
}

var aLongTimeAgo = time.Unix(1, 0)
