//go:build linux

package osproc

import (
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestWaitGroupGoneWaitsForEveryMember: a group whose leader exits at once
// but whose members go on forking: the wait ends only when none is left,
// including a member forked while it waited; with a short limit it says
// the group is still there.
func TestWaitGroupGoneWaitsForEveryMember(t *testing.T) {
	cmd := exec.Command("sh", "-c", "(sleep 0.3; sleep 0.3) & exit 0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pgid := cmd.Process.Pid
	cmd.Wait() // the leader; its group lives on
	if !groupAlive(pgid) {
		t.Fatal("the group ended with its leader")
	}
	if waitGroupGone(pgid, 50*time.Millisecond) {
		t.Error("waitGroupGone said gone while the group's sleeps ran")
	}
	if !waitGroupGone(pgid, 30*time.Second) {
		t.Fatal("waitGroupGone timed out")
	}
	if groupAlive(pgid) {
		t.Error("waitGroupGone returned with a member of the group alive")
	}
}
