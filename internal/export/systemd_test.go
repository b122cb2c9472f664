package export

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/recluster/recluster/config"
)

var update = flag.Bool("update", false, "rewrite the golden file")

// stack loads testdata/export/recluster.yml from a folder named app.
func stack(t *testing.T) (*config.Config, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "app")
	os.MkdirAll(filepath.Join(dir, "run"), 0o755)
	data, err := os.ReadFile("../../testdata/export/recluster.yml")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "recluster.yml"), data, 0o644)
	return load(t, dir), dir
}

// load reads dir/recluster.yml with nothing from the environment.
func load(t *testing.T, dir string) *config.Config {
	t.Helper()
	cfg, err := config.Options{Getenv: func(string) string { return "" }, NumCPU: 2}.Load(filepath.Join(dir, "recluster.yml"))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestSystemdUnits(t *testing.T) {
	cfg, dir := stack(t)
	units, err := Systemd(cfg, SystemdOptions{Bin: "/usr/local/bin/recluster"})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, u := range units {
		b.WriteString("### " + u.Name + "\n" + u.Text)
	}
	got := strings.ReplaceAll(b.String(), dir, "/srv/app")
	golden := "../../testdata/export/systemd.golden"
	if *update {
		os.WriteFile(golden, []byte(got), 0o644)
	}
	want, _ := os.ReadFile(golden)
	if got != string(want) {
		t.Errorf("units differ from %s (go test ./internal/export -update rewrites it):\n%s", golden, got)
	}
}

// TestSystemdAnalyzeVerify runs systemd's own checker on the units.
func TestSystemdAnalyzeVerify(t *testing.T) {
	tool, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("SKIPPED LOUDLY: systemd-analyze is not installed (Debian's systemd package has it); the units are checked against the golden file only")
	}
	cfg, _ := stack(t)
	units, err := Systemd(cfg, SystemdOptions{Bin: "/bin/true"}) // verify wants ExecStart to exist
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	var paths []string
	for _, u := range units {
		p := filepath.Join(out, u.Name)
		os.WriteFile(p, []byte(u.Text), 0o644)
		paths = append(paths, p)
	}
	cmd := exec.Command(tool, append([]string{"verify"}, paths...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=notice")
	if msg, err := cmd.CombinedOutput(); err != nil || len(msg) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, msg)
	}
}

func TestSystemdRefuses(t *testing.T) {
	cfg, _ := stack(t)
	cfg.Services[1].Proxy.Address.Address = "127.0.0.1:0"
	if _, err := Systemd(cfg, SystemdOptions{Bin: "/bin/true"}); err == nil || !strings.Contains(err.Error(), "fixed port") {
		t.Errorf("port 0: %v", err)
	}
	cfg, _ = stack(t)
	if _, err := Systemd(cfg, SystemdOptions{Bin: "recluster"}); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Errorf("a relative binary: %v", err)
	}
}

// TestREADMEUnits: the units README.md shows are what export writes for
// the config it shows.
func TestREADMEUnits(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	yml := regexp.MustCompile("(?s)<!-- systemd-example -->\n```yaml\n(.*?)```").FindSubmatch(readme)
	units := regexp.MustCompile("(?s)<!-- systemd-units -->\n```ini\n(.*?)```").FindSubmatch(readme)
	if yml == nil || units == nil {
		t.Fatal("README.md shows no systemd example")
	}
	dir := filepath.Join(t.TempDir(), "app")
	os.Mkdir(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "recluster.yml"), yml[1], 0o644)
	got, err := Systemd(load(t, dir), SystemdOptions{Bin: "/usr/local/bin/recluster"})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, u := range got {
		b.WriteString("### " + u.Name + "\n" + u.Text)
	}
	if text := strings.ReplaceAll(b.String(), dir, "/srv/app"); text != string(units[1]) {
		t.Errorf("README.md's units are not what export writes:\n%s", text)
	}
}

// TestSystemdEscapesWhatUnitsWouldRead: a line break in a path is refused
// (it would start a directive of its own); % is escaped wherever systemd
// expands specifiers; a binary path with a space is quoted; a stop that
// no number of seconds holds is infinity; TimeoutStopSec covers a chain
// of `after` stopping one after the other.
func TestSystemdEscapesWhatUnitsWouldRead(t *testing.T) {
	base := t.TempDir()
	write := func(dir, yaml string) *config.Config {
		t.Helper()
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "recluster.yml"), []byte(yaml), 0o644)
		return load(t, dir)
	}
	evil := write(filepath.Join(base, "a\nExecStartPre=/bin/evil"), "services:\n  web:\n    command: run\n")
	if _, err := Systemd(evil, SystemdOptions{Bin: "/bin/recluster", Name: "x"}); err == nil || !strings.Contains(err.Error(), "control character") {
		t.Errorf("a newline in the folder: %v", err)
	}
	unixNL := write(filepath.Join(base, "unix"), "services:\n  web:\n    command: run\n    listen: \"unix:/tmp/a\\nb.sock\"\n")
	if _, err := Systemd(unixNL, SystemdOptions{Bin: "/bin/recluster", Name: "x"}); err == nil || !strings.Contains(err.Error(), "control character") {
		t.Errorf("a newline in a unix listen path: %v", err)
	}

	cfg := write(filepath.Join(base, "100%h"), `
services:
  db:
    command: run
    timeout: 20s
  api:
    command: run
    after: [db]
    proxy: 8080
    timeout: 5s
    drainTimeout: 10s
    listen: "unix:sock%n"
`)
	units, err := Systemd(cfg, SystemdOptions{Bin: "/opt/my tools/recluster", Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	svc := units[0].Text
	for _, want := range []string{
		`ExecStart="/opt/my tools/recluster" up -f "` + filepath.Join(base, "100%%h") + `/recluster.yml"`,
		"WorkingDirectory=" + filepath.Join(base, "100%%h") + "\n",
		"TimeoutStopSec=45\n", // api's 10 s drain + 5 s, then db's 20 s, + 10 s
	} {
		if !strings.Contains(svc, want) {
			t.Errorf("the service unit lacks %q:\n%s", want, svc)
		}
	}
	var sock string
	for _, u := range units {
		if strings.Contains(u.Text, "ListenStream=/") {
			sock = u.Text
		}
	}
	if !strings.Contains(sock, "ListenStream="+filepath.Join(base, "100%%h", "sock%%n")+"\n") {
		t.Errorf("the unix socket unit:\n%s", sock)
	}

	forever := write(filepath.Join(base, "forever"), "services:\n  web:\n    command: run\n    timeout: 2000000h\n")
	units, err = Systemd(forever, SystemdOptions{Bin: "/bin/recluster", Name: "x"})
	if err != nil || !strings.Contains(units[0].Text, "TimeoutStopSec=infinity\n") {
		t.Errorf("a timeout of centuries: %v\n%s", err, units[0].Text)
	}
}
