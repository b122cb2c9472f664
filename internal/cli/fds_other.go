//go:build !linux

package cli

import "golang.org/x/sys/unix"

// closeInheritedFDs marks every descriptor above stderr close-on-exec, so
// that what recluster itself inherited never reaches a worker.
func closeInheritedFDs() {
	var lim unix.Rlimit
	n := 1024
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil && lim.Cur < 1<<16 {
		n = int(lim.Cur)
	}
	for fd := 3; fd < n; fd++ {
		unix.CloseOnExec(fd)
	}
}
