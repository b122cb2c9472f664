package testbin

import (
	"fmt"
	"net"
	"os"
	"testing"

	"github.com/recluster/recluster/internal/proc"
)

// FreeAddr is a loopback address nothing listens on just now, for a
// service to take.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// CountFDs is how many descriptors the process pid has open; 0 is this
// test process.
func CountFDs(pid int) int {
	dir := "/proc/self/fd"
	if pid != 0 {
		dir = fmt.Sprintf("/proc/%d/fd", pid)
	}
	entries, _ := os.ReadDir(dir)
	return len(entries)
}

// WorkerProcesses are the pids of the test worker's processes that run
// (zombies left out), whoever started them.
func WorkerProcesses(t testing.TB) []int {
	worker := Worker(t)
	var out []int
	for _, p := range proc.All() {
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", p.Pid)); err == nil && exe == worker && p.Running() {
			out = append(out, p.Pid)
		}
	}
	return out
}
