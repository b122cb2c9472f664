package proxy

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// socketPair is a connected loopback tcp pair: the proxy's side, raw, and
// the worker's.
func socketPair(t *testing.T) (*net.TCPConn, *polledSock, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	w, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); w.Close() })
	tc := c.(*net.TCPConn)
	return tc, newPolledSock(tc), w
}

// waiting says whether s has bytes to read now, without waiting.
func waiting(t *testing.T, s *polledSock) bool {
	t.Helper()
	var n int
	s.rc.Control(func(fd uintptr) {
		n, _, _ = unix.Recvfrom(int(fd), make([]byte, 1), unix.MSG_PEEK|unix.MSG_DONTWAIT)
	})
	return n > 0
}

func TestSendAwaitingReturnsOnceTheAnswerCame(t *testing.T) {
	_, s, w := socketPair(t)
	// Owned by the test; ends once it has answered.
	go func() {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(w, buf); err != nil {
			return
		}
		time.Sleep(20 * time.Millisecond) // a slow worker, not a synchronisation
		w.Write([]byte("answer"))
	}()
	if err := sendAwaiting(s, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if !waiting(t, s) {
		t.Fatal("sendAwaiting returned before the answer came")
	}
	buf := make([]byte, 16)
	n, err := s.Read(buf)
	if err != nil || string(buf[:n]) != "answer" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
}

func TestSendAwaitingWritesWhatTheSocketCannotTakeAtOnce(t *testing.T) {
	tc, s, w := socketPair(t)
	tc.SetWriteBuffer(4 << 10)
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	got := make(chan []byte, 1)
	// Owned by the test; ends once the request is read and answered.
	go func() {
		b := make([]byte, len(big))
		io.ReadFull(w, b)
		w.Write([]byte("ok"))
		got <- b
	}()
	if err := sendAwaiting(s, big); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ok" {
		t.Fatalf("read %q, %v", buf, err)
	}
	if b := <-got; !bytes.Equal(b, big) {
		t.Fatal("the worker did not get the request whole")
	}
}

func TestSendAwaitingLeavesAPassedDeadlineToTheRead(t *testing.T) {
	tc, s, w := socketPair(t)
	tc.SetReadDeadline(time.Now().Add(-time.Second))
	if err := sendAwaiting(s, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	w.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(w, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("the worker read %q, %v", buf, err)
	}
	if _, err := s.Read(buf); !timedOut(err) {
		t.Fatalf("the read after a passed deadline: %v", err)
	}
}

func TestSendAwaitingWakesWhenTheWorkerCloses(t *testing.T) {
	_, s, w := socketPair(t)
	// Owned by the test; ends once it has closed.
	go func() {
		io.ReadFull(w, make([]byte, 5))
		w.Close()
	}()
	if err := sendAwaiting(s, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read after the worker closed: %v", err)
	}
}
