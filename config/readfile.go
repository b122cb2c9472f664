package config

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// Caps on the files the config reads. A config file or an env file is
// text a person wrote: a cap far above any real one keeps a mistake
// (`envFile: /dev/zero`, a log file named by accident) from costing
// recluster its memory.
const (
	MaxConfigBytes  = 4 << 20
	MaxEnvFileBytes = 1 << 20
)

// readRegular reads the regular file at path, of at most limit bytes.
// Anything else is refused without waiting on it: a FIFO opened
// non-blocking returns at once, and fstat says what it is. what names the
// setting that names the file, for the error.
func readRegular(path string, limit int64, what string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is %s, not a regular file; %s must name a regular file", path, fileKind(fi.Mode()), what)
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s is %d bytes; %s may name a file of at most %d bytes (%d MiB)", path, fi.Size(), what, limit, limit>>20)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s grew past %d bytes while it was read; %s may name a file of at most %d MiB", path, limit, what, limit>>20)
	}
	return data, nil
}

func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a folder"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "not a plain file"
}
