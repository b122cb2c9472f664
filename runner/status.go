package runner

import (
	"sort"
	"time"
)

// ServiceStatus is a snapshot of one service, as `status --json` prints it.
type ServiceStatus struct {
	Name       string         `json:"name"`
	Generation int            `json:"generation"`
	Running    bool           `json:"running"`
	Reloading  bool           `json:"reloading"`
	Size       int            `json:"size"`
	Listen     []string       `json:"listen,omitempty"`
	Workers    []WorkerStatus `json:"workers"`
}

// WorkerStatus is one worker, or one slot waiting to respawn (state
// backoff, pid 0).
type WorkerStatus struct {
	ID         int       `json:"id"`
	Pid        int       `json:"pid"`
	State      string    `json:"state"`
	Generation int       `json:"generation"`
	Restarts   int       `json:"restarts"`
	Started    time.Time `json:"started,omitzero"`
	LastExit   string    `json:"lastExit,omitempty"`
	Status     string    `json:"status,omitempty"`
}

func (c *Cluster) status() ServiceStatus {
	st := ServiceStatus{Name: c.name, Generation: c.gen, Running: c.running, Reloading: c.op != nil, Size: c.size}
	for _, l := range c.spec.Listen {
		st.Listen = append(st.Listen, l.String())
	}
	restarts := func(id int) (int, string) {
		if id < len(c.slots) {
			s := c.slots[id]
			if s.lastExit != nil {
				return s.restarts, s.lastExit.String()
			}
			return s.restarts, ""
		}
		return 0, ""
	}
	for w := range c.live {
		n, last := restarts(w.ref.ID)
		st.Workers = append(st.Workers, WorkerStatus{
			ID: w.ref.ID, Pid: w.pid, State: w.state.String(), Generation: w.ref.Generation,
			Restarts: n, Started: w.started, LastExit: last, Status: w.status,
		})
	}
	for _, s := range c.slots {
		if s.cur == nil && s.backoff {
			n, last := restarts(s.id)
			st.Workers = append(st.Workers, WorkerStatus{ID: s.id, State: Backoff.String(), Generation: c.gen, Restarts: n, LastExit: last})
		}
	}
	sort.Slice(st.Workers, func(i, j int) bool {
		a, b := st.Workers[i], st.Workers[j]
		if a.ID != b.ID {
			return a.ID < b.ID
		}
		return a.Generation < b.Generation
	})
	if st.Workers == nil {
		st.Workers = []WorkerStatus{}
	}
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
)

// Event is one change in a cluster, for observers (tests, the control API).
type Event struct {
	Kind       EventKind
	Service    string
	Worker     int
	Generation int
	Pid        int
	Detail     string
}
