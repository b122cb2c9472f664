package cli_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/recluster/recluster/internal/load"
	"github.com/recluster/recluster/internal/testbin"
)

// The recipes of README.md, each a folder in testdata/recipes: a real
// framework that nobody here wrote, as its users run it, reloaded five
// times under load by clients that never retry, with nothing lost.

const recipes = "../../testdata/recipes"

// recipeNeeds says what each recipe needs on the machine; .ci/run
// installs it (Debian packages, and express from npm).
var recipeNeeds = map[string][]string{
	"gunicorn": {"gunicorn"},
	"uvicorn":  {"/usr/bin/python3"},
	"express":  {"node", "npm"},
	"gohttp":   {"go"},
	"puma":     {"puma"},
}

func TestRecipesReloadUnderLoadLosingNothing(t *testing.T) {
	entries, err := os.ReadDir(recipes)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		name := e.Name()
		t.Run(name, func(t *testing.T) {
			// Each recipe has its own folder and ports, and spends most
			// of its time waiting out minReady: two run at once.
			t.Parallel()
			for _, need := range recipeNeeds[name] {
				if _, err := exec.LookPath(need); err != nil {
					t.Skipf("RECIPE NOT TESTED: %s needs %s, which is not installed (.ci/run installs it)", name, need)
				}
			}
			if name == "uvicorn" && exec.Command("/usr/bin/python3", "-c", "import uvicorn").Run() != nil {
				t.Skipf("RECIPE NOT TESTED: uvicorn needs python3-uvicorn (.ci/run installs it)")
			}
			dir := prepareRecipe(t, name)
			u := startUpIn(t, dir, recipeEnv(t))
			u.waitLine(`every service is ready`)
			clients := startRecipeLoad(t, u, publicAddr(t, dir))
			for i := 0; i < 5; i++ {
				if r := verbEnv(t, dir, recipeEnv(t), "reload"); r.code != 0 {
					t.Fatalf("reload %d: exit %d: %s\n%s", i, r.code, r.err, tail(u.output(), 30))
				}
				clients.waitServed(10)
			}
			if name == "gohttp" { // its recipe builds, and watches its code
				src := filepath.Join(dir, "main.go")
				data, _ := os.ReadFile(src)
				os.WriteFile(src, append(data, "\n// saved\n"...), 0o644)
				u.waitLine(`app: reloading: main.go changed`)
				u.waitLine(`app generation 7 is ready`)
				clients.waitServed(10)
			}
			clients.expectNoFailures(t, u, "through 5 reloads")
		})
	}
}

// prepareRecipe copies a recipe to a folder of its own, on free ports,
// with what it needs built or installed.
func prepareRecipe(t *testing.T, name string) string {
	dir := t.TempDir()
	src := filepath.Join(recipes, name)
	files, _ := os.ReadDir(src)
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(src, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if f.Name() == "recluster.yml" {
			data = []byte(regexp.MustCompile(`(listen|address): \d+`).ReplaceAllStringFunc(string(data), func(m string) string {
				key, _, _ := strings.Cut(m, ":")
				_, port, _ := strings.Cut(testbin.FreeAddr(t), ":")
				return key + ": " + port
			}))
		}
		os.WriteFile(filepath.Join(dir, f.Name()), data, 0o644)
	}
	if name == "express" {
		os.Symlink(expressModules(t), filepath.Join(dir, "node_modules"))
	}
	return dir
}

// expressModules returns a node_modules folder that holds express:
// $RECLUSTER_TEST_NODE_MODULES when .ci/run installed it, else one npm
// fills once in the user's cache.
func expressModules(t *testing.T) string {
	if dir := os.Getenv("RECLUSTER_TEST_NODE_MODULES"); dir != "" {
		return dir
	}
	cache, _ := os.UserCacheDir()
	prefix := filepath.Join(cache, "recluster-test", "npm")
	modules := filepath.Join(prefix, "node_modules")
	if _, err := os.Stat(filepath.Join(modules, "express")); err == nil {
		return modules
	}
	os.MkdirAll(prefix, 0o755)
	install := exec.Command("npm", "install", "--prefix", prefix, "--no-audit", "--no-fund", "express@4")
	if out, err := install.CombinedOutput(); err != nil {
		t.Skipf("RECIPE NOT TESTED: npm could not install express: %v\n%s", err, out)
	}
	return modules
}

// recipeEnv is the tests' environment with Debian's Python first, which
// has the packages .ci/run installs (a pyenv python3 may be first on PATH).
func recipeEnv(t *testing.T) []string {
	return append(testEnv(t), "PATH=/usr/bin:"+os.Getenv("PATH"))
}

// publicAddr is where the recipe's service answers: its proxy, else its
// first listen address.
func publicAddr(t *testing.T, dir string) string {
	st := status(t, dir)
	for _, s := range st.Services {
		if _, addr, ok := strings.Cut(s.Proxy, "://"); ok {
			return addr
		}
		if len(s.Listen) > 0 {
			return strings.Replace(s.Listen[0], "[::]", "127.0.0.1", 1)
		}
	}
	t.Fatalf("no address in %+v", st)
	return ""
}

