package control

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/recluster/recluster/internal/private"
)

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

// Client talks to one running instance. Before it sends anything it makes
// sure the instance is the user's own, exactly as `up` checks its clients:
// the folder and the socket belong to the user and are closed to others,
// and the process that listens runs as the user (SO_PEERCRED). Anyone else
// could otherwise squat the socket's path and answer in its place.
type Client struct {
	config  string
	sockets []string
	http    *http.Client
	// StatusTimeout bounds quick requests; changes are bounded by the
	// caller's context.
	StatusTimeout time.Duration
}

// NewClient returns a client for the instance of config whose files are at
// paths.
func NewClient(config string, paths Paths) *Client {
	c := &Client{config: config, sockets: paths.sockets(), StatusTimeout: 10 * time.Second}
	tr := &http.Transport{
		DialContext:       func(ctx context.Context, _, _ string) (net.Conn, error) { return c.dial(ctx) },
		DisableKeepAlives: true,
	}
	c.http = &http.Client{Transport: tr}
	return c
}

// ConfigFile is path made absolute, once it names a file that exists:
// the name an instance's control socket is found by.
func ConfigFile(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(abs); err != nil {
		return "", fmt.Errorf("config file %s: %w", abs, err)
	}
	return abs, nil
}

// ClientFor is the client for the instance that runs the config file at
// path.
func ClientFor(path string, getenv func(string) string) (*Client, error) {
	abs, err := ConfigFile(path)
	if err != nil {
		return nil, err
	}
	paths, err := PathsFor(abs, getenv)
	if err != nil {
		return nil, err
	}
	return NewClient(abs, paths), nil
}

// dial connects to the first control socket that exists, after checking
// who owns it.
func (c *Client) dial(ctx context.Context) (net.Conn, error) {
	var lastErr error = &NotRunningError{Config: c.config}
	for _, sock := range c.sockets {
		st, err := os.Lstat(sock)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := private.CheckDir(filepath.Dir(sock)); err != nil {
			return nil, err
		}
		if err == nil && st.Mode()&fs.ModeSymlink != 0 {
			// An instance run with another XDG_RUNTIME_DIR or TMPDIR
			// points here to its socket (InstanceLock.Advertise).
			target, err := os.Readlink(sock)
			if err != nil || !filepath.IsAbs(target) {
				return nil, fmt.Errorf("refusing %s: a link that does not name a socket by its full path", sock)
			}
			if err := private.CheckDir(filepath.Dir(target)); err != nil {
				return nil, err
			}
			sock = target
		}
		if err := private.CheckSocket(sock); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, err
		}
		d := net.Dialer{Timeout: 2 * time.Second}
		conn, err := d.DialContext(ctx, "unix", sock)
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT) {
				lastErr = &NotRunningError{Config: c.config}
				continue
			}
			return nil, fmt.Errorf("control socket %s: %w", sock, err)
		}
		if err := checkPeer(conn, os.Getuid()); err != nil {
			conn.Close()
			return nil, fmt.Errorf("refusing the process behind %s: %w", sock, err)
		}
		return conn, nil
	}
	return nil, lastErr
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
		return c.unwrapDial(err)
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

// unwrapDial takes the HTTP client's wrapping off an error: "not
// running" as it is, anything else said of this instance.
func (c *Client) unwrapDial(err error) error {
	var nr *NotRunningError
	if errors.As(err, &nr) {
		return nr
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("recluster up for %s: %w", c.config, ue.Err)
	}
	return err
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
func (c *Client) Status(ctx context.Context) ([]ServiceStatus, error) {
	ctx, cancel := c.quick(ctx)
	defer cancel()
	var st statusResponse
	err := c.do(ctx, "GET", "/v1/status", nil, &st)
	return st.Services, err
}

// Reload reloads services (all when none), and says what the old
// workers' stop cut short.
func (c *Client) Reload(ctx context.Context, services []string) (Outcome, error) {
	var resp okResponse
	err := c.do(ctx, "POST", "/v1/reload", servicesRequest{services}, &resp)
	return resp.Outcome, err
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
		return c.unwrapDial(err)
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
