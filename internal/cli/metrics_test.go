package cli_test

import (
	"bytes"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"testing"

	"github.com/recluster/recluster/internal/load"
	"github.com/recluster/recluster/internal/testbin"
)

// TestMetricsAreScrapedThroughAReload: with `metrics:`, a scrape during a
// reload under load shows the proxy's 2xx answers rising and, after it,
// the reload counted and the new generation; promtool accepts the page
// where it is installed.
func TestMetricsAreScrapedThroughAReload(t *testing.T) {
	metricsAddr := testbin.FreeAddr(t)
	dir := stack(t, `
metrics: "`+metricsAddr+`"
services:
  web:
    command: [WORKER, -mode, naive]
    workers: 2
    proxy: {address: "127.0.0.1:0", protocol: http}
    minReady: 0s
`)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	u.waitLine(`metrics at http://` + regexp.QuoteMeta(metricsAddr) + `/metrics`)
	scrape := func() string {
		t.Helper()
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	value := func(page, series string) float64 {
		t.Helper()
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(page)
		if m == nil {
			t.Fatalf("no %s in:\n%s", series, page)
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}
	l := load.Start(publicAddr(t, dir), load.Options{Conns: 4})
	if !l.WaitServed(50, deadline) {
		t.Fatalf("nothing served: %v", l.Snapshot().Failures)
	}
	twoxx := `recluster_proxy_requests_total{service="web",class="2xx"}`
	before := value(scrape(), twoxx)
	if r := verb(t, dir, "reload", "web"); r.code != 0 {
		t.Fatalf("reload: %d %s", r.code, r.err)
	}
	l.WaitServed(50, deadline)
	var page string
	waitStatus(t, dir, "a scrape after the reload", func(statusJSON) bool {
		page = scrape() // a page is at most a second old
		return value(page, `recluster_reloads_total{service="web",outcome="succeeded"}`) == 1
	})
	if after := value(page, twoxx); after <= before {
		t.Errorf("2xx answers: %v before the reload, %v after", before, after)
	}
	if g := value(page, `recluster_service_generation{service="web"}`); g != 2 {
		t.Errorf("generation %v after one reload", g)
	}
	if n := value(page, `recluster_workers{service="web",state="ready"}`); n != 2 {
		t.Errorf("%v ready workers", n)
	}
	if !regexp.MustCompile(`(?m)^recluster_worker_resident_memory_bytes\{service="web",worker="0@2"\} [1-9]`).MatchString(page) {
		t.Errorf("no memory for web.0 of generation 2 in:\n%s", page)
	}
	if r := l.Finish(); r.Failed() > 0 {
		t.Errorf("%d requests failed across the reload: %v", r.Failed(), r.Failures)
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader([]byte(page))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	}
}
