// Package testbin builds recluster's real binary and the test worker once
// per test process, for tests that drive them as users do.
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
	dirOnce sync.Once
	dir     string
	dirErr  error
	builds  sync.Map // binary name -> *build
)

type build struct {
	once sync.Once
	path string
	err  error
}

// binary builds the package pkg (relative to the repository) once, as
// name in a temporary folder, and returns its path.
func binary(t testing.TB, name, pkg string, env ...string) string {
	t.Helper()
	v, _ := builds.LoadOrStore(name, &build{})
	b := v.(*build)
	b.once.Do(func() {
		dirOnce.Do(func() { dir, dirErr = os.MkdirTemp("", "recluster-bin-") })
		if b.err = dirErr; b.err != nil {
			return
		}
		_, file, _, _ := runtime.Caller(0)
		b.path = filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-o", b.path, pkg)
		cmd.Dir = filepath.Join(filepath.Dir(file), "..", "..")
		cmd.Env = append(os.Environ(), env...)
		cmd.Stderr = os.Stderr
		b.err = cmd.Run()
	})
	if b.err != nil {
		t.Fatalf("building %s: %v", pkg, b.err)
	}
	return b.path
}

// Recluster returns the path of a freshly built recluster binary.
func Recluster(t testing.TB) string { return binary(t, "recluster", "./cmd/recluster") }

// WithView builds recluster-top, the live view, beside the binary that
// Recluster returns, where `recluster top` looks for it.
func WithView(t testing.TB) {
	binary(t, "recluster-top", "./cmd/recluster-top")
}

// StaticRecluster returns recluster built as README.md's install line
// builds it, without cgo.
func StaticRecluster(t testing.TB) string {
	return binary(t, "recluster-static", "./cmd/recluster", "CGO_ENABLED=0")
}

// Worker returns the path of the test worker program (testdata/worker).
func Worker(t testing.TB) string { return binary(t, "worker", "./testdata/worker") }

// Cleanup removes the built binaries; call it from TestMain after m.Run.
func Cleanup() {
	if dir != "" {
		os.RemoveAll(dir)
	}
}
