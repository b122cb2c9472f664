// Package load is the load client of recluster's tests and benchmarks: a
// few connections that send requests as fast as they are answered, never
// retry, and sort every failure by kind.
package load

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Client sends requests to one address until Finish.
type Client struct {
	url       string
	keepAlive bool
	pause     time.Duration
	ok        atomic.Int64
	mu        sync.Mutex
	failures  map[string]int
	examples  []string
	latencies []time.Duration // when Options.Latencies
	record    bool
	stop      chan struct{}
	served    chan struct{} // signalled after every success
	wg        sync.WaitGroup
}

// Options say how to load.
type Options struct {
	// Conns is the number of concurrent clients (default 4).
	Conns int
	// KeepAlive reuses connections: each request is a POST, which Go's
	// client never retries on a connection the server closed, as wrk
	// never retries. Without it, each request has a connection of its
	// own.
	KeepAlive bool
	// Path is requested (default "/").
	Path string
	// Latencies records every request's latency.
	Latencies bool
	// Pause is how long each client waits after a request before the
	// next; 0 is saturation.
	Pause time.Duration
}

// Start begins loading http://addr.
func Start(addr string, o Options) *Client {
	if o.Conns <= 0 {
		o.Conns = 4
	}
	if o.Path == "" {
		o.Path = "/"
	}
	c := &Client{url: "http://" + addr + o.Path, keepAlive: o.KeepAlive, pause: o.Pause, record: o.Latencies,
		failures: map[string]int{}, stop: make(chan struct{}), served: make(chan struct{}, 1)}
	for i := 0; i < o.Conns; i++ {
		c.wg.Add(1)
		// Owned by the Client; ends at Finish.
		go c.run()
	}
	return c
}

func (c *Client) run() {
	defer c.wg.Done()
	hc := &http.Client{
		Transport: &http.Transport{DisableKeepAlives: !c.keepAlive, MaxIdleConnsPerHost: 1},
		Timeout:   30 * time.Second,
	}
	defer hc.CloseIdleConnections()
	next := make(chan time.Time) // at saturation, closed: always ready
	close(next)
	var due <-chan time.Time = next
	for {
		select {
		case <-c.stop:
			return
		case <-due:
		}
		if c.pause > 0 {
			due = time.After(c.pause)
		}
		start := time.Now()
		var resp *http.Response
		var err error
		if c.keepAlive {
			resp, err = hc.Post(c.url, "text/plain", strings.NewReader("x"))
		} else {
			resp, err = hc.Get(c.url)
		}
		if err != nil {
			c.fail(Classify(err), err.Error())
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case err != nil:
			c.fail(Classify(err), err.Error())
		case resp.StatusCode != 200:
			c.fail("non-200", fmt.Sprintf("%d %.200s", resp.StatusCode, body))
		default:
			c.ok.Add(1)
			if c.record {
				c.mu.Lock()
				c.latencies = append(c.latencies, time.Since(start))
				c.mu.Unlock()
			}
			select {
			case c.served <- struct{}{}:
			default:
			}
		}
	}
}

// Classify names the kind of a failed request.
func Classify(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case strings.Contains(strings.ToLower(err.Error()), "timeout"):
		return "timeout"
	}
	return "other"
}

func (c *Client) fail(kind, msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failures[kind]++
	if len(c.examples) < 5 {
		c.examples = append(c.examples, msg)
	}
}

// Served says how many requests succeeded so far.
func (c *Client) Served() int64 { return c.ok.Load() }

// WaitServed waits until n more requests have succeeded, or d has passed;
// it reports whether they did.
func (c *Client) WaitServed(n int64, d time.Duration) bool {
	target := c.ok.Load() + n
	timeout := time.After(d)
	for c.ok.Load() < target {
		select {
		case <-timeout:
			return false
		case <-c.served:
		}
	}
	return true
}

// Result is what a Client saw.
type Result struct {
	OK        int64
	Failures  map[string]int
	Examples  []string
	Latencies []time.Duration
}

// Failed counts the failed requests.
func (r Result) Failed() int {
	n := 0
	for _, v := range r.Failures {
		n += v
	}
	return n
}

// Snapshot returns what was seen so far.
func (c *Client) Snapshot() Result {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := map[string]int{}
	for k, v := range c.failures {
		f[k] = v
	}
	return Result{OK: c.ok.Load(), Failures: f, Examples: append([]string(nil), c.examples...)}
}

// Finish stops the load and returns what it saw.
func (c *Client) Finish() Result {
	close(c.stop)
	c.wg.Wait()
	r := c.Snapshot()
	r.Latencies = c.latencies
	return r
}
