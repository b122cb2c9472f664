package osproc

import (
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/recluster/recluster/config"
	"golang.org/x/sys/unix"
)

// Process is one running worker: a process group led by Pid.
type Process interface {
	Pid() int
	// Signal sends sig to the whole process group. After Wait has
	// returned it does nothing.
	Signal(sig syscall.Signal) error
	// Wait blocks until the leader has exited, every other process of its
	// group is gone, the worker's output has been handed on and its
	// notifications delivered. The caller owns it: call it exactly once.
	Wait() ExitStatus
}

// StartSpec is everything a Starter needs for one worker.
type StartSpec struct {
	Worker WorkerRef
	Argv   []string
	Dir    string
	// Env is the complete environment, NAME=value, without the socket
	// activation and notify variables, which the starter adds.
	Env []string
	// Listeners are inherited as fds 3, 4, …; Names are their
	// LISTEN_FDNAMES, one per listener.
	Listeners []*os.File
	Names     []string
	// Port, when not 0, is the worker's own PORT (a proxied service's):
	// with readyWhen listening, it is ready when it listens there.
	Port      int
	ReadyWhen config.ReadyWhen
	// Stdout and Stderr receive the worker's output; the starter closes
	// them once the output is drained, before Wait returns.
	Stdout, Stderr io.WriteCloser
	// After the leader exits, what is left of its group is asked to stop
	// with StopSignal, then killed after StopTimeout.
	StopSignal  syscall.Signal
	StopTimeout time.Duration
	// Notify receives what the worker tells recluster: readiness, status
	// text and requests to be replaced. It is called from the starter's
	// goroutines, never after Wait returns, and may block.
	Notify func(Notification)
}

// WorkerRef names one worker of one generation.
type WorkerRef struct {
	Service    string
	ID         int
	Generation int
}

func (w WorkerRef) String() string { return fmt.Sprintf("%s.%d", w.Service, w.ID) }

// Notification is one message from a worker (sd_notify fields, or a line on
// its ready fd).
type Notification struct {
	Ready    bool
	Stopping bool
	// Status is set when HasStatus: the worker's STATUS= text.
	Status    string
	HasStatus bool
	// Listening is where the worker was seen listening, when readiness
	// came from looking.
	Listening string
	// Notice is a line to log about the worker: a notification from a
	// process outside it that was ignored, or a port it listens on that
	// is not the one it was given. Each kind is said once per worker.
	Notice string
}

// parseNotification reads an sd_notify datagram: newline-separated
// KEY=VALUE fields. READY=1, STATUS=… and STOPPING=1 count; the rest of the
// protocol (MAINPID, WATCHDOG, …) is ignored, as unknown fields must be.
func parseNotification(msg []byte) Notification {
	var n Notification
	for _, line := range strings.Split(string(msg), "\n") {
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		switch key {
		case "READY":
			n.Ready = n.Ready || value == "1"
		case "STOPPING":
			n.Stopping = n.Stopping || value == "1"
		case "STATUS":
			n.Status, n.HasStatus = value, true
		}
	}
	return n
}

// readyLine reads one line from the ready fd: a notification when it is
// one, and readiness otherwise, so `echo ready >&$RECLUSTER_READY_FD`
// works.
func readyLine(line []byte) Notification {
	n := parseNotification(line)
	if !n.Ready && !n.Stopping && !n.HasStatus {
		n.Ready = true
	}
	return n
}

// ExitStatus is how a worker ended.
type ExitStatus struct {
	// Code is the exit code, or -1 when a signal ended it.
	Code   int
	Signal syscall.Signal
	// Err is set when the worker never ran (its program was not found).
	Err error
}

// Success says whether the worker ran and exited 0.
func (s ExitStatus) Success() bool { return s.Err == nil && s.Code == 0 }

// ShellCode is the exit code as a shell reports it: the code, 128+n for
// death by signal n, 127 for a program that could not be started.
func (s ExitStatus) ShellCode() int {
	switch {
	case s.Err != nil:
		return 127
	case s.Code < 0:
		return 128 + int(s.Signal)
	}
	return s.Code
}

func (s ExitStatus) String() string {
	switch {
	case s.Err != nil:
		return s.Err.Error()
	case s.Code < 0:
		return "killed by " + unix.SignalName(s.Signal)
	default:
		return fmt.Sprintf("exit code %d", s.Code)
	}
}