// TestGunicornBrokenSaveKeepsServing: README's gunicorn recipe with
// `watch`, under load: a save that breaks the app (gunicorn's master says
// READY=1 before its workers import it, and exits 3 once they cannot)
// fails its reload within minReady, so the old generation serves on with
// no request lost, up stays, and the save that fixes it reloads.
func TestGunicornBrokenSaveKeepsServing(t *testing.T) {
	if _, err := exec.LookPath("gunicorn"); err != nil {
		t.Skipf("NOT TESTED: needs gunicorn, which is not installed (.ci/run installs it)")
	}
	dir := prepareRecipe(t, "gunicorn")
	yml := filepath.Join(dir, "recluster.yml")
	data, _ := os.ReadFile(yml)
	// minReady 5s, not the default 2s: on an idle machine gunicorn's
	// master says READY=1 and exits 3 within 0.5-0.7 s of a broken save
	// (1.2-1.7 s under load, README), but beside the rest of the suite in
	// CI it once took over 2 s, and the broken generation was promoted.
	// What this test shows is that a broken save within minReady leaves
	// the old generation serving.
	os.WriteFile(yml, append(data, "    watch: \"*.py\"\n    minReady: 5s\n"...), 0o644)
	u := startUpIn(t, dir, recipeEnv(t))
	u.waitLine(`every service is ready`)
	clients := startRecipeLoad(t, u, publicAddr(t, dir))
	app := filepath.Join(dir, "app.py")
	good, _ := os.ReadFile(app)
	os.WriteFile(app, append(append([]byte{}, good...), "\ndef broken(:\n"...), 0o644)
	u.waitLine(`web reload to generation 2 failed: web\.0 \(generation 2, pid \d+\) exited within minReady`)
	clients.waitServed(20)
	if st := status(t, dir); st.Services[0].State != "running" || st.Services[0].Generation != 1 {
		t.Errorf("after the broken save web is %s on generation %d, want running on 1", st.Services[0].State, st.Services[0].Generation)
	}
	os.WriteFile(app, append(append([]byte{}, good...), "\n# fixed\n"...), 0o644)
	u.waitLine(`web generation 3 is ready`)
	clients.waitServed(20)
	clients.expectNoFailures(t, u, "through a broken save and its fix")
}

// recipeLoad is the clients a recipe is tried with, by kind: clients
// that never retry, one request per connection and keep-alive.
type recipeLoad map[string]*load.Client

// startRecipeLoad starts them on addr, and waits until each is served.
func startRecipeLoad(t *testing.T, u *upProcess, addr string) recipeLoad {
	t.Helper()
	l := recipeLoad{"one request per connection": load.Start(addr, load.Options{Conns: 3}),
		"keep-alive": load.Start(addr, load.Options{Conns: 3, KeepAlive: true})}
	for _, c := range l {
		if !c.WaitServed(20, deadline) {
			t.Fatalf("no answers: %v\n%s", c.Snapshot().Failures, u.output())
		}
	}
	return l
}

// waitServed waits for n more answers to each client.
func (l recipeLoad) waitServed(n int64) {
	for _, c := range l {
		c.WaitServed(n, deadline)
	}
}

// expectNoFailures stops the clients; a request that failed during what
// fails the test.
func (l recipeLoad) expectNoFailures(t *testing.T, u *upProcess, what string) {
	t.Helper()
	for kind, c := range l {
		if r := c.Finish(); r.Failed() > 0 {
			t.Errorf("%s: %d of %d requests failed %s: %v, e.g. %q\nup's output, access logs left out:\n%s", kind, r.Failed(), int(r.OK)+r.Failed(), what, r.Failures, r.Examples, reclusterLines(u.output()))
		} else {
			t.Logf("%s: %d requests %s, none failed", kind, r.OK, what)
		}
	}
}

// TestREADMERecipesAreTheTestedOnes: every recipe README.md shows is one
// that the test above runs, as it is there.
func TestREADMERecipesAreTheTestedOnes(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)<!-- recipe: ([a-z]+)/([a-z.]+) -->\n```[a-z]*\n(.*?)```").FindAllStringSubmatch(string(readme), -1)
	shown := map[string]bool{}
	for _, b := range blocks {
		want, err := os.ReadFile(filepath.Join(recipes, b[1], b[2]))
		if err != nil {
			t.Errorf("README shows %s/%s, which is not a tested recipe file: %v", b[1], b[2], err)
			continue
		}
		if b[3] != string(want) {
			t.Errorf("README's %s/%s differs from the tested file:\n--- README\n%s--- %s\n%s", b[1], b[2], b[3], filepath.Join(recipes, b[1], b[2]), want)
		}
		shown[b[1]] = true
	}
	entries, _ := os.ReadDir(recipes)
	for _, e := range entries {
		if !shown[e.Name()] {
			t.Errorf("recipe %s is tested but README.md does not show it", e.Name())
		}
	}
	if len(shown) == 0 {
		t.Errorf("README.md shows no recipe")
	}
}

