package testbin

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
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
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && exe == worker && Alive(pid) {
			out = append(out, pid)
		}
	}
	return out
}

// Alive says whether pid runs: it exists and is no zombie.
func Alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(data), ')')
	return i > 0 && i+2 < len(data) && data[i+2] != 'Z'
}
