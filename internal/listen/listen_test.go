package listen

import (
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/recluster/recluster/config"
)

// TestOpenAndName: a socket opened for an entry listens where the entry
// says, and is named back as a listen entry; a socket that does not
// listen is named for what it is.
func TestOpenAndName(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	for _, c := range []struct {
		entry config.Listen
		want  string
	}{
		{config.Listen{Network: "tcp", Address: "127.0.0.1:0"}, "127.0.0.1:"},
		{config.Listen{Network: "tcp", Address: "localhost:0"}, "127.0.0.1:"},
		{config.Listen{Network: "unix", Address: sock}, "unix:" + sock},
	} {
		fd, err := Open(c.entry)
		if err != nil {
			t.Fatalf("%v: %v", c.entry, err)
		}
		addr, err := ListeningAddr(fd)
		if err != nil || !strings.HasPrefix(addr, c.want) {
			t.Errorf("%v: bound to %q (%v), want %s…", c.entry, addr, err, c.want)
		}
		network, dial := "tcp", addr
		if c.entry.Network == "unix" {
			network, dial = "unix", sock
		}
		conn, err := net.Dial(network, dial)
		if err != nil {
			t.Errorf("%v: nothing listens at %s: %v", c.entry, addr, err)
		} else {
			conn.Close()
		}
		syscall.Close(fd)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if _, err := ListeningAddr(fd); err == nil || !strings.Contains(err.Error(), "not a listening socket") {
		t.Errorf("a socket that does not listen: %v", err)
	}
}

// TestAStaleUnixSocketIsReplacedAndALiveOneRefused: a socket file nothing
// listens on (a crashed run's) is taken over; one something listens on
// is refused with ErrLiveSocket.
func TestAStaleUnixSocketIsReplacedAndALiveOneRefused(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	fd, err := Open(config.Listen{Network: "unix", Address: stale})
	if err != nil {
		t.Fatalf("a stale socket file: %v", err)
	}
	defer syscall.Close(fd)
	if _, err := Open(config.Listen{Network: "unix", Address: stale}); err == nil || !strings.Contains(err.Error(), ErrLiveSocket.Error()) {
		t.Errorf("a live socket: %v", err)
	}
}
