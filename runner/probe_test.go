package runner

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestAnHTTPProbeKeepsItsConnection: probes reuse one connection; one the
// worker closed meanwhile is not a failure; a redirect and an answer past
// the bound fail, saying why.
func TestAnHTTPProbeKeepsItsConnection(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/moved":
			http.Redirect(w, r, "/healthz", http.StatusFound)
		case "/big":
			w.Write([]byte(strings.Repeat("x", probeAnswerMax+1)))
		default:
			w.Write([]byte("ok"))
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	var k keptConn
	defer k.close()
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if ok, detail := k.get(ctx, srv.URL+"/healthz"); !ok || !strings.HasSuffix(detail, ": 200 OK") {
			t.Fatalf("probe %d: %v %s", i, ok, detail)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("three probes took %d connections, want 1", n)
	}
	srv.CloseClientConnections() // as a worker closing idle connections does
	if ok, detail := k.get(ctx, srv.URL+"/healthz"); !ok {
		t.Errorf("a probe after the worker closed the kept connection: %s", detail)
	}
	if ok, detail := k.get(ctx, srv.URL+"/moved"); ok || !strings.HasSuffix(detail, ": 302 Found") {
		t.Errorf("a redirect: %v %s", ok, detail)
	}
	if ok, detail := k.get(ctx, srv.URL+"/big"); ok || !strings.Contains(detail, "longer than") {
		t.Errorf("an answer past the bound: %v %s", ok, detail)
	}
	if ok, _ := k.get(ctx, srv.URL+"/healthz"); !ok {
		t.Errorf("a probe after a failed one")
	}
}
