package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"github.com/recluster/recluster/config"
	"github.com/recluster/recluster/runner"
)

// Error codes carried in responses, so that errors.Is works across the
// socket.
const (
	CodeUnknownService = "unknown_service"
	CodeSuperseded     = "superseded"
	CodeStopped        = "stopped"
	CodeShuttingDown   = "shutting_down"
	CodeWorkerFailed   = "worker_failed"
	CodeInvalidConfig  = "invalid_config"
	CodeBadRequest     = "bad_request"
	CodeInternal       = "internal"
)

var sentinels = map[string]error{
	CodeUnknownService: runner.ErrUnknownService,
	CodeSuperseded:     runner.ErrSuperseded,
	CodeStopped:        runner.ErrStopped,
	CodeShuttingDown:   runner.ErrShuttingDown,
}

// Error is an error the server answered with.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Is matches the runner's sentinel errors by code.
func (e *Error) Is(target error) bool {
	s, ok := sentinels[e.Code]
	return ok && s == target
}

type errorResponse struct {
	Error *Error `json:"error"`
}

func toError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	code := CodeInternal
	for c, s := range sentinels {
		if errors.Is(err, s) {
			code = c
		}
	}
	var wf *runner.WorkerFailedError
	if errors.As(err, &wf) {
		code = CodeWorkerFailed
	}
	if config.Problems(err) != nil {
		code = CodeInvalidConfig
	}
	return &Error{Code: code, Message: err.Error()}
}

// ErrNotRunning is returned when no instance answers for a config file.
var ErrNotRunning = errors.New("not running")

// NotRunningError names the config file nothing runs for.
type NotRunningError struct {
	Config string
}

func (e *NotRunningError) Error() string {
	return fmt.Sprintf("recluster is not running for %s; start it with `recluster up -f %s`", e.Config, e.Config)
}

func (e *NotRunningError) Unwrap() error { return ErrNotRunning }

// Client talks to one running instance.
type Client struct {
	config string
	socket string
	http   *http.Client
	// StatusTimeout bounds quick requests; changes are bounded by the
	// caller's context.
	StatusTimeout time.Duration
}

// NewClient returns a client for the instance of config whose socket is
// at socket.
func NewClient(config, socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			d.Timeout = 2 * time.Second
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}
	return &Client{config: config, socket: socket, http: &http.Client{Transport: tr}, StatusTimeout: 10 * time.Second}
}

func (c *Client) do(ctx context.Context, method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://recluster"+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.dialError(err)
	}
	defer resp.Body.Close()
	return decodeResponse(resp, out)
}

func decodeResponse(resp *http.Response, out any) error {
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var er errorResponse
		if json.Unmarshal(data, &er) == nil && er.Error != nil {
			return er.Error
		}
		return fmt.Errorf("control API: %s: %s", resp.Status, bytes.TrimSpace(data))
	}
	if out != nil {
		return json.Unmarshal(data, out)
	}
	return nil
}

// dialError turns "nobody listens" into NotRunningError.
func (c *Client) dialError(err error) error {
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		return &NotRunningError{Config: c.config}
	}
	return fmt.Errorf("control socket %s: %w", c.socket, err)
}

func (c *Client) quick(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.StatusTimeout)
}

// Info returns the running instance's pid and config.
func (c *Client) Info(ctx context.Context) (Info, error) {
	ctx, cancel := c.quick(ctx)
	defer cancel()
	var info Info
	err := c.do(ctx, "GET", "/v1/info", nil, &info)
	return info, err
}

// Status returns every service's status.
func (c *Client) Status(ctx context.Context) ([]runner.ServiceStatus, error) {
	ctx, cancel := c.quick(ctx)
	defer cancel()
	var st statusResponse
	err := c.do(ctx, "GET", "/v1/status", nil, &st)
	return st.Services, err
}

// Reload reloads services (all when none).
func (c *Client) Reload(ctx context.Context, services []string) error {
	return c.do(ctx, "POST", "/v1/reload", servicesRequest{services}, nil)
}

// Restart restarts services (all when none).
func (c *Client) Restart(ctx context.Context, services []string) error {
	return c.do(ctx, "POST", "/v1/restart", servicesRequest{services}, nil)
}

// Start starts services.
func (c *Client) Start(ctx context.Context, services []string) error {
	return c.do(ctx, "POST", "/v1/start", servicesRequest{services}, nil)
}

// Stop stops services.
func (c *Client) Stop(ctx context.Context, services []string) error {
	return c.do(ctx, "POST", "/v1/stop", servicesRequest{services}, nil)
}

// Scale sets worker counts.
func (c *Client) Scale(ctx context.Context, counts map[string]int) error {
	return c.do(ctx, "POST", "/v1/scale", scaleRequest{counts}, nil)
}

// Down stops every service and ends `recluster up`.
func (c *Client) Down(ctx context.Context) error {
	return c.do(ctx, "POST", "/v1/down", struct{}{}, nil)
}

// Logs reads the last n lines of services and, with follow, the lines that
// come after, calling each for every event until ctx ends or the server
// does.
func (c *Client) Logs(ctx context.Context, services []string, n int, follow bool, each func(LogEvent) error) error {
	q := url.Values{}
	for _, s := range services {
		q.Add("service", s)
	}
	q.Set("n", strconv.Itoa(n))
	if follow {
		q.Set("follow", "1")
	}
	if !follow {
		var cancel context.CancelFunc
		ctx, cancel = c.quick(ctx)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, "GET", "http://recluster/v1/logs?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.dialError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return decodeResponse(resp, nil)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 128<<20)
	for sc.Scan() {
		var ev LogEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("logs: %w", err)
		}
		if err := each(ev); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}
