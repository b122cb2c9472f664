package proxy

import (
	"net/http"
	"sync/atomic"
	"time"
)

// DurationBuckets are the upper bounds, in seconds, of the http proxy's
// latency histogram: Prometheus' default buckets.
var DurationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// Stats are what the http proxy has counted since it began: requests
// answered by status class, and how long they took.
type Stats struct {
	// Requests[c] counts the answers of class c+1 (1xx … 5xx); a request
	// the proxy itself answered (502, 503) counts as what it answered.
	Requests [5]uint64
	// Durations[i] counts requests that took at most DurationBuckets[i]
	// (not cumulative); Slower those that took longer. DurationSum is
	// their total in seconds. An upgraded connection (WebSocket) is
	// counted in Requests only: its length is the connection's.
	Durations   []uint64
	Slower      uint64
	DurationSum float64
}

// stats are the counters behind Stats, added to from every request's
// goroutine.
type stats struct {
	requests  [5]atomic.Uint64
	durations [12]atomic.Uint64 // one per bucket, and one past the last
	sumNanos  atomic.Int64
}

func (s *stats) observe(code int, took time.Duration) {
	class := code/100 - 1
	if class < 0 || class > 4 {
		return
	}
	s.requests[class].Add(1)
	if code == http.StatusSwitchingProtocols {
		return
	}
	i := 0
	for i < len(DurationBuckets) && took.Seconds() > DurationBuckets[i] {
		i++
	}
	s.durations[i].Add(1)
	s.sumNanos.Add(int64(took))
}

// Stats says what the proxy has counted (http mode; tcp connections are
// not requests).
func (p *Proxy) Stats() Stats {
	s := &p.handler.stats
	var out Stats
	for i := range out.Requests {
		out.Requests[i] = s.requests[i].Load()
	}
	out.Durations = make([]uint64, len(DurationBuckets))
	for i := range out.Durations {
		out.Durations[i] = s.durations[i].Load()
	}
	out.Slower = s.durations[len(DurationBuckets)].Load()
	out.DurationSum = time.Duration(s.sumNanos.Load()).Seconds()
	return out
}

// statusWriter notes the status of the answer ReverseProxy writes; the
// rest passes through (Unwrap: flushes, hijacks for upgrades, full
// duplex).
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code < 200 {
		w.code = code // a 1xx before it is not the answer (but 101 is)
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 || (w.code < 200 && w.code != http.StatusSwitchingProtocols) {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
