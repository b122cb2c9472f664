// Package runner supervises services: each a cluster of identical worker
// processes, kept at its size, respawned with backoff, and replaced by a
// new generation with zero downtime on reload.
//
// # Who owns what
//
// Manager → cluster → generation → worker → process. Each owner starts
// the goroutines of what it owns and does not return before they end:
//
//   - Manager.Run starts one goroutine per cluster (running cluster.run),
//     plus one per service waiting for its `after` dependencies; it
//     returns once every cluster's run has returned, which it brings about
//     by cancelling their contexts after stopping them in reverse `after`
//     order. A service removed by a reload has its context cancelled then.
//   - cluster.run is the only goroutine that touches a cluster's state:
//     its phase (cluster.go), generations, slots and workers. Callers talk
//     to it with requests and it hears of its workers and timers through
//     events (messages.go). It returns once its context has ended and
//     every worker of every generation is gone.
//   - A generation (generation.go) is one set of workers started from one
//     spec, holding one lease on the service's sockets (sockets.go). It
//     owns no goroutine; the cluster retires it, and its lease is released
//     when its last worker is gone.
//   - A worker (worker.go) owns one goroutine that waits for its process
//     and sends the exit to the cluster; the cluster's run does not return
//     before it has received every exit. Timers (readiness, kill, respawn)
//     are time.AfterFunc callbacks that deliver an event or give up once
//     the cluster's run has returned.
//   - A worker's probes (probe.go) run on a goroutine of its own, which
//     sends each result to the loop and ends once the worker has exited;
//     the memory of a service with maxMemory is read from /proc on a
//     goroutine the loop starts every few seconds.
//   - A process comes from a Starter (starter.go); the real one is the OS
//     process layer, internal/osproc, whose doc says what a process owns.
//     Its Wait joins all of it.
//
// The whole of a reload, from the new generation's start to its promotion,
// abort or supersession, is in reload.go; what happens to a request in
// flight through the proxy meanwhile, and how long it has, is in drain.go.
package runner
