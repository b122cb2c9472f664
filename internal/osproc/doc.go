// Package osproc is recluster's OS process layer: it starts a worker as a
// real process and follows it until its whole process group is gone. It
// knows processes, process groups, pipes, sockets and /proc, and nothing
// of clusters, generations or reloads; runner uses it through its Starter
// interface.
//
// # What a started process owns
//
// Starter.Start forks (every fork on one locked thread that lives as long
// as recluster, so that the parent-death signal means recluster's death,
// spawn_linux.go), execs the worker's program in its own process
// group, directly or through a one-line shell shim when it inherits
// sockets (shim.go, so that LISTEN_PID is its own pid), and returns a
// Process. The process owns these goroutines, and its Wait (called once,
// by the owner of the worker) joins them all:
//
//   - two output copiers (stdout, stderr), which read the pipes recluster
//     owns in small chunks while the worker is quiet and large ones while
//     it is busy (idleread.go), and end at the pipes' EOF, or at
//     outputDrainCap after the group is gone;
//   - a reader of its notify socket (sd_notify datagrams, checked against
//     the sender's credentials, creds_linux.go) and one of its ready fd;
//   - with readyWhen listening, a wait on the Starter's one listen watcher
//     (listen_linux.go), which looks for every waiting worker's listening
//     socket at once, from sock_diag or /proc/net;
//
// Wait itself waits for the leader's exit on a pidfd (wait_linux.go: no
// thread held per worker), asks what is left of the group to stop, kills
// it after StopTimeout, and returns once the group is gone and the
// goroutines above have ended.
//
// A GroupLog (groups.go) records every live process group in the run
// folder, so that the next `up` ends what a crashed one left, and
// InstanceEnv marks every worker of one config for the processes that
// leave their group.
//
// /proc is read in procfs_linux.go; elsewhere (procfs_other.go) what needs
// it reports nothing.
package osproc
