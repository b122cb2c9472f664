package control

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/recluster/recluster/logmux"
)

// FuzzRequests sends arbitrary bodies and queries to every route: each gets
// an answer (never a panic), and a refused body changes nothing.
func FuzzRequests(f *testing.F) {
	for _, s := range []string{`{"services":["api"]}`, `{"counts":{"api":3}}`, `{}`, `[]`, `{"services":null}`, `{"counts":{"api":-1}}`, "n=5&service=api&follow=0", "n=-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		ctl := &fakeController{}
		srv := NewServer(ctl, logmux.New(&bytes.Buffer{}, logmux.Options{}), Info{}, func(context.Context) error { return nil })
		for _, route := range []string{"/v1/reload", "/v1/restart", "/v1/start", "/v1/stop", "/v1/scale"} {
			rec := httptest.NewRecorder()
			srv.http.Handler.ServeHTTP(rec, httptest.NewRequest("POST", route, strings.NewReader(body)))
			if rec.Code != http.StatusOK && rec.Code != http.StatusBadRequest {
				t.Fatalf("%s %q: status %d", route, body, rec.Code)
			}
			if rec.Code == http.StatusBadRequest && len(ctl.calls) > 0 {
				t.Fatalf("%s %q: refused, yet the controller was called: %v", route, body, ctl.calls)
			}
			ctl.calls = nil
		}
		rec := httptest.NewRecorder()
		// A follow (follow=1) lasts as long as its client: this one has
		// gone already, so the answer ends after the backlog.
		gone, cancel := context.WithCancel(context.Background())
		cancel()
		req := httptest.NewRequestWithContext(gone, "GET", "/v1/logs", nil)
		req.URL.RawQuery = body
		srv.http.Handler.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK && rec.Code != http.StatusBadRequest {
			t.Fatalf("logs %q: status %d", body, rec.Code)
		}
	})
}
