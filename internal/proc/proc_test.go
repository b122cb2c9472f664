//go:build linux

package proc

import (
	"os"
	"os/exec"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestReadsThisProcess: what /proc says of this test matches what the
// kernel says through system calls.
func TestReadsThisProcess(t *testing.T) {
	s, ok := ReadStat(os.Getpid())
	if !ok {
		t.Fatal("no stat for this process")
	}
	pgid, _ := syscall.Getpgid(0)
	if s.Pid != os.Getpid() || s.PPid != os.Getppid() || s.Pgid != pgid || !s.Running() || s.Start == 0 {
		t.Errorf("stat %+v; want pid %d, ppid %d, pgid %d, running, a start time", s, os.Getpid(), os.Getppid(), pgid)
	}
	if s.RSS <= 0 {
		t.Errorf("stat says this process holds no memory: %+v", s)
	}
	if u := GroupUsage(map[int]bool{pgid: true})[pgid]; u.RSS < s.RSS || u.CPUSeconds < float64(s.UTime+s.STime)/100 {
		t.Errorf("this process's group: %+v, less than the process itself (%+v)", u, s)
	}
	st, ok := ReadStatus(os.Getpid())
	if !ok || st.UID != os.Getuid() || st.Threads < 1 || st.RSSKiB <= 0 {
		t.Errorf("status %+v (%v); want uid %d, threads, memory", st, ok, os.Getuid())
	}
}

// TestAZombieIsNotAlive: an exited child not yet reaped is in /proc but
// does not run; once reaped it is gone.
func TestAZombieIsNotAlive(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	// Wait for the exit without reaping it.
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	if s, ok := ReadStat(pid); !ok || s.State != 'Z' || Alive(pid) {
		t.Errorf("an exited child: stat %+v (%v), alive %v", s, ok, Alive(pid))
	}
	cmd.Wait()
	if Alive(pid) {
		t.Error("a reaped child is alive")
	}
}
