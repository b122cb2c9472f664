package control

import (
	"errors"
	"time"

	"github.com/recluster/recluster/logmux"
	"github.com/recluster/recluster/runner"
)

// The wire format of the control API. Every type and code here is part of
// the API that users script against (README.md documents it): the runner
// has its own types, and cli adapts them to these, so a change inside the
// runner cannot change the API by accident.

// ServiceStatus is one service in GET /v1/status and `status --json`.
type ServiceStatus struct {
	Name string `json:"name"`
	// State is stopped, building, running, reloading, stopping, failed,
	// completed, blocked or shut down; Reason says why, when failed or
	// blocked.
	State      string   `json:"state"`
	Reason     string   `json:"reason,omitempty"`
	Generation int      `json:"generation"`
	Running    bool     `json:"running"`
	Reloading  bool     `json:"reloading"`
	Size       int      `json:"size"`
	Listen     []string `json:"listen,omitempty"`
	Proxy      string   `json:"proxy,omitempty"`
	// Cut counts the requests and connections that workers' ends cut,
	// since the service began.
	Cut int `json:"cut,omitempty"`
	// LastReload is the last reload begun, absent before any; Reloads
	// counts those that ended, by outcome.
	LastReload *ReloadStatus  `json:"lastReload,omitempty"`
	Reloads    map[string]int `json:"reloads,omitempty"`
	// Requests, behind an http proxy, counts its answers by status class
	// ("2xx") and how long they took in all.
	Requests *Requests      `json:"requests,omitempty"`
	Workers  []WorkerStatus `json:"workers"`
}

// Requests are what a service's http proxy has answered.
type Requests struct {
	ByClass map[string]uint64 `json:"byClass"`
	// Count and Seconds: the requests timed, and their time in all.
	Count   uint64  `json:"count"`
	Seconds float64 `json:"seconds"`
}

// ReloadStatus is a service's last reload.
type ReloadStatus struct {
	Started time.Time `json:"started"`
	// Seconds it took; 0 while it runs.
	Seconds float64 `json:"seconds"`
	// Trigger is what asked for it: reload, SIGUSR2, "watch: FILE",
	// "config saved".
	Trigger    string `json:"trigger,omitempty"`
	Outcome    string `json:"outcome"` // running, succeeded, failed or superseded
	Generation int    `json:"generation,omitempty"`
	// Reason and Lines, for a failure: why, and the worker's lines that
	// say it.
	Reason string   `json:"reason,omitempty"`
	Lines  []string `json:"lines,omitempty"`
}

// WorkerStatus is one worker, or one slot with no process: waiting to
// respawn (state backoff, pid 0), or done (state exited, pid 0).
type WorkerStatus struct {
	ID         int       `json:"id"`
	Pid        int       `json:"pid"`
	State      string    `json:"state"`
	Generation int       `json:"generation"`
	Restarts   int       `json:"restarts"`
	Started    time.Time `json:"started,omitzero"`
	LastExit   string    `json:"lastExit,omitempty"`
	Status     string    `json:"status,omitempty"`
	// Port and InFlight, for a service behind a proxy: the worker's own
	// PORT and the connections (tcp) or requests (http) in flight to it.
	Port     int `json:"port,omitempty"`
	InFlight int `json:"inFlight"`
	// ExitCode, for a worker that exited for good (state exited: a
	// task's), is its exit code as a shell gives it (128+n for signal n).
	ExitCode *int `json:"exitCode,omitempty"`
	// RSS is its process group's resident memory in bytes, CPUSeconds the
	// CPU time its live processes have used (0: unknown).
	RSS        int64   `json:"rss,omitempty"`
	CPUSeconds float64 `json:"cpuSeconds,omitempty"`
	// Health is what its probe last said (readyWhen or health); absent
	// for a service without probes.
	Health *Health `json:"health,omitempty"`
	// Replaced is the last time its slot's worker was replaced by one
	// started beside it (it asked, failed its health check, or outgrew
	// maxMemory).
	Replaced *Replaced `json:"replaced,omitempty"`
}

// Health is the last probe of a worker.
type Health struct {
	// Probe is http, tcp, exec or output; Ready says it was the
	// readiness probe, not the health one.
	Probe  string    `json:"probe"`
	Ready  bool      `json:"ready,omitempty"`
	At     time.Time `json:"at"`
	OK     bool      `json:"ok"`
	Detail string    `json:"detail"`
	// Failures counts the health probes failed in a row.
	Failures int `json:"failures"`
}

// Replaced is one worker replaced with zero downtime, and why.
type Replaced struct {
	At     time.Time `json:"at"`
	Reason string    `json:"reason"`
}

