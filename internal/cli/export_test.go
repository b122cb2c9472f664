package cli_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExportSystemd: the verb writes the units the export package makes,
// into -o DIR or to stdout, and refuses what it cannot export.
func TestExportSystemd(t *testing.T) {
	dir := stack(t, `
services:
  web:
    command: [WORKER, -mode, serve]
    proxy: 18080
  api:
    command: [WORKER, -mode, serve]
    listen: "127.0.0.1:19090"
`)
	out := filepath.Join(t.TempDir(), "units", "new") // made by export
	r := verb(t, dir, "export", "systemd", "-o", out, "--name", "shop")
	if r.code != 0 {
		t.Fatalf("export: %d %s", r.code, r.err)
	}
	for _, name := range []string{"shop.service", "shop-web-proxy.socket", "shop-api.socket"} {
		data, err := os.ReadFile(filepath.Join(out, name))
		if err != nil || !strings.Contains(r.stdout, filepath.Join(out, name)) {
			t.Errorf("%s: %v; said:\n%s", name, err, r.stdout)
		}
		if name == "shop.service" && !strings.Contains(string(data), " up -f "+filepath.Join(dir, "recluster.yml")+"\n") {
			t.Errorf("shop.service runs another file:\n%s", data)
		}
	}
	if r := verb(t, dir, "export", "systemd"); r.code != 0 || !strings.Contains(r.stdout, "### "+filepath.Base(dir)+".service") {
		t.Errorf("export to stdout: %d %q %s", r.code, r.stdout, r.err)
	}
	if r := verb(t, dir, "export", "launchd"); r.code != 2 || !strings.Contains(r.err, "export writes units for systemd") {
		t.Errorf("export launchd: %d %s", r.code, r.err)
	}
}
