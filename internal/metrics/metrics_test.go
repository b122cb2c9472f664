package metrics

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/recluster/recluster/internal/netlimit"
	"github.com/recluster/recluster/runner"
)

func stack() []runner.ServiceStatus {
	return []runner.ServiceStatus{
		{Name: "web", Generation: 3, Running: true, Proxy: "http://127.0.0.1:8080", Cut: 2,
			Reloads: map[string]int{"succeeded": 2, "failed": 1},
			Requests: &runner.RequestStats{ByClass: map[string]uint64{"2xx": 90, "5xx": 1},
				DurationBounds: []float64{0.005, 0.01}, Durations: []uint64{50, 80}, DurationCount: 91, DurationSum: 1.5},
			Workers: []runner.WorkerStatus{
				{ID: 0, Pid: 10, State: runner.Ready, Generation: 3, Restarts: 1, InFlight: 2, RSS: 1 << 20, CPUSeconds: 0.5,
					Health: &runner.HealthStatus{Probe: "http", OK: true}},
				{ID: 1, Pid: 11, State: runner.Ready, Generation: 3, Proving: true, RSS: 2 << 20, CPUSeconds: 0.25},
			}},
		{Name: "clock", Generation: 1, Running: true, Workers: []runner.WorkerStatus{{ID: 0, Pid: 12, State: runner.Starting, Generation: 1}}},
	}
}

// TestTheFormatIsPrometheus: what Write writes is read back by
// Prometheus' own parser with every value where it was put, and
// promtool's linter finds nothing, where it is installed.
func TestTheFormatIsPrometheus(t *testing.T) {
	var out bytes.Buffer
	if err := Write(&out, stack()); err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(out.Bytes()))
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	value := func(name string, want map[string]string) float64 {
		t.Helper()
		f := families[name]
		if f == nil {
			t.Fatalf("no %s in:\n%s", name, out.String())
		}
	metrics:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
					continue metrics
				}
			}
			switch {
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
		t.Fatalf("no %s%v in:\n%s", name, want, out.String())
		return 0
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"recluster_workers", map[string]string{"service": "web", "state": "ready"}, 1},
		{"recluster_workers", map[string]string{"service": "web", "state": "proving"}, 1},
		{"recluster_workers", map[string]string{"service": "web", "state": "backoff"}, 0},
		{"recluster_workers", map[string]string{"service": "clock", "state": "starting"}, 1},
		{"recluster_service_generation", map[string]string{"service": "web"}, 3},
		{"recluster_restarts_total", map[string]string{"service": "web"}, 1},
		{"recluster_reloads_total", map[string]string{"service": "web", "outcome": "succeeded"}, 2},
		{"recluster_reloads_total", map[string]string{"service": "web", "outcome": "superseded"}, 0},
		{"recluster_cut_total", map[string]string{"service": "web"}, 2},
		{"recluster_proxy_in_flight", map[string]string{"service": "web"}, 2},
		{"recluster_proxy_requests_total", map[string]string{"service": "web", "class": "2xx"}, 90},
		{"recluster_proxy_requests_total", map[string]string{"service": "web", "class": "4xx"}, 0},
		{"recluster_proxy_request_duration_seconds", map[string]string{"service": "web"}, 91},
		{"recluster_worker_resident_memory_bytes", map[string]string{"service": "web", "worker": "1@3"}, 2 << 20},
		{"recluster_worker_cpu_seconds_total", map[string]string{"service": "web", "worker": "0@3"}, 0.5},
		{"recluster_worker_healthy", map[string]string{"service": "web", "worker": "0@3"}, 1},
	} {
		if got := value(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	h := families["recluster_proxy_request_duration_seconds"].GetMetric()[0].GetHistogram()
	if b := h.GetBucket(); len(b) != 3 || b[0].GetCumulativeCount() != 50 || b[1].GetUpperBound() != 0.01 || b[2].GetCumulativeCount() != 91 || h.GetSampleSum() != 1.5 {
		t.Errorf("histogram: %v", h)
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(out.Bytes())
		if lint, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, lint)
		}
	} else {
		t.Log("promtool is not installed (Debian's prometheus; .ci/run installs it): the lint is skipped")
	}
}

// TestTheHandlerServesAndBoundsItsCost: GET /metrics answers the format;
// other paths and methods are refused; scrapes within a second are
// answered from one look at the stack.
func TestTheHandlerServesAndBoundsItsCost(t *testing.T) {
	looks := 0
	srv := httptest.NewServer(Handler(func(context.Context) ([]runner.ServiceStatus, error) {
		looks++
		return stack(), nil
	}))
	defer srv.Close()
	for i := 0; i < 5; i++ {
		resp, err := http.Get(srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		var body bytes.Buffer
		body.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") || !strings.Contains(body.String(), `recluster_workers{service="web",state="ready"} 1`) {
			t.Fatalf("scrape: %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body.String())
		}
	}
	if looks != 1 {
		t.Errorf("5 scrapes in a row looked at the stack %d times, want 1", looks)
	}
	for _, c := range []struct {
		method, path string
		want         int
	}{{"GET", "/", 404}, {"POST", "/metrics", 405}} {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, resp.StatusCode, c.want)
		}
	}
}

// TestAFloodOfConnectionsIsBounded: past the bound, connections wait in
// the backlog instead of each holding a descriptor and a goroutine;
// once the flood closes, a scrape is answered; a server closed while
// Accept waits for a slot ends.
func TestAFloodOfConnectionsIsBounded(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := netlimit.New(raw, 4, nil)
	var open atomic.Int32
	accepted := make(chan struct{}, 64)
	srv := Server(Handler(func(context.Context) ([]runner.ServiceStatus, error) { return stack(), nil }))
	srv.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
			accepted <- struct{}{}
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }() // Owned by the test; ends with srv.Close.
	var flood []net.Conn
	for i := 0; i < 20; i++ {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		flood = append(flood, c)
	}
	for range 4 {
		select {
		case <-accepted:
		case <-time.After(10 * time.Second):
			t.Fatalf("the server took %d of 20 connections, not the bound, 4", open.Load())
		}
	}
	if n := open.Load(); n != 4 {
		t.Errorf("%d connections held of 20, want the bound, 4", n)
	}
	for _, c := range flood {
		c.Close()
	}
	resp, err := http.Get("http://" + raw.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("a scrape after the flood: %d", resp.StatusCode)
	}
	// Hold every slot, then close: Serve must return.
	for i := 0; i < 6; i++ {
		if c, err := net.Dial("tcp", raw.Addr().String()); err == nil {
			defer c.Close()
		}
	}
	srv.Close()
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after Close while Accept waited for a slot")
	}
}