// TestProcfileWebIsProxied: in Procfile mode web is served on foreman's
// port by the proxy, so `reload web` under load loses nothing, and
// `scale web=2` gives two ready workers on ports of their own.
func TestProcfileWebIsProxied(t *testing.T) {
	dir := t.TempDir()
	worker := testbin.Worker(t)
	os.WriteFile(filepath.Join(dir, "Procfile"), []byte("web: "+worker+" -mode naive -after 100ms\nclock: "+worker+"\n"), 0o644)
	_, base, _ := strings.Cut(testbin.FreeAddr(t), ":")
	u := startUp(t, dir, "--port", base)
	u.waitLine(`every service is ready`)
	l := load.Start("127.0.0.1:"+base, load.Options{Conns: 4, KeepAlive: true})
	if !l.WaitServed(20, deadline) {
		t.Fatalf("web answers nothing on %s: %v", base, l.Snapshot().Failures)
	}
	for i := 0; i < 3; i++ {
		if r := verb(t, dir, "reload", "web"); r.code != 0 {
			t.Fatalf("reload web: %d %s", r.code, r.err)
		}
		l.WaitServed(10, deadline)
	}
	if r := verb(t, dir, "scale", "web=2"); r.code != 0 {
		t.Fatalf("scale web=2: %d %s", r.code, r.err)
	}
	l.WaitServed(10, deadline)
	if res := l.Finish(); res.Failed() > 0 {
		t.Errorf("%d requests failed: %v %q", res.Failed(), res.Failures, res.Examples)
	}
	ports := map[int]bool{}
	for _, s := range status(t, dir).Services {
		if s.Name != "web" {
			continue
		}
		for _, w := range s.Workers {
			if w.State != "ready" || w.Port == 0 || w.Port == atoi(base) {
				t.Errorf("web worker %+v", w)
			}
			ports[w.Port] = true
		}
	}
	if len(ports) != 2 {
		t.Errorf("two web workers on two ports: %v", ports)
	}
}

func atoi(s string) int {
	n := 0
	fmt.Sscan(s, &n)
	return n
}

// TestTheExampleStack runs examples/recluster.yml, as README.md's first
// command does (on free ports), and reloads its Go service by saving a
// file, its build included.
func TestTheExampleStack(t *testing.T) {
	for _, need := range []string{"node", "python3", "go"} {
		if _, err := exec.LookPath(need); err != nil {
			t.Skipf("EXAMPLE NOT TESTED: it needs %s", need)
		}
	}
	dir := t.TempDir()
	if out, err := exec.Command("cp", "-r", "../../examples/.", dir).CombinedOutput(); err != nil {
		t.Fatalf("copying the examples: %v %s", err, out)
	}
	cfg, _ := os.ReadFile(filepath.Join(dir, "recluster.yml"))
	ports := map[string]string{}
	cfg = regexp.MustCompile(`listen: (\d+)`).ReplaceAllFunc(cfg, func(m []byte) []byte {
		_, port, _ := strings.Cut(testbin.FreeAddr(t), ":")
		ports[strings.TrimPrefix(string(m), "listen: ")] = port
		return []byte("listen: " + port)
	})
	os.WriteFile(filepath.Join(dir, "recluster.yml"), cfg, 0o644)
	// The copy is its own module's folder no more: build the Go example
	// as a file list.
	os.WriteFile(filepath.Join(dir, "recluster.yml"), []byte(strings.Replace(string(cfg), "go build -o .cache/example-go ./go", "go build -o .cache/example-go go/main.go", 1)), 0o644)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	for _, p := range []string{"8080", "8081", "8082"} {
		if err := get("127.0.0.1:" + ports[p]); err != nil {
			t.Errorf("the example on %s (was %s): %v", ports[p], p, err)
		}
	}
	l := load.Start("127.0.0.1:"+ports["8082"], load.Options{Conns: 2})
	l.WaitServed(10, deadline)
	src := filepath.Join(dir, "go", "main.go")
	data, _ := os.ReadFile(src)
	os.WriteFile(src, append(data, []byte("\n// saved\n")...), 0o644)
	u.waitLine(`go: reloading: go/main.go changed`)
	u.waitLine(`go generation 2 is ready`)
	l.WaitServed(10, deadline)
	if r := l.Finish(); r.Failed() > 0 {
		t.Errorf("%d requests failed through the save: %v %q", r.Failed(), r.Failures, r.Examples)
	}
}

// reclusterLines are up's output without the frameworks' access logs.
func reclusterLines(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, `HTTP/1.1" 200`) && !strings.Contains(l, "HTTP/1.1 200") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}
