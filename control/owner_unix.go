package control

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

func checkOwner(path string, st fs.FileInfo) error {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Uid) != os.Getuid() {
		return fmt.Errorf("%s belongs to uid %d, not to you (uid %d); remove it or set XDG_RUNTIME_DIR", path, sys.Uid, os.Getuid())
	}
	return nil
}
