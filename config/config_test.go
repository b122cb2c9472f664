package config

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const fixtures = "../testdata/config"

// testOptions pins what the machine would otherwise decide.
var testOptions = Options{Getenv: func(string) string { return "" }, NumCPU: 2}

// golden compares got with the file, or rewrites it under -update. Absolute
// paths are replaced with $DIR so the files hold on any checkout.
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	abs, _ := filepath.Abs(fixtures)
	got = bytes.ReplaceAll(got, []byte(abs), []byte("$DIR"))
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./config -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test ./config -update rewrites it)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestGolden(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(fixtures, "*.yml"))
	if len(files) < 8 {
		t.Fatalf("found only %d fixtures in %s", len(files), fixtures)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yml")
		t.Run(name, func(t *testing.T) {
			cfg, err := testOptions.Load(file)
			var out bytes.Buffer
			switch {
			case strings.HasPrefix(name, "invalid-"):
				if err == nil {
					t.Fatalf("loaded an invalid file without error")
				}
				if Problems(err) == nil {
					t.Fatalf("error is not a list of problems: %v", err)
				}
				out.WriteString(err.Error() + "\n")
			default:
				if err != nil {
					t.Fatalf("valid file refused:\n%v", err)
				}
				if err := Print(&out, cfg); err != nil {
					t.Fatal(err)
				}
			}
			golden(t, strings.TrimSuffix(file, ".yml")+".golden", out.Bytes())
		})
	}
}

