// Package metrics serves what `up` knows of its stack in Prometheus' text
// exposition format (version 0.0.4), for `metrics: ADDRESS`: workers by
// state, restarts, reloads by outcome, generations, requests cut; for a
// service behind an http proxy its answers by status class, a latency
// histogram and the work in flight; for each worker its memory, CPU time
// and health.
//
// It writes the format itself rather than through
// prometheus/client_golang: linking that library cost every `up`, with
// metrics or without, 1.7 MiB of resident memory at start (10.5 → 12.2
// MiB idle at 10 services; its init registers collectors and pulls in
// protobuf), against a text format of a few lines a metric. The tests
// check the output with Prometheus' own parser (prometheus/common's
// expfmt, in the tests only) and with promtool where it is installed.
package metrics

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/recluster/recluster/runner"
)

// workerStates are the states a worker count is given for, each
// service's every time, so that a query sees a 0 rather than nothing.
var workerStates = []string{"starting", "proving", "ready", "stopping", "backoff", "exited"}

// reloadOutcomes are the ends a reload count is given for.
var reloadOutcomes = []string{"succeeded", "failed", "superseded"}

// Write writes sts as Prometheus' text format.
func Write(w io.Writer, sts []runner.ServiceStatus) error {
	var b strings.Builder
	family(&b, "recluster_workers", "gauge", "Workers of the service, by state.")
	for _, s := range sts {
		counts := map[string]int{}
		for _, wk := range s.Workers {
			state := wk.State.String()
			if wk.Proving {
				state = "proving"
			}
			counts[state]++
		}
		for _, state := range workerStates {
			sample(&b, "recluster_workers", labels("service", s.Name, "state", state), float64(counts[state]))
		}
	}
	family(&b, "recluster_service_generation", "gauge", "The serving generation of the service.")
	for _, s := range sts {
		sample(&b, "recluster_service_generation", labels("service", s.Name), float64(s.Generation))
	}
	family(&b, "recluster_service_running", "gauge", "1 while the service runs (or reloads), 0 otherwise.")
	for _, s := range sts {
		sample(&b, "recluster_service_running", labels("service", s.Name), boolValue(s.Running))
	}
	family(&b, "recluster_restarts_total", "counter", "Respawns of the service's workers after they ended by themselves.")
	for _, s := range sts {
		n := 0
		for _, wk := range s.Workers {
			n += wk.Restarts
		}
		sample(&b, "recluster_restarts_total", labels("service", s.Name), float64(n))
	}
	family(&b, "recluster_reloads_total", "counter", "Reloads of the service that ended, by outcome.")
	for _, s := range sts {
		for _, o := range reloadOutcomes {
			sample(&b, "recluster_reloads_total", labels("service", s.Name, "outcome", o), float64(s.Reloads[o]))
		}
	}
	family(&b, "recluster_cut_total", "counter", "Requests and connections that old workers' ends cut, through the proxy.")
	for _, s := range sts {
		sample(&b, "recluster_cut_total", labels("service", s.Name), float64(s.Cut))
	}
	writeProxies(&b, sts)
	writeWorkers(&b, sts)
	_, err := io.WriteString(w, b.String())
	return err
}

// writeProxies writes what the proxies of proxied services counted.
func writeProxies(b *strings.Builder, sts []runner.ServiceStatus) {
	family(b, "recluster_proxy_in_flight", "gauge", "Connections (tcp) or requests (http) in flight through the service's proxy.")
	for _, s := range sts {
		if s.Proxy == "" {
			continue
		}
		n := 0
		for _, wk := range s.Workers {
			n += wk.InFlight
		}
		sample(b, "recluster_proxy_in_flight", labels("service", s.Name), float64(n))
	}
	family(b, "recluster_proxy_requests_total", "counter", "Answers of the service's http proxy, by status class.")
	for _, s := range sts {
		if r := s.Requests; r != nil {
			for _, class := range []string{"1xx", "2xx", "3xx", "4xx", "5xx"} {
				sample(b, "recluster_proxy_requests_total", labels("service", s.Name, "class", class), float64(r.ByClass[class]))
			}
		}
	}
	family(b, "recluster_proxy_request_duration_seconds", "histogram", "How long the service's http proxy took to answer a request, from its head to the answer's end.")
	for _, s := range sts {
		r := s.Requests
		if r == nil {
			continue
		}
		for i, le := range r.DurationBounds {
			sample(b, "recluster_proxy_request_duration_seconds_bucket", labels("service", s.Name, "le", strconv.FormatFloat(le, 'g', -1, 64)), float64(r.Durations[i]))
		}
		sample(b, "recluster_proxy_request_duration_seconds_bucket", labels("service", s.Name, "le", "+Inf"), float64(r.DurationCount))
		sample(b, "recluster_proxy_request_duration_seconds_sum", labels("service", s.Name), r.DurationSum)
		sample(b, "recluster_proxy_request_duration_seconds_count", labels("service", s.Name), float64(r.DurationCount))
	}
}

