package proxy

import (
	"io"
	"net"
	"net/http"
	"testing"
)

// BenchmarkOneRequestPerConnection measures what a connection costs
// through the proxy, beside the same requests sent to the backend direct:
// a new connection, one small request and its answer, then close, which
// is what a client without keep-alive does.
func BenchmarkOneRequestPerConnection(b *testing.B) { benchmarkRequests(b, false) }

// BenchmarkKeepAlive: the same requests over connections kept open, where
// what the proxy costs is copying alone.
func BenchmarkKeepAlive(b *testing.B) { benchmarkRequests(b, true) }

func benchmarkRequests(b *testing.B, keepAlive bool) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello\n")
	})}
	go srv.Serve(ln)
	defer srv.Close()
	for _, mode := range []string{"direct", "tcp", "http"} {
		b.Run(mode, func(b *testing.B) {
			addr := ln.Addr().String()
			if mode != "direct" {
				pln, _ := net.Listen("tcp", "127.0.0.1:0")
				p := New(pln, Options{Protocol: mode})
				p.SetBackends(map[string]string{"b": addr})
				go p.Serve()
				defer p.Close()
				addr = pln.Addr().String()
			}
			b.SetParallelism(16) // clients enough to keep every backend busy
			b.RunParallel(func(pb *testing.PB) {
				c := &http.Client{Transport: &http.Transport{DisableKeepAlives: !keepAlive}}
				for pb.Next() {
					resp, err := c.Get("http://" + addr + "/")
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		})
	}
}
