package watch

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/recluster/recluster/config"
)

func TestMatchGlob(t *testing.T) {
	for _, c := range []struct {
		pattern, rel string
		want         bool
	}{
		{"**/*.py", "app.py", true},
		{"**/*.py", "pkg/sub/mod.py", true},
		{"**/*.py", "app.pyc", false},
		{"*.go", "main.go", true},
		{"*.go", "cmd/main.go", false},
		{"templates", "templates/index.html", true},
		{"templates", "templatesx/a", false},
		{".", "anything/at/all", true},
		{"src/**/test_*.py", "src/a/b/test_x.py", true},
		{"src/**/test_*.py", "src/test_x.py", true},
	} {
		if got := matchGlob(c.pattern, c.rel); got != c.want {
			t.Errorf("matchGlob(%q, %q) = %v", c.pattern, c.rel, got)
		}
	}
}

func TestIgnoreRules(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, ".git"), 0o755)
	os.MkdirAll(filepath.Join(dir, "svc", "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, ".gitignore"), []byte("/dist/\n*.out\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "svc", "sub", ".gitignore"), []byte("secret.txt\n"), 0o644)
	r := newIgnoreRules(filepath.Join(dir, "svc"), []string{"**/gen_*.py"})
	for rel, want := range map[string]bool{
		"app.py":            false,
		"x.out":             true,  // the repository's .gitignore
		"sub/secret.txt":    true,  // a nested .gitignore
		"secret.txt":        false, // only below sub
		"node_modules/a.js": true,  // the defaults
		"main.go.swp":       true,
		"pkg/gen_models.py": true, // watch.ignore
		".git/HEAD":         true,
		"logs/server.log":   true,
		"templates/x.html":  false,
	} {
		if got := r.ignored(filepath.Join(dir, "svc", rel), false); got != want {
			t.Errorf("ignored(%s) = %v, want %v", rel, got, want)
		}
	}
}

// watching runs a Watcher over one service and returns its changes.
func watching(t *testing.T, w config.Watch, busy func() bool) (string, chan Change) {
	return watchingWith(t, w, busy, nil)
}

func watchingWith(t *testing.T, w config.Watch, busy func() bool, dropped func(string)) (string, chan Change) {
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "pkg"), 0o755)
	changes := make(chan Change, 16)
	opts := Options{}
	if busy != nil {
		opts.Busy = func(string) bool { return busy() }
	}
	wr := New(opts)
	wr.dropped = dropped
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		wr.Run(ctx, []Service{{Name: "web", Dir: dir, Watch: w}}, changes)
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	<-wr.Ready()
	os.WriteFile(filepath.Join(dir, "probe.py"), nil, 0o644)
	waitChange(t, changes)
	return dir, changes
}

func waitChange(t *testing.T, changes chan Change) Change {
	t.Helper()
	select {
	case c := <-changes:
		return c
	case <-time.After(30 * time.Second):
		t.Fatalf("no change reported")
	}
	return Change{}
}

func TestABurstIsOneChange(t *testing.T) {
	dir, changes := watching(t, config.Watch{Paths: []string{"**/*.py"}, Debounce: 100 * time.Millisecond, Action: "reload"}, nil)
	for i := 0; i < 5; i++ {
		os.WriteFile(filepath.Join(dir, "app.py"), []byte{byte(i)}, 0o644)
	}
	c := waitChange(t, changes)
	if c.File != "app.py" || c.Files != 1 || c.Action != "reload" {
		t.Errorf("the burst: %+v", c)
	}
	// What no glob names, or what is ignored, is no change: the next
	// change reported is the one that counts.
	os.WriteFile(filepath.Join(dir, "README.md"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "app.py.swp"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "pkg", "mod.py"), nil, 0o644)
	if c := waitChange(t, changes); c.File != "pkg/mod.py" || c.Files != 1 {
		t.Errorf("after unwatched files: %+v", c)
	}
	// A folder made after the start is watched too.
	os.MkdirAll(filepath.Join(dir, "new", "deep"), 0o755)
	os.WriteFile(filepath.Join(dir, "new", "deep", "x.py"), nil, 0o644)
	if c := waitChange(t, changes); c.File != "new/deep/x.py" && c.File != "new" && c.File != "new/deep" {
		t.Errorf("in a new folder: %+v", c)
	}
}

