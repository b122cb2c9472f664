// Package testbin builds recluster's real binary once per test process, for
// tests that drive it as users do.
package testbin

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

var (
	once    sync.Once
	path    string
	err     error
	dir     string
	dirOnce sync.Once
	dirErr  error
)

func binDir() (string, error) {
	dirOnce.Do(func() { dir, dirErr = os.MkdirTemp("", "recluster-bin-") })
	return dir, dirErr
}

// Recluster returns the path of a freshly built recluster binary. Call
// Cleanup from TestMain after m.Run.
func Recluster(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		var dir string
		if dir, err = binDir(); err != nil {
			return
		}
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		path = filepath.Join(dir, "recluster")
		cmd := exec.Command("go", "build", "-o", path, "./cmd/recluster")
		cmd.Dir = root
		cmd.Stderr = os.Stderr
		err = cmd.Run()
	})
	if err != nil {
		t.Fatalf("building recluster: %v", err)
	}
	return path
}

// Cleanup removes the built binary.
func Cleanup() {
	if d, err := binDir(); err == nil {
		os.RemoveAll(d)
	}
}

var (
	workerOnce sync.Once
	workerPath string
	workerErr  error
)

// Worker returns the path of the test worker program (testdata/worker),
// built once per test process.
func Worker(t testing.TB) string {
	t.Helper()
	workerOnce.Do(func() {
		var dir string
		if dir, workerErr = binDir(); workerErr != nil {
			return
		}
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		workerPath = filepath.Join(dir, "worker")
		cmd := exec.Command("go", "build", "-o", workerPath, "./testdata/worker")
		cmd.Dir = root
		cmd.Stderr = os.Stderr
		workerErr = cmd.Run()
	})
	if workerErr != nil {
		t.Fatalf("building the test worker: %v", workerErr)
	}
	return workerPath
}