// Info describes the running instance: GET /v1/info.
type Info struct {
	Pid     int    `json:"pid"`
	Config  string `json:"config"`
	Version string `json:"version"`
}

// LogEvent is one message of GET /v1/logs: a line, or the notice that a
// follower was cut off for falling behind.
type LogEvent struct {
	Line   *LogLine `json:"line,omitempty"`
	CutOff bool     `json:"cutOff,omitempty"`
}

// LogLine is one line of output on the wire: control's own form of a
// logmux.Line, whose text is a string (bytes that are not UTF-8 arrive as
// U+FFFD, as a terminal would show them), so that any client reads it as
// it reads the rest of the API, and logmux stays free to change.
type LogLine struct {
	Service    string    `json:"service"`
	Worker     int       `json:"worker"` // WORKER_ID; logmux.System for recluster's own lines
	Generation int       `json:"generation"`
	Stderr     bool      `json:"stderr,omitempty"`
	Retiring   bool      `json:"retiring,omitempty"` // its worker is being replaced
	Time       time.Time `json:"time"`
	Text       string    `json:"text"`
	// Split marks a piece of a line too long to send whole; the line goes
	// on in the next piece.
	Split bool `json:"split,omitempty"`
	// Omitted counts the bytes of the line that were not kept.
	Omitted int `json:"omitted,omitempty"`
}

func wireLine(l *logmux.Line) *LogLine {
	return &LogLine{Service: l.Source.Service, Worker: l.Source.ID, Generation: l.Source.Generation,
		Stderr: l.Stderr, Retiring: l.Retiring, Time: l.Time, Text: string(l.Text), Split: l.Split, Omitted: l.Omitted}
}

// Line is the line as logmux formats it.
func (l *LogLine) Line() *logmux.Line {
	return &logmux.Line{Source: logmux.Source{Service: l.Service, ID: l.Worker, Generation: l.Generation},
		Stderr: l.Stderr, Retiring: l.Retiring, Time: l.Time, Text: []byte(l.Text), Split: l.Split, Omitted: l.Omitted}
}

type servicesRequest struct {
	Services []string `json:"services"`
}

type scaleRequest struct {
	Counts map[string]int `json:"counts"`
}

type okResponse struct {
	OK bool `json:"ok"`
	Outcome
}

// Outcome says what a successful change had to cut short: nothing, in its
// zero value.
type Outcome struct {
	// Notes name each worker whose stop cut something: killed at the end
	// of its timeout, or gone with work it had not finished.
	Notes []string `json:"notes,omitempty"`
	// Cut counts the requests and connections cut.
	Cut int `json:"cut,omitempty"`
}

type statusResponse struct {
	Services []ServiceStatus `json:"services"`
}

type errorResponse struct {
	Error *Error `json:"error"`
}

// Error codes carried in responses, so that errors.Is works across the
// socket.
const (
	CodeUnknownService = "unknown_service"
	CodeSuperseded     = "superseded"
	CodeStopped        = "stopped"
	CodeShuttingDown   = "shutting_down"
	CodeWorkerFailed   = "worker_failed"
	CodeBuildFailed    = "build_failed"
	CodeInvalidConfig  = "invalid_config"
	CodeBadRequest     = "bad_request"
	CodeInternal       = "internal"
)

// Errors that callers branch on, on either side of the socket. The first
// four are the runner's own: one value each, whether an error came from a
// Manager in this process or over the socket.
var (
	ErrUnknownService = runner.ErrUnknownService
	ErrSuperseded     = runner.ErrSuperseded
	ErrStopped        = runner.ErrStopped
	ErrShuttingDown   = runner.ErrShuttingDown
	ErrWorkerFailed   = errors.New("a worker failed")
	ErrBuildFailed    = errors.New("a build failed")
	ErrInvalidConfig  = errors.New("the config file is invalid")
)

var sentinels = map[string]error{
	CodeUnknownService: ErrUnknownService,
	CodeSuperseded:     ErrSuperseded,
	CodeStopped:        ErrStopped,
	CodeShuttingDown:   ErrShuttingDown,
	CodeWorkerFailed:   ErrWorkerFailed,
	CodeBuildFailed:    ErrBuildFailed,
	CodeInvalidConfig:  ErrInvalidConfig,
}

// Error is an error the server answered with, or one a Controller returns
// to choose the code it is answered with.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Is matches the sentinel errors by code.
func (e *Error) Is(target error) bool {
	s, ok := sentinels[e.Code]
	return ok && s == target
}

// toError gives err its code: its own when it is an *Error, else the code
// of the sentinel it wraps, else internal.
func toError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	for code, s := range sentinels {
		if errors.Is(err, s) {
			return &Error{Code: code, Message: err.Error()}
		}
	}
	return &Error{Code: CodeInternal, Message: err.Error()}
}
