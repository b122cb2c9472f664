//go:build !linux

package osproc

import (
	"os"
	"syscall"
)

// startProcess starts a process in its own process group. Without a
// parent-death signal outside Linux, workers outlive a killed recluster
// until the next `recluster up` ends their groups from the state file.
func startProcess(path string, argv []string, attr *os.ProcAttr) (*os.Process, error) {
	attr.Sys = &syscall.SysProcAttr{Setpgid: true}
	return os.StartProcess(path, argv, attr)
}
