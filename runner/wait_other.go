//go:build !linux

package runner

// awaitExit does nothing outside Linux: os.Process.Wait blocks a thread
// per worker there.
func awaitExit(pid int) {}
