package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/recluster/recluster/internal/netlimit"
	"github.com/recluster/recluster/logmux"
)

// Controller is what the API drives; cli adapts runner.Manager to it. An
// error it returns is answered with the code of the *Error or sentinel it
// wraps (api.go), else as internal.
type Controller interface {
	// Reload says what the old workers' stop cut short.
	Reload(ctx context.Context, services []string) (Outcome, error)
	Restart(ctx context.Context, services []string) error
	Start(ctx context.Context, services []string) error
	Stop(ctx context.Context, services []string) error
	Scale(ctx context.Context, counts map[string]int) error
	Status(ctx context.Context) ([]ServiceStatus, error)
}

// Logs is where the API reads log lines; logmux.Mux satisfies it.
type Logs interface {
	Recent(services []string, n int) []logmux.Line
	Follow(services []string, budget int) *logmux.Follower
}

// Limits on what a client may hold of the server.
const (
	// MaxConns is the most connections served at once; more wait in the
	// listen backlog.
	MaxConns = 64
	// MaxFollowers is the most `logs -f` followers at once. A follower
	// gives its connection's place back, so followers never take the
	// places that commands (`down` included) need; one past the bound
	// is refused at once.
	MaxFollowers = 32
	// bodyTimeout bounds reading a request (headers and body), and
	// writeTimeout each write of an answer: a client that stalls is cut
	// off rather than holding a connection forever.
	bodyTimeout  = 10 * time.Second
	writeTimeout = 10 * time.Second
	idleTimeout  = 30 * time.Second
	maxBody      = 1 << 20
)

// Server serves the control API. Create it with NewServer, then Serve;
// Shutdown stops it. It cannot be reused.
type Server struct {
	ctl  Controller
	logs Logs
	info Info
	down func(ctx context.Context) error
	http *http.Server
	// closing ends the log followers, which would otherwise hold Shutdown
	// for as long as their readers stay.
	closing   chan struct{}
	closeOnce sync.Once
	// bodyTimeout bounds reading a request's body; tests shorten it.
	bodyTimeout time.Duration
	followers   chan struct{} // a place for each `logs -f` follower
}

// NewServer returns a server over ctl and logs. down, called by
// POST /v1/down, stops the whole instance and returns once every worker
// is gone.
func NewServer(ctl Controller, logs Logs, info Info, down func(ctx context.Context) error) *Server {
	s := &Server{ctl: ctl, logs: logs, info: info, down: down, closing: make(chan struct{}), bodyTimeout: bodyTimeout,
		followers: make(chan struct{}, MaxFollowers)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/info", s.handleInfo)
	mux.HandleFunc("GET /v1/status", s.handleStatus)
	mux.HandleFunc("POST /v1/reload", s.change(ctl.Reload))
	mux.HandleFunc("POST /v1/restart", s.change(noNotes(ctl.Restart)))
	mux.HandleFunc("POST /v1/start", s.change(noNotes(ctl.Start)))
	mux.HandleFunc("POST /v1/stop", s.change(noNotes(ctl.Stop)))
	mux.HandleFunc("POST /v1/scale", s.handleScale)
	mux.HandleFunc("POST /v1/down", s.handleDown)
	mux.HandleFunc("GET /v1/logs", s.handleLogs)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: bodyTimeout, IdleTimeout: idleTimeout,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context { return context.WithValue(ctx, connKey{}, c) }}
	return s
}

// Listen opens the control socket at path, private to the user (0600). A
// socket left by a crashed run (nothing answers on it) is replaced; one
// that answers belongs to a live instance and is refused.
func Listen(path string) (net.Listener, error) {
	ln, err := net.Listen("unix", path)
	if err != nil && errors.Is(err, syscall.EADDRINUSE) {
		if c, derr := net.DialTimeout("unix", path, time.Second); derr == nil {
			c.Close()
			return nil, fmt.Errorf("%s: another recluster answers on it", path)
		}
		os.Remove(path)
		ln, err = net.Listen("unix", path)
	}
	if err != nil {
		return nil, err
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	// Other users are refused (the socket's mode already keeps them out,
	// and SO_PEERCRED makes sure of it), and at most MaxConns are served
	// at once, so no client can take every fd of `up`.
	uid := os.Getuid()
	return netlimit.New(ln, MaxConns, func(c net.Conn) error { return checkPeer(c, uid) }), nil
}

// connKey finds a request's connection in its context.
type connKey struct{}

// checkPeer reads the peer's uid from the kernel.
func checkPeer(c net.Conn, uid int) error {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return errors.New("not a unix connection")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	peer, credErr := -1, error(nil)
	raw.Control(func(fd uintptr) { peer, credErr = peerUID(int(fd)) })
	if credErr != nil {
		return credErr
	}
	return allowPeer(peer, uid)
}

// ErrForeignPeer refuses a peer of another user.
var ErrForeignPeer = errors.New("refused: the peer runs as another user")

func allowPeer(peerUID, ownUID int) error {
	if peerUID != ownUID {
		return fmt.Errorf("%w (uid %d, not %d)", ErrForeignPeer, peerUID, ownUID)
	}
	return nil
}

// Serve serves on ln until Shutdown; it returns http.ErrServerClosed then.
func (s *Server) Serve(ln net.Listener) error { return s.http.Serve(ln) }

// Shutdown stops accepting and waits for requests in flight, until ctx
// ends. It may be called more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeOnce.Do(func() { close(s.closing) })
	return s.http.Shutdown(ctx)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(writeTimeout))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	e := toError(err)
	status := http.StatusInternalServerError
	switch e.Code {
	case CodeUnknownService, CodeBadRequest, CodeInvalidConfig:
		status = http.StatusBadRequest
	case CodeSuperseded, CodeWorkerFailed, CodeBuildFailed, CodeStopped:
		status = http.StatusConflict
	}
	writeJSON(w, status, errorResponse{Error: e})
}

