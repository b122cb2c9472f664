package osproc

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// checkOutputMax bounds what a check's output keeps: its last bytes,
// which say why it failed.
const checkOutputMax = 512

// Check runs argv (a probe's command) in dir with env, in a process group
// of its own, and returns its error (nil: it exited 0) and the last of
// its output. When ctx ends first the group is killed and the error is
// ctx's. argv[0] is looked up in env's PATH, as a worker's is.
func Check(ctx context.Context, argv []string, dir string, env []string) (string, error) {
	path, err := LookPath(argv[0], Getenv(env, "PATH"), dir)
	if err != nil {
		return "", errors.Unwrap(err)
	}
	cmd := exec.CommandContext(ctx, path, argv[1:]...)
	cmd.Args[0] = argv[0]
	cmd.Dir, cmd.Env = dir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A child of the check that kept its output open would hold Wait
	// forever.
	cmd.WaitDelay = time.Second
	out := &tailBuffer{max: checkOutputMax}
	cmd.Stdout, cmd.Stderr = out, out
	err = cmd.Run()
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	return out.String(), err
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(bytes.TrimSpace(t.buf))
}