// TestASaveThroughATemporaryFileIsNamedByTheFileSaved: sed -i and many
// editors write a temporary file and rename it over the one saved.
func TestASaveThroughATemporaryFileIsNamedByTheFileSaved(t *testing.T) {
	dir, changes := watching(t, config.Watch{Paths: []string{"."}, Debounce: 100 * time.Millisecond, Action: "reload"}, nil)
	tmp := filepath.Join(dir, "sedX1b2c3")
	os.WriteFile(tmp, []byte("v2"), 0o644)
	os.Rename(tmp, filepath.Join(dir, "server.js"))
	if c := waitChange(t, changes); c.File != "server.js" || c.Files != 2 {
		t.Errorf("the save: %+v, want it named by server.js", c)
	}
}

func TestChangesWhileBuildingAreTheBuilds(t *testing.T) {
	var building atomic.Bool
	dropped := make(chan string, 16)
	dir, changes := watchingWith(t, config.Watch{Paths: []string{"."}, Debounce: 50 * time.Millisecond, Action: "reload"}, building.Load,
		func(rel string) { dropped <- rel })
	building.Store(true)
	os.WriteFile(filepath.Join(dir, "server"), []byte("binary"), 0o755)
	// Events come in order: once a later file's change is dropped, every
	// event of the build's output has been.
	os.WriteFile(filepath.Join(dir, "sentinel"), nil, 0o644)
	for rel := range dropped {
		if rel == "sentinel" {
			break
		}
	}
	building.Store(false)
	os.WriteFile(filepath.Join(dir, "main.go"), nil, 0o644)
	if c := waitChange(t, changes); c.File != "main.go" || c.Files != 1 {
		t.Errorf("the build's output counted: %+v", c)
	}
}

// TestASourceSavedWhileBuildingCounts: a file whose save reloaded the
// service is a source; saved again while the service builds, it counts
// (the reload supersedes the build), while the build's output does not.
func TestASourceSavedWhileBuildingCounts(t *testing.T) {
	var building atomic.Bool
	dropped := make(chan string, 16)
	dir, changes := watchingWith(t, config.Watch{Paths: []string{"."}, Debounce: 50 * time.Millisecond, Action: "reload"}, building.Load,
		func(rel string) { dropped <- rel })
	os.WriteFile(filepath.Join(dir, "main.go"), []byte("v1"), 0o644)
	if c := waitChange(t, changes); c.File != "main.go" {
		t.Fatalf("the first save: %+v", c)
	}
	building.Store(true)
	os.WriteFile(filepath.Join(dir, "server"), []byte("binary"), 0o755)
	if rel := <-dropped; rel != "server" {
		t.Fatalf("dropped %s, want the build's output", rel)
	}
	os.WriteFile(filepath.Join(dir, "main.go"), []byte("v2"), 0o644)
	if c := waitChange(t, changes); c.File != "main.go" || c.Files != 1 {
		t.Errorf("the save during the build: %+v, want main.go alone", c)
	}
}

// TestTheWatcherDoesNotGrow: a hundred changes leave its goroutines as
// they were.
func TestTheWatcherDoesNotGrow(t *testing.T) {
	dir, changes := watching(t, config.Watch{Paths: []string{"."}, Debounce: time.Millisecond, Action: "reload"}, nil)
	before := runtime.NumGoroutine()
	for i := 0; i < 100; i++ {
		os.WriteFile(filepath.Join(dir, "a.txt"), []byte{byte(i)}, 0o644)
		waitChange(t, changes)
	}
	// A timer's goroutine ends right after it fires: the last may not
	// have returned yet, which the margin allows for.
	if after := runtime.NumGoroutine(); after > before+2 {
		t.Errorf("goroutines grew from %d to %d over 100 changes", before, after)
	}
}

// TestATreeTooBigIsSaidOnce: beyond the bound on watches, the log says
// which tree is too big and what to do, once, and what is watched still
// reports its changes.
func TestATreeTooBigIsSaidOnce(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"a", "b", "c", "d"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	var said []string
	w := New(Options{MaxWatches: 2, Log: func(_, line string) { said = append(said, line) }})
	changes := make(chan Change, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		w.Run(ctx, []Service{{Name: "web", Dir: dir, Watch: config.Watch{Paths: []string{"."}, Debounce: time.Millisecond, Action: "reload"}}}, changes)
		close(done)
	}()
	defer func() { cancel(); <-done }()
	<-w.Ready() // Run has logged what it will about its first watches
	if len(said) != 1 || !strings.Contains(said[0], "more folders than recluster may watch (2") ||
		!strings.Contains(said[0], "fs.inotify.max_user_watches") {
		t.Errorf("said %q", said)
	}
	os.WriteFile(filepath.Join(dir, "top.txt"), nil, 0o644)
	if c := waitChange(t, changes); c.File != "top.txt" {
		t.Errorf("the watched top folder: %+v", c)
	}
}