// decode reads a JSON body strictly: unknown fields and trailing data are
// errors, and the body is capped in size and in time. The read deadline
// is cleared afterwards: a change may take long, and a deadline left on
// the connection would cancel the request's context.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) error {
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Now().Add(s.bodyTimeout))
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		// The deadline stays, so nothing more is read from this client,
		// and the connection is closed after the answer.
		w.Header().Set("Connection", "close")
		return &Error{Code: CodeBadRequest, Message: "reading the request body: " + err.Error()}
	}
	rc.SetReadDeadline(time.Time{})
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &Error{Code: CodeBadRequest, Message: "bad request body: " + err.Error()}
	}
	if dec.More() {
		return &Error{Code: CodeBadRequest, Message: "bad request body: more than one JSON value"}
	}
	return nil
}

func (s *Server) handleInfo(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.info)
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.ctl.Status(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, statusResponse{Services: st})
}

func (s *Server) change(op func(context.Context, []string) (Outcome, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req servicesRequest
		if err := s.decode(w, r, &req); err != nil {
			writeError(w, err)
			return
		}
		outcome, err := op(r.Context(), req.Services)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, okResponse{OK: true, Outcome: outcome})
	}
}

func noNotes(op func(context.Context, []string) error) func(context.Context, []string) (Outcome, error) {
	return func(ctx context.Context, services []string) (Outcome, error) { return Outcome{}, op(ctx, services) }
}

// MaxScale is the most workers `scale` may ask for, as the config file
// allows.
const MaxScale = 100000

func (s *Server) handleScale(w http.ResponseWriter, r *http.Request) {
	var req scaleRequest
	if err := s.decode(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if len(req.Counts) == 0 {
		writeError(w, &Error{Code: CodeBadRequest, Message: "scale needs at least one SERVICE=N"})
		return
	}
	for name, n := range req.Counts {
		if n < 1 || n > MaxScale {
			writeError(w, &Error{Code: CodeBadRequest, Message: fmt.Sprintf("%s=%d: a service has 1 to %d workers; stop it to run none", name, n, MaxScale)})
			return
		}
	}
	if err := s.ctl.Scale(r.Context(), req.Counts); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, okResponse{OK: true})
}

func (s *Server) handleDown(w http.ResponseWriter, r *http.Request) {
	if err := s.decode(w, r, &struct{}{}); err != nil {
		writeError(w, err)
		return
	}
	if err := s.down(r.Context()); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, okResponse{OK: true})
}

// handleLogs sends the recent lines and, with follow=1, the lines that
// come after. Every write has a deadline, and the follower's backlog is
// bounded in bytes: a reader that stops reading is cut off, never a
// weight on `up`.
func (s *Server) handleLogs(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	services := q["service"]
	n := 100
	if v := q.Get("n"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 0 {
			writeError(w, &Error{Code: CodeBadRequest, Message: fmt.Sprintf("n=%q: want a whole number ≥ 0", v)})
			return
		}
	}
	if st, err := s.ctl.Status(r.Context()); err == nil {
		for _, name := range services {
			if !hasService(st, name) {
				writeError(w, &Error{Code: CodeUnknownService, Message: fmt.Sprintf("unknown service %q", name)})
				return
			}
		}
	}
	follow := q.Get("follow") == "1"
	if follow {
		select {
		case s.followers <- struct{}{}:
			defer func() { <-s.followers }()
		default:
			writeError(w, &Error{Code: CodeBadRequest, Message: fmt.Sprintf("%d followers already (logs -f); end one, or read without -f", MaxFollowers)})
			return
		}
		// A follower lasts: its connection's place goes back to
		// commands.
		if c, ok := r.Context().Value(connKey{}).(*netlimit.Conn); ok {
			c.Release()
		}
	}
	// Subscribe before reading the backlog, so no line falls between.
	var f *logmux.Follower
	if follow {
		f = s.logs.Follow(services, 0)
		defer f.Close()
	}
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Now().Add(writeTimeout))
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	for _, l := range s.logs.Recent(services, n) {
		if enc.Encode(LogEvent{Line: wireLine(&l)}) != nil {
			return
		}
	}
	if rc.Flush() != nil || f == nil {
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	// Owned by this handler; ends when it returns (cancel) or Shutdown
	// closes the server.
	go func() {
		select {
		case <-s.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		batch, err := f.Next(ctx)
		if errors.Is(err, logmux.ErrCutOff) {
			rc.SetWriteDeadline(time.Now().Add(writeTimeout))
			enc.Encode(LogEvent{CutOff: true})
			return
		}
		if err != nil {
			return
		}
		rc.SetWriteDeadline(time.Now().Add(writeTimeout))
		for i := range batch {
			if enc.Encode(LogEvent{Line: wireLine(&batch[i])}) != nil {
				return
			}
		}
		if rc.Flush() != nil {
			return
		}
	}
}

func hasService(st []ServiceStatus, name string) bool {
	for _, s := range st {
		if s.Name == name {
			return true
		}
	}
	return false
}
