package osproc

import (
	"os"

	"golang.org/x/sys/unix"
)

// growPipe enlarges a pipe's kernel buffer from 64 KiB to 1 MiB (the
// unprivileged maximum): a worker that prints fast then blocks less often,
// and recluster moves its lines in bigger batches. It is best effort.
func growPipe(f *os.File) {
	if raw, err := f.SyscallConn(); err == nil {
		raw.Control(func(fd uintptr) { unix.FcntlInt(fd, unix.F_SETPIPE_SZ, 1<<20) })
	}
}
