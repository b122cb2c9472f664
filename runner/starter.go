package runner

import "github.com/recluster/recluster/internal/osproc"

// Starter starts worker processes. The default (Options.Starter left nil)
// forks and execs, each worker in its own process group with the sockets
// and notify channels of the worker protocol; tests substitute a fake to
// drive timing logic on a fake clock.
type Starter interface {
	Start(spec StartSpec) (Process, error)
}

// What a Starter is given and gives back. They are defined beside the
// starter of real processes, which runner uses by default.
type (
	// StartSpec is everything a Starter needs for one worker.
	StartSpec = osproc.StartSpec
	// Process is one running worker: a process group led by its Pid.
	Process = osproc.Process
	// WorkerRef names one worker of one generation.
	WorkerRef = osproc.WorkerRef
	// Notification is one message from a worker: readiness, status text,
	// a request to be replaced.
	Notification = osproc.Notification
	// ExitStatus is how a worker ended.
	ExitStatus = osproc.ExitStatus
)