// writeWorkers writes each running worker's memory, CPU and health.
func writeWorkers(b *strings.Builder, sts []runner.ServiceStatus) {
	type row struct {
		service, worker string
		w               runner.WorkerStatus
	}
	var rows []row
	for _, s := range sts {
		for _, wk := range s.Workers {
			if wk.Pid > 0 {
				rows = append(rows, row{s.Name, strconv.Itoa(wk.ID) + "@" + strconv.Itoa(wk.Generation), wk})
			}
		}
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].service < rows[j].service })
	family(b, "recluster_worker_resident_memory_bytes", "gauge", "Resident memory of the worker's process group.")
	for _, r := range rows {
		sample(b, "recluster_worker_resident_memory_bytes", labels("service", r.service, "worker", r.worker), float64(r.w.RSS))
	}
	family(b, "recluster_worker_cpu_seconds_total", "counter", "CPU time (user and system) of the worker's live processes.")
	for _, r := range rows {
		sample(b, "recluster_worker_cpu_seconds_total", labels("service", r.service, "worker", r.worker), r.w.CPUSeconds)
	}
	family(b, "recluster_worker_healthy", "gauge", "1 when the worker's last probe passed, 0 when it failed (workers with probes only).")
	for _, r := range rows {
		if h := r.w.Health; h != nil {
			sample(b, "recluster_worker_healthy", labels("service", r.service, "worker", r.worker), boolValue(h.OK))
		}
	}
}

func family(b *strings.Builder, name, kind, help string) {
	fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, kind)
}

func sample(b *strings.Builder, name, labels string, v float64) {
	b.WriteString(name)
	b.WriteString(labels)
	b.WriteByte(' ')
	b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
	b.WriteByte('\n')
}

// labels writes {k="v",…}, escaping values as the format asks.
func labels(kv ...string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(kv[i])
		b.WriteString(`="`)
		b.WriteString(labelEscaper.Replace(kv[i+1]))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func boolValue(ok bool) float64 {
	if ok {
		return 1
	}
	return 0
}

// fresh is how old a rendered page may be when the next scrape comes: a
// page asks every cluster's loop for its status, and a client scraping
// in a loop must not make `up` do that more than once a second.
const fresh = time.Second

// Handler serves /metrics from status.
func Handler(status func(context.Context) ([]runner.ServiceStatus, error)) http.Handler {
	var mu sync.Mutex
	var page []byte
	var at time.Time
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.Error(w, "recluster serves its metrics at /metrics", http.StatusNotFound)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "GET /metrics", http.StatusMethodNotAllowed)
			return
		}
		mu.Lock()
		if time.Since(at) > fresh {
			sts, err := status(r.Context())
			if err != nil {
				mu.Unlock()
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			var b strings.Builder
			Write(&b, sts)
			page, at = []byte(b.String()), time.Now()
		}
		body := page
		mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Write(body)
	})
}

// Server is the http server of the metrics endpoint, with the bounds a
// hostile client meets: a header in 10 s and 16 KiB, an answer written in
// 30 s, an idle connection closed after a minute.
func Server(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 16 << 10,
		WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute}
}

// MaxConns bounds the connections the endpoint holds at once: past it,
// new ones wait in the listen backlog, so that a client opening
// connections by the thousand costs `up` no more than this many
// descriptors (the proxy's workers and the control socket need them).
const MaxConns = 64