func TestEveryProblemHasAPosition(t *testing.T) {
	_, err := testOptions.Load(filepath.Join(fixtures, "invalid-many.yml"))
	problems := Problems(err)
	// One per bad key in the file: wokers, workers, readyWhen, timeout,
	// respawn, stopSignal, after, log.respawns, command, dir, envFile and
	// the two listen items.
	if len(problems) != 13 {
		t.Fatalf("got %d problems, want 13:\n%v", len(problems), err)
	}
	for _, p := range problems {
		if p.Line < 2 || p.Col < 3 {
			t.Errorf("problem without a real position: %v", p)
		}
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := testOptions.Load(filepath.Join(fixtures, "valid-defaults.yml"))
	if err != nil {
		t.Fatal(err)
	}
	web, sock := cfg.Service("web"), cfg.Service("sock")
	if web.Workers != 2 || web.Timeout != time.Second || web.Respawn != time.Second || web.Backoff != 30*time.Second ||
		web.Restart != RestartAlways || web.StartLimit != 5 || web.MinUptime != 5*time.Second ||
		web.ReadyTimeout != time.Minute || web.ReadyWhen != ReadyStarted || !web.Log.Respawns {
		t.Errorf("web defaults wrong: %+v", web)
	}
	if sock.ReadyWhen != ReadyListening || sock.Listen[0].Address != ":3000" {
		t.Errorf("a listening service should default to readyWhen listening on :3000: %+v", sock)
	}
	for _, env := range []string{"RECLUSTER_ENV", "NODE_ENV"} {
		prod := Options{NumCPU: 1, Getenv: func(k string) string {
			if k == env {
				return "production"
			}
			return ""
		}}
		cfg, err := prod.Load(filepath.Join(fixtures, "valid-defaults.yml"))
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Service("web").Timeout; got != time.Hour {
			t.Errorf("%s=production: timeout %v, want 1h", env, got)
		}
	}
}

func TestEnvPrecedence(t *testing.T) {
	cfg, err := testOptions.Load(filepath.Join(fixtures, "valid-full.yml"))
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, e := range cfg.Service("api").Env {
		env[e.Name] = e.Value
	}
	// top-level env < env files < service env.
	want := map[string]string{"LOG_LEVEL": "info", "SHARED": "1", "API_KEY": "secret value", "NODE_ENV": "development", "WORKERS_HINT": "4"}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
}

func TestCommand(t *testing.T) {
	env := func(k string) string { return map[string]string{"PORT": "8080", "ARGS": "a b"}[k] }
	cases := []struct {
		line  string
		shell bool
		argv  []string
	}{
		{"node server.js --port $PORT", false, []string{"node", "server.js", "--port", "8080"}},
		{`echo "$ARGS" '$PORT'`, false, []string{"echo", "a b", "$PORT"}},
		{"a | b", true, nil},
		{"a && b", true, nil},
		{"a; b", true, nil},
		{"a > out.log", true, nil},
		{"a 2>&1", true, nil},
		{"echo $(date)", true, nil},
		{"echo `date`", true, nil},
		{"(cd x && run)", true, nil},
		{"FOO=1 run", true, nil},
		{`echo "a | b"`, false, []string{"echo", "a | b"}},
	}
	for _, c := range cases {
		cmd, err := parseCommandLine(c.line)
		if err != nil {
			t.Errorf("%q: %v", c.line, err)
			continue
		}
		if cmd.Shell != c.shell {
			t.Errorf("%q: shell = %v, want %v", c.line, cmd.Shell, c.shell)
		}
		argv, err := cmd.Argv(env)
		if err != nil {
			t.Errorf("%q: %v", c.line, err)
		}
		if c.shell {
			c.argv = []string{"/bin/sh", "-c", c.line}
		}
		if strings.Join(argv, "\x00") != strings.Join(c.argv, "\x00") {
			t.Errorf("%q: argv %q, want %q", c.line, argv, c.argv)
		}
	}
	for _, bad := range []string{"", "  ", `echo 'x`, `echo "x`, `echo \`} {
		if _, err := parseCommandLine(bad); err == nil {
			t.Errorf("%q: accepted", bad)
		}
	}
}

func TestDurations(t *testing.T) {
	for in, want := range map[string]time.Duration{"250ms": 250 * time.Millisecond, "10s": 10 * time.Second, "0.3": 300 * time.Millisecond, "2": 2 * time.Second, "1h": time.Hour, "0": 0} {
		got, err := parseDuration(in)
		if err != nil || got != want {
			t.Errorf("parseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"soon", "1e400", "NaN", "inf", ""} {
		if _, err := parseDuration(bad); err == nil {
			t.Errorf("parseDuration(%q) accepted", bad)
		}
	}
}

func TestProcfile(t *testing.T) {
	cfg, err := Options{Getenv: testOptions.Getenv, PortBase: 7000}.Load("../testdata/procfile/Procfile")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cfg.Names(), ","); got != "web,worker,clock" {
		t.Fatalf("services %s", got)
	}
	for i, s := range cfg.Services {
		env := map[string]string{}
		for _, e := range s.Env {
			env[e.Name] = e.Value
		}
		if want := 7000 + 100*i; env["PORT"] != strconv.Itoa(want) {
			t.Errorf("%s: PORT=%s, want %d", s.Name, env["PORT"], want)
		}
		wantReady := ReadyStarted
		if s.Name == "web" {
			// web is proxied on foreman's port; its workers get their own.
			wantReady = ReadyListening
			if s.Proxy == nil || s.Proxy.Address.Address != ":7000" || s.Proxy.Protocol != ProtocolHTTP {
				t.Errorf("web is not proxied on :7000: %+v", s.Proxy)
			}
		} else if s.Proxy != nil {
			t.Errorf("%s is proxied", s.Name)
		}
		if env["FROM_DOTENV"] != "yes" || s.Workers != 1 || s.ReadyWhen != wantReady {
			t.Errorf("%s: %+v", s.Name, s)
		}
	}
	if !cfg.Service("worker").Command.Shell {
		t.Errorf("worker's && should run under sh")
	}
	_, err = testOptions.Load("../testdata/procfile/bad/Procfile")
	var lines []string
	for _, p := range Problems(err) {
		lines = append(lines, p.Error())
	}
	want := []string{
		"../testdata/procfile/bad/Procfile:1:1: expected `name: command`; a Procfile line names a service, a colon, then its command",
		"../testdata/procfile/bad/Procfile:3:1: web: is declared twice (first on line 2); keep one",
		"../testdata/procfile/bad/Procfile:4:4: x: command has an unclosed \" quote; a command is a program and its arguments, split like a shell",
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

func TestFind(t *testing.T) {
	root := t.TempDir()
	deep := filepath.Join(root, "a", "b")
	os.MkdirAll(deep, 0o755)
	if _, err := Find(deep); err == nil {
		t.Fatal("found a file where there is none")
	}
	os.WriteFile(filepath.Join(deep, "Procfile"), []byte("a: b\n"), 0o644)
	if got, _ := Find(deep); got != filepath.Join(deep, "Procfile") {
		t.Errorf("Procfile here: got %s", got)
	}
	os.WriteFile(filepath.Join(root, "recluster.yaml"), []byte("services: {}\n"), 0o644)
	if got, _ := Find(deep); got != filepath.Join(root, "recluster.yaml") {
		t.Errorf("recluster.yaml in a parent wins over a Procfile: got %s", got)
	}
}

// FuzzLoad feeds arbitrary bytes to the loader: it must return a config or
// an error, never panic or hang.
func FuzzLoad(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(fixtures, "*.yml"))
	for _, file := range files {
		data, _ := os.ReadFile(file)
		f.Add(data, false)
	}
	f.Add([]byte("web: ./run\nworker: a | b\n"), true)
	// Merge keys that loop, nest or fan out; several documents.
	f.Add([]byte("x-a: &a {<<: *a}\nservices: {a: {command: run}}\n"), false)
	f.Add([]byte("x-a: &a {<<: [*a, *a]}\nservices: {a: {<<: *a, command: run}}\n"), false)
	f.Add([]byte("x-0: &a {w: 1}\nx-1: &b {<<: [*a, *a]}\nx-2: &c {<<: [*b, *b]}\nservices: {a: {<<: *c, command: run}}\n"), false)
	f.Add([]byte("services: {a: {command: run, log: &l {<<: *l}}}\n"), false)
	f.Add([]byte("services: {a: {command: run}}\n---\nservices: {b: {command: run}}\n"), false)
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte, procfile bool) {
		name := "recluster.yml"
		if procfile {
			name = "Procfile"
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		cfg, err := testOptions.Load(path)
		if (cfg == nil) == (err == nil) {
			t.Fatalf("Load returned config %v and error %v", cfg, err)
		}
		if err != nil && Problems(err) == nil {
			t.Fatalf("error without positions: %v", err)
		}
		if cfg != nil {
			if err := Print(&bytes.Buffer{}, cfg); err != nil {
				t.Fatalf("Print: %v", err)
			}
		}
	})
}

// FuzzEnvFile feeds arbitrary env files to the loader: an env file that
// cannot be parsed is a positioned problem, never a panic.
func FuzzEnvFile(f *testing.F) {
	for _, s := range []string{"A=1\n", "export B='x y'\n# c\n", `C="multi\nline"`, "=x", "D=${A}"} {
		f.Add(s)
	}
	dir := f.TempDir()
	os.WriteFile(filepath.Join(dir, "recluster.yml"), []byte("envFile: app.env\nservices: {a: {command: run}}\n"), 0o644)
	f.Fuzz(func(t *testing.T, env string) {
		os.WriteFile(filepath.Join(dir, "app.env"), []byte(env), 0o644)
		cfg, err := testOptions.Load(filepath.Join(dir, "recluster.yml"))
		if (cfg == nil) == (err == nil) || (err != nil && Problems(err) == nil) {
			t.Fatalf("config %v, error %v", cfg, err)
		}
	})
}

// TestNestedMergesAreLinear: anchors that each merge the previous one
// twice would take 2^depth expansions if each merge were expanded anew.
func TestNestedMergesAreLinear(t *testing.T) {
	var b strings.Builder
	b.WriteString("x-0: &a0 {workers: 2}\n")
	const depth = 40
	for i := 1; i <= depth; i++ {
		fmt.Fprintf(&b, "x-%d: &a%d {<<: [*a%d, *a%d], k%d: 1}\n", i, i, i-1, i-1, i)
	}
	// The last anchor has depth+1 keys, and is too deep for a merge: it
	// is refused with its position, not expanded.
	fmt.Fprintf(&b, "services:\n  a:\n    <<: *a%d\n    command: run\n", depth)
	dir := t.TempDir()
	path := filepath.Join(dir, "recluster.yml")
	os.WriteFile(path, []byte(b.String()), 0o644)
	_, err := testOptions.Load(path)
	problems := Problems(err)
	if len(problems) == 0 || !strings.Contains(err.Error(), "merges nest more than") {
		t.Fatalf("want a nesting error, got %v", err)
	}
	// Within the depth bound the merges load, in one pass each.
	b.Reset()
	b.WriteString("x-0: &a0 {workers: 2}\n")
	for i := 1; i <= 20; i++ {
		fmt.Fprintf(&b, "x-%d: &a%d {<<: [*a%d, *a%d], k%d: 1}\n", i, i, i-1, i-1, i)
	}
	b.WriteString("services:\n  a:\n    <<: *a20\n    command: run\n")
	os.WriteFile(path, []byte(b.String()), 0o644)
	_, err = testOptions.Load(path)
	if err == nil || !strings.Contains(err.Error(), `unknown key "k1"`) {
		t.Fatalf("want the merged keys reported as unknown, got %v", err)
	}
}

func TestAPanicWhileLoadingIsAConfigError(t *testing.T) {
	opts := testOptions
	opts.onLoad = func() { panic("boom") }
	_, err := opts.Load(filepath.Join(fixtures, "valid-full.yml"))
	if Problems(err) == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("want the panic as a positioned problem, got %v", err)
	}
}

// TestSyntaxErrorIsLocatedInFewParses: a syntax error at the end of a
// long file is found with a number of parses logarithmic in its length.
func TestSyntaxErrorIsLocatedInFewParses(t *testing.T) {
	var b strings.Builder
	b.WriteString("services:\n  a:\n    command: run\n    env:\n")
	const n = 20000
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, "      K%d: v\n", i)
	}
	b.WriteString("      bad: [unclosed\n")
	for i := 0; i < 100; i++ {
		fmt.Fprintf(&b, "      L%d: v\n", i)
	}
	path := filepath.Join(t.TempDir(), "recluster.yml")
	os.WriteFile(path, []byte(b.String()), 0o644)
	syntaxProbes := 0
	opts := testOptions
	opts.onSyntaxProbe = func() { syntaxProbes++ }
	_, err := opts.Load(path)
	problems := Problems(err)
	if len(problems) != 1 || !strings.Contains(problems[0].Msg, "invalid YAML") {
		t.Fatalf("want one syntax error, got %v", err)
	}
	if got, want := problems[0].Line, n+5; got < want || got > want+101 {
		t.Errorf("located at line %d, want near %d: %v", got, want, problems[0])
	}
	if syntaxProbes > 64 {
		t.Errorf("%d parses to locate the error; want O(log lines)", syntaxProbes)
	}
}

func TestProcfileRefusesNUL(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Procfile"), []byte("web: run \x00x\n"), 0o644)
	if _, err := testOptions.Load(filepath.Join(dir, "Procfile")); Problems(err) == nil || !strings.Contains(err.Error(), "NUL") {
		t.Fatalf("want a NUL problem, got %v", err)
	}
	os.WriteFile(filepath.Join(dir, "Procfile"), []byte("web: run\n"), 0o644)
	os.WriteFile(filepath.Join(dir, ".env"), []byte("A=\"x\\0y\"\nB C=1\n"), 0o644)
	if _, err := testOptions.Load(filepath.Join(dir, "Procfile")); Problems(err) == nil {
		t.Fatalf("want the .env refused, got %v", err)
	}
}

func TestSocketNames(t *testing.T) {
	for name, ok := range map[string]bool{
		"http":                   true,
		"a-b_c.d~!":              true,
		strings.Repeat("x", 255): true,
		strings.Repeat("x", 256): false,
		"":                       false,
		"has space":              false,
		"tab\tname":              false,
		"é":                      false,
		"del\x7f":                false,
		"with:colon":             false,
	} {
		_, err := parseListen(name+"=8080", "web", "/")
		if (err == nil) != ok {
			t.Errorf("name %q: error %v, want accepted=%v", name, err, ok)
		}
	}
}

// TestFilesThatAreNotPlainAreRefused: an envFile or config that is a
// device, a FIFO or too big is refused at once with what it is and what
// is allowed, instead of being read until memory runs out or forever.
func TestFilesThatAreNotPlainAreRefused(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big.env")
	if err := os.WriteFile(big, bytes.Repeat([]byte("A=1\n"), MaxEnvFileBytes/4+1), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ envFile, want string }{
		{"/dev/zero", "/dev/zero is a character device, not a regular file; envFile must name a regular file"},
		{fifo, "is a FIFO, not a regular file"},
		{dir, "is a folder, not a regular file"},
		{big, fmt.Sprintf("may name a file of at most %d bytes (1 MiB)", MaxEnvFileBytes)},
	} {
		path := filepath.Join(dir, "recluster.yml")
		os.WriteFile(path, []byte("services:\n  a:\n    command: run\n    envFile: "+c.envFile+"\n"), 0o644)
		done := make(chan error, 1)
		go func() { _, err := testOptions.Load(path); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("envFile %s: got %v, want %q", c.envFile, err, c.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("envFile %s: Load did not return", c.envFile)
		}
	}
	for _, path := range []string{"/dev/zero", fifo} {
		if _, err := testOptions.Load(path); err == nil || !strings.Contains(err.Error(), "not a regular file; -f must name a regular file") {
			t.Errorf("-f %s: %v", path, err)
		}
	}
}

// TestProcfilePortsStayPorts: a Procfile whose lines would get a PORT
// past 65535 (from the base or from their number) is refused at check.
func TestProcfilePortsStayPorts(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "Procfile")
	os.WriteFile(path, []byte("web: run\nworker: run\n"), 0o644)
	opts := testOptions
	opts.PortBase = 65500
	_, err := opts.Load(path)
	if err == nil || !strings.Contains(err.Error(), "its PORT would be 65600 (the base 65500 + 100 × 1 services before it), but a port is 1 to 65535") {
		t.Errorf("got %v", err)
	}
}

// TestShellDefaultsRunUnderSh: a command with ${NAME:-default} runs under
// /bin/sh, which expands it as foreman does.
func TestShellDefaultsRunUnderSh(t *testing.T) {
	cmd, err := parseCommandLine("python3 -m http.server ${PORT:-3000}")
	if err != nil || !cmd.Shell {
		t.Errorf("got %+v %v, want a shell command", cmd, err)
	}
	if cmd, _ := parseCommandLine("python3 -m http.server ${PORT}"); cmd.Shell {
		t.Errorf("a plain ${PORT} needs no shell: %+v", cmd)
	}
}