// TestAGlobBelowAFolderNotMadeYet: the nearest folder that exists is
// watched, so files in folders made later are seen.
func TestAGlobBelowAFolderNotMadeYet(t *testing.T) {
	dir := t.TempDir()
	changes := make(chan Change, 16)
	wr := New(Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		wr.Run(ctx, []Service{{Name: "web", Dir: dir, Watch: config.Watch{Paths: []string{"gen/sub/*.txt"}, Debounce: time.Millisecond, Action: "reload"}}}, changes)
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	<-wr.Ready()
	os.MkdirAll(filepath.Join(dir, "gen", "sub"), 0o755)
	os.WriteFile(filepath.Join(dir, "gen", "sub", "a.txt"), nil, 0o644)
	if c := waitChange(t, changes); c.File != "gen/sub/a.txt" {
		t.Errorf("the change: %+v", c)
	}
}

// TestAStormReloadsAtMostEveryMaxBurst: changes that never settle (a
// rename storm, a generator writing without pause) fire at most once per
// maxBurst, not once per debounce.
func TestAStormReloadsAtMostEveryMaxBurst(t *testing.T) {
	dir, changes := watching(t, config.Watch{Paths: []string{"**/*.py"}, Debounce: 20 * time.Millisecond, Action: "reload"}, nil)
	stop := time.Now().Add(2*maxBurst + maxBurst/2)
	for i := 0; time.Now().Before(stop); i++ {
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("gen%d.py", i%50)), nil, 0o644)
		os.Rename(filepath.Join(dir, fmt.Sprintf("gen%d.py", i%50)), filepath.Join(dir, fmt.Sprintf("moved%d.py", i%50)))
	}
	fired := 0
	for done := false; !done; {
		select {
		case <-changes:
			fired++
		default:
			done = true
		}
	}
	// 2.5 × maxBurst of storm: the cap fires at most 3 times (at 2 s,
	// 4 s and the end), where once a debounce would be dozens.
	if fired > 3 {
		t.Errorf("%d changes in %s of storm; want at most one per %s", fired, 2*maxBurst+maxBurst/2, maxBurst)
	}
	if c := waitChange(t, changes); c.Files == 0 {
		t.Errorf("the storm's last burst: %+v", c)
	}
}

// TestARecreatedFolderIsWatchedAgain: rm -rf of a watched folder and a
// mkdir at its path (a build's dist, a git checkout): a save in the new
// folder counts.
func TestARecreatedFolderIsWatchedAgain(t *testing.T) {
	dir, changes := watching(t, config.Watch{Paths: []string{"**/*.py"}, Debounce: 20 * time.Millisecond, Action: "reload"}, nil)
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "first.py"), nil, 0o644)
	if c := waitChange(t, changes); c.File != "src/first.py" && c.File != "src" {
		t.Fatalf("the first folder: %+v", c)
	}
	os.RemoveAll(src)
	os.MkdirAll(src, 0o755)
	// The new folder's watch is added when its event is handled: the
	// save is made again until it counts (it never did before, however
	// often).
	deadline := time.After(30 * time.Second)
	for i := 0; ; i++ {
		os.WriteFile(filepath.Join(src, "app.py"), []byte(fmt.Sprint(i)), 0o644)
		select {
		case c := <-changes:
			if c.File == "src/app.py" {
				return
			}
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			t.Fatal("a save in the recreated folder never counted")
		}
	}
}

// TestManyServicesSavedAtOnceAllFire: forty services changing at once (a
// git pull in a monorepo) each get their change; none is dropped.
func TestManyServicesSavedAtOnceAllFire(t *testing.T) {
	root := t.TempDir()
	var services []Service
	for i := range 40 {
		d := filepath.Join(root, fmt.Sprint("s", i))
		os.MkdirAll(d, 0o755)
		services = append(services, Service{Name: fmt.Sprint("s", i), Dir: d, Watch: config.Watch{Paths: []string{"*.py"}, Debounce: 20 * time.Millisecond, Action: "reload"}})
	}
	changes := make(chan Change) // unbuffered: the receiver is slow
	wr := New(Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { wr.Run(ctx, services, changes); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	<-wr.Ready()
	for _, s := range services {
		os.WriteFile(filepath.Join(s.Dir, "app.py"), nil, 0o644)
	}
	// Each change is taken as a reload takes it: a while after the last.
	got := map[string]bool{}
	for len(got) < 40 {
		got[waitChange(t, changes).Service] = true
		time.Sleep(20 * time.Millisecond) // the receiver's own work, not a wait for the watcher
	}
}
