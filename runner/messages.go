package runner

// A cluster's loop receives messages: requests from callers, each with a
// caller waiting for its reply, and events from its own workers and
// timers. The set is sealed (an unexported marker method), so only the
// types below, build.go's two events and probe.go's three are messages;
// and every request can be refused, so a phase that does not handle one
// answers it instead of leaving its caller blocked until its context
// ends.
type message interface{ isMessage() }

type request interface {
	message
	refuse(err error)
}

type (
	startReq   struct{ reply chan error }
	stopReq    struct{ reply chan error }
	restartReq struct {
		spec  *serviceSpec // nil: the spec in force
		reply chan error
	}
	reloadReq struct {
		spec    *serviceSpec
		reply   chan reloadResult
		trigger string // what asked for it, for status
	}
	scaleReq struct {
		n     int
		reply chan error
	}
	statusReq struct{ reply chan ServiceStatus }
	// killReq sends SIGKILL to every worker at once; nobody waits on it.
	killReq struct{}
	// blockReq: the service was to start after others, and cannot.
	blockReq struct {
		reason string
		reply  chan error
	}
	// settleReq waits until the service runs nothing by itself: a task
	// has completed or failed, or the service stopped. A reload in
	// `after` order waits so on a task that others need completed.
	settleReq struct{ reply chan serviceState }
)

type (
	exitEvent struct {
		w      *worker
		status ExitStatus
	}
	noteEvent struct {
		w    *worker
		note Notification
	}
	readyTimeoutEvent struct{ w *worker }
	// provenEvent: a new worker of a reload stayed ready for minReady.
	provenEvent      struct{ w *worker }
	killTimeoutEvent struct{ w *worker }
	// drainedEvent: a proxied worker has nothing in flight any more, or
	// its drain timed out; either way its stop signal goes now.
	drainedEvent struct {
		w        *worker
		timedOut bool
	}
	respawnEvent struct {
		s     *slot
		token int
	}
	// releasedEvent: the proxy has counted what a gone worker's end cut.
	releasedEvent struct {
		w   *worker
		cut int
	}
)

func (startReq) isMessage()          {}
func (stopReq) isMessage()           {}
func (restartReq) isMessage()        {}
func (reloadReq) isMessage()         {}
func (scaleReq) isMessage()          {}
func (statusReq) isMessage()         {}
func (killReq) isMessage()           {}
func (blockReq) isMessage()          {}
func (settleReq) isMessage()         {}
func (exitEvent) isMessage()         {}
func (noteEvent) isMessage()         {}
func (readyTimeoutEvent) isMessage() {}
func (provenEvent) isMessage()       {}
func (killTimeoutEvent) isMessage()  {}
func (drainedEvent) isMessage()      {}
func (respawnEvent) isMessage()      {}
func (releasedEvent) isMessage()     {}

func (r startReq) refuse(err error)   { r.reply <- err }
func (r stopReq) refuse(err error)    { r.reply <- err }
func (r restartReq) refuse(err error) { r.reply <- err }
func (r reloadReq) refuse(err error)  { r.reply <- reloadResult{err: err} }
func (r scaleReq) refuse(err error)   { r.reply <- err }
func (killReq) refuse(error)          {}
func (r blockReq) refuse(err error)   { r.reply <- err }
func (r settleReq) refuse(err error) {
	r.reply <- serviceState{phase: phaseShutDown, reason: err.Error()}
}

func (r reloadReq) replies() chan reloadResult  { return r.reply }
func (r statusReq) replies() chan ServiceStatus { return r.reply }
func (r settleReq) replies() chan serviceState  { return r.reply }

// statusReq is answered in every phase before any refusal; should one ever
// be refused, its caller still hears, with an empty status.
func (r statusReq) refuse(error) { r.reply <- ServiceStatus{} }

// reloadResult answers a reload: why it failed, or what its old
// generation's stop had to cut short.
type reloadResult struct {
	err    error
	report ReloadReport
}

// ReloadReport says what a reload that succeeded had to cut short while
// its old workers stopped. Its zero value says nothing was.
type ReloadReport struct {
	// Notes name each old worker whose stop cut something: killed at its
	// timeout, or gone with requests or connections it had not finished.
	Notes []string
	// Cut counts the requests and connections those stops cut (through
	// the proxy: requests failed after they reached the worker, tcp
	// connections still open when it went).
	Cut int
}

func (r *ReloadReport) add(o ReloadReport) {
	r.Notes = append(r.Notes, o.Notes...)
	r.Cut += o.Cut
}
