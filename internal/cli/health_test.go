package cli_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestStatusShowsHealthAndReplacements: under up, status shows each
// worker's memory and health; a worker made sick is replaced, and status
// (table and JSON) says when and why.
func TestStatusShowsHealthAndReplacements(t *testing.T) {
	sick := t.TempDir()
	dir := stack(t, `
services:
  web:
    command: [WORKER, -mode, naive]
    workers: 2
    env: {SICK_DIR: "`+sick+`"}
    proxy: {address: "127.0.0.1:0", protocol: http}
    minReady: 0s
    health: {http: /healthz, every: 100ms, failures: 2}
`)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	st := waitStatus(t, dir, "both workers healthy", func(st statusJSON) bool {
		ws := st.Services[0].Workers
		return len(ws) == 2 && ws[0].Health != nil && ws[0].Health.OK && ws[1].Health != nil && ws[1].Health.OK && ws[0].RSS > 0
	})
	r := verb(t, dir, "status")
	if !regexp.MustCompile(`(?m)^SERVICE +ID +PID +STATE +GEN +UPTIME +RESTARTS +MEM +PORT +IN FLIGHT +HEALTH +LAST EXIT +STATUS$`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^web +0 +\d+ +ready +1 +\S+ +0 +[\d.]+M +\d+ +\d+ +ok `).MatchString(r.stdout) {
		t.Errorf("status:\n%s", r.stdout)
	}
	victim := st.Services[0].Workers[0].Pid
	if err := os.WriteFile(filepath.Join(sick, fmt.Sprint(victim)), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	u.waitLine(fmt.Sprintf(`web.0 \(pid %d\) failed its health check 2 times in a row`, victim))
	st = waitStatus(t, dir, "web.0 replaced", func(st statusJSON) bool {
		w := st.Services[0].Workers[0]
		return w.Pid != victim && w.Replaced != nil
	})
	if reason := st.Services[0].Workers[0].Replaced.Reason; !strings.HasPrefix(reason, "failed its health check 2 times in a row (GET http://127.0.0.1:") {
		t.Errorf("replaced: %q", reason)
	}
	r = verb(t, dir, "status")
	if !regexp.MustCompile(`(?m)^web\.0: replaced \d\d:\d\d:\d\d: its predecessor failed its health check 2 times in a row \(GET .*: 503 Service Unavailable\)$`).MatchString(r.stdout) {
		t.Errorf("status after the replacement:\n%s", r.stdout)
	}
}
