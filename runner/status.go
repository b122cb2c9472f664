package runner

import (
	"maps"
	"sort"
	"strconv"
	"time"

	"github.com/recluster/recluster/config"
	"github.com/recluster/recluster/internal/proxy"
)

// ServiceStatus is a snapshot of one service.
type ServiceStatus struct {
	Name string
	// State is stopped, building, running, reloading, stopping, failed,
	// completed, blocked or shut down; Reason says why, when failed or
	// blocked.
	State      string
	Reason     string
	Generation int
	Running    bool
	Reloading  bool
	Size       int
	Listen     []string
	Proxy      string // the proxy's protocol and address (http://127.0.0.1:8080), when there is one
	// Cut counts the requests and connections that workers' ends cut
	// (through the proxy), since the service began.
	Cut int
	// LastReload is the last reload begun, nil before any; Reloads
	// counts those that ended, by outcome (succeeded, failed,
	// superseded).
	LastReload *LastReload
	Reloads    map[string]int
	// Requests, for a service behind an http proxy, is what the proxy
	// has counted since the service began.
	Requests *RequestStats
	Workers  []WorkerStatus
}

// RequestStats are the answers an http proxy gave, by status class
// ("2xx"), and how long they took: Durations[i] counts those that took at
// most DurationBounds[i] seconds, cumulative as Prometheus' buckets are.
type RequestStats struct {
	ByClass        map[string]uint64
	DurationBounds []float64
	Durations      []uint64
	DurationCount  uint64
	DurationSum    float64
}

func requestStats(s proxy.Stats) *RequestStats {
	r := &RequestStats{ByClass: map[string]uint64{}, DurationBounds: proxy.DurationBuckets, DurationSum: s.DurationSum}
	for i, n := range s.Requests {
		r.ByClass[strconv.Itoa(i+1)+"xx"] = n
	}
	for _, n := range s.Durations {
		r.DurationCount += n
		r.Durations = append(r.Durations, r.DurationCount)
	}
	r.DurationCount += s.Slower
	return r
}

// WorkerStatus is one worker, or one slot waiting to respawn (state
// Backoff, pid 0).
type WorkerStatus struct {
	ID         int
	Pid        int
	State      State
	Generation int
	Restarts   int
	Started    time.Time
	LastExit   string
	Status     string
	// Port and InFlight, for a proxied service: the worker's PORT and
	// the connections or requests in flight to it through the proxy.
	Port     int
	InFlight int
	// ExitCode, for a slot whose worker exited for good (state Exited),
	// is its exit code as a shell gives it.
	ExitCode *int
	// Proving: a new worker of a reload, ready for less than minReady.
	Proving bool
	// Health is what its readiness or health probe last said; nil for a
	// service without probes.
	Health *HealthStatus
	// RSS is its process group's resident memory in bytes, and
	// CPUSeconds the CPU time its live processes have used, when known.
	RSS        int64
	CPUSeconds float64
	// Replaced is the last time its slot's worker was replaced by one
	// started beside it, and why.
	Replaced *Replacement
}

func (c *cluster) status() ServiceStatus {
	st := ServiceStatus{Name: c.name, Running: c.phase == phaseServing || c.phase == phaseReloading,
		Reloading: c.phase == phaseReloading, Size: c.size, State: c.phase.String(), Cut: c.cutTotal}
	switch {
	case c.phase == phaseServing && c.current != nil && c.current.build != nil:
		st.State = "building"
	case c.phase == phaseServing:
		st.State = "running"
	case c.phase.ended() && c.failure != nil:
		st.Reason = c.failure.Error()
	}
	if c.current != nil {
		st.Generation = c.current.num
	}
	if r := c.lastReload; r != nil {
		copied := *r
		st.LastReload = &copied
	}
	for _, l := range c.spec.Listen {
		st.Listen = append(st.Listen, l.String())
	}
	if p := c.spec.Proxy; p != nil {
		st.Proxy = p.String()
		if h := c.routers[p.Address]; h != nil && p.Protocol == config.ProtocolHTTP {
			if r, ok := h.router.(interface{ Stats() proxy.Stats }); ok {
				st.Requests = requestStats(r.Stats())
			}
		}
	}
	if len(c.reloads) > 0 {
		st.Reloads = maps.Clone(c.reloads)
	}
	history := func(id int) (int, string) {
		if id < len(c.slots) {
			if s := c.slots[id]; s.lastExit != nil {
				return s.restarts, s.lastExit.String()
			} else {
				return s.restarts, ""
			}
		}
		return 0, ""
	}
	for w := range c.live {
		n, last := history(w.ref.ID)
		ws := WorkerStatus{ID: w.ref.ID, Pid: w.pid, State: w.state, Generation: w.ref.Generation,
			Restarts: n, Started: w.started, LastExit: last, Status: w.status, Port: w.port, Proving: w.proving != nil, RSS: w.rss}
		if w.health != nil {
			h := *w.health
			ws.Health = &h
		}
		if s := c.slotOf(w); s != nil && s.replaced != nil && s.worker == w {
			r := *s.replaced
			ws.Replaced = &r
		}
		if h := w.gen.router; h != nil {
			ws.InFlight = h.router.InFlight(backendKey(w))
		}
		st.Workers = append(st.Workers, ws)
	}
	for _, s := range c.slots {
		if s.worker == nil && (s.backoff || s.done) {
			n, last := history(s.id)
			state := Backoff
			if s.done {
				state = Exited
			}
			ws := WorkerStatus{ID: s.id, State: state, Generation: c.current.num, Restarts: n, LastExit: last}
			if s.lastExit != nil {
				code := s.lastExit.ShellCode()
				ws.ExitCode = &code
			}
			st.Workers = append(st.Workers, ws)
		}
	}
	sort.Slice(st.Workers, func(i, j int) bool {
		a, b := st.Workers[i], st.Workers[j]
		if a.ID != b.ID {
			return a.ID < b.ID
		}
		return a.Generation < b.Generation
	})
	return st
}

// EventKind names what happened in a cluster.
type EventKind string

const (
	EventSpawned      EventKind = "spawned"
	EventReady        EventKind = "ready"
	EventExited       EventKind = "exited"
	EventBackoff      EventKind = "backoff"
	EventStarted      EventKind = "started"
	EventAllReady     EventKind = "all-ready"
	EventReloading    EventKind = "reloading"
	EventReloaded     EventKind = "reloaded"
	EventReloadFailed EventKind = "reload-failed"
	// EventCrashed: a serving worker exited by itself with a failure
	// (Code is its exit code as a shell gives it); it may be respawned.
	EventCrashed EventKind = "crashed"
	// EventFailed: the service is failed (Code: the exit that failed it,
	// or 1); EventCompleted: a task is done; EventBlocked: the service
	// cannot start after what it waits for.
	EventFailed    EventKind = "failed"
	EventCompleted EventKind = "completed"
	EventBlocked   EventKind = "blocked"
)

// Event is one change in a cluster, for observers (tests, the log).
type Event struct {
	Kind       EventKind
	Service    string
	Worker     int
	Generation int
	Pid        int
	Detail     string
	Code       int
}
