package cli_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/recluster/recluster/internal/load"
	"github.com/recluster/recluster/internal/testbin"
)

// countLines counts the lines of up's output that match re.
func (u *upProcess) countLines(re string) int {
	rx := regexp.MustCompile(re)
	n := 0
	for _, l := range strings.Split(u.output(), "\n") {
		if rx.MatchString(l) {
			n++
		}
	}
	return n
}

// waitCount waits until n lines match re, re-counting on every new line.
func (u *upProcess) waitCount(re string, n int) {
	u.t.Helper()
	timeout := time.After(deadline)
	for u.countLines(re) < n {
		select {
		case <-u.added:
		case <-u.done:
			u.t.Fatalf("up exited before %d lines matching %q:\n%s", n, re, u.output())
		case <-timeout:
			u.t.Fatalf("%d of %d lines matching %q:\n%s", u.countLines(re), n, re, tail(u.output(), 30))
		}
	}
}

const watchStack = `
services:
  web:
    command: [WORKER, -mode, serve, -ready]
    workers: 2
    listen: "ADDR"
    readyWhen: ready
    timeout: 10s
    build: >-
      sh -c 'echo built >> builds.log; if [ -e broken.txt ]; then echo "compile error: broken.txt:1: expected an expression" >&2; exit 2; fi'
    watch: {paths: ["**/*.txt"], debounce: 200ms}
`

// TestWatchReloadsOnSaveWithNothingLost: saves reload the service under
// load with nothing lost; a burst is one reload; files no glob names, or
// that .gitignore ignores, reload nothing; a save that breaks the build
// leaves the old workers serving and shows the compiler's error, and the
// fix reloads; the build runs once per generation.
func TestWatchReloadsOnSaveWithNothingLost(t *testing.T) {
	addr := testbin.FreeAddr(t)
	dir := stack(t, strings.Replace(watchStack, "ADDR", addr, 1))
	os.WriteFile(filepath.Join(dir, ".gitignore"), []byte("ignored.txt\n"), 0o644)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	l := load.Start(addr, load.Options{Conns: 4})
	l.WaitServed(20, deadline)
	save := func(name string) { os.WriteFile(filepath.Join(dir, name), []byte(name), 0o644) }
	reloads := func() int { return u.countLines(`web: reloading: `) }
	ready := func() int { return u.countLines(`web generation \d+ is ready`) }

	for i := 0; i < 5; i++ {
		save("a.txt")
	}
	u.waitCount(`web generation \d+ is ready`, 1)
	if n := reloads(); n < 1 || n > 2 {
		t.Errorf("five saves in a burst gave %d reloads", n)
	}
	l.WaitServed(10, deadline)

	before, n := reloads(), ready()
	save("notes.md")
	save("ignored.txt")
	save("b.txt")
	u.waitLine(`web: reloading: b.txt changed`)
	u.waitCount(`web generation \d+ is ready`, n+1)
	if n := reloads() - before; n != 1 {
		t.Errorf("a watched save after an unwatched and an ignored one gave %d reloads:\n%s", n, tail(u.output(), 20))
	}
	if strings.Contains(u.output(), "notes.md changed") || strings.Contains(u.output(), "ignored.txt changed") {
		t.Errorf("an unwatched or ignored file triggered a reload")
	}

	serving := servingPids(status(t, dir), "web")
	save("broken.txt")
	u.waitLine(`web.build +! compile error: broken.txt:1: expected an expression`)
	u.waitLine(`build for generation \d+ failed: exit code 2`)
	if now := servingPids(status(t, dir), "web"); fmt.Sprint(now) != fmt.Sprint(serving) {
		t.Errorf("a broken build changed the serving workers: %v -> %v", serving, now)
	}
	l.WaitServed(10, deadline)
	n = ready()
	os.Remove(filepath.Join(dir, "broken.txt"))
	save("c.txt")
	u.waitCount(`web generation \d+ is ready`, n+1)
	if now := servingPids(status(t, dir), "web"); fmt.Sprint(now) == fmt.Sprint(serving) {
		t.Errorf("the fix did not reload")
	}
	if r := l.Finish(); r.Failed() > 0 {
		t.Errorf("%d requests failed through the saves: %v %q", r.Failed(), r.Failures, r.Examples)
	}
	data, _ := os.ReadFile(filepath.Join(dir, "builds.log"))
	builds := strings.Count(string(data), "built")
	if started := u.countLines(`web: building generation \d+`); builds != started || builds > reloads()+1 {
		t.Errorf("%d builds for %d generations started and %d reloads; a build runs once per generation", builds, started, reloads())
	}
}

// TestSavingTheConfigReloadsWhatChanged: an edit of one service's env
// reloads that service only; an invalid edit is reported and changes
// nothing.
func TestSavingTheConfigReloadsWhatChanged(t *testing.T) {
	const cfg = `
services:
  a:
    command: [WORKER]
    workers: 1
    env: {COLOR: %s}
    watch: src
  b:
    command: [WORKER]
    workers: 1
    watch: src
`
	dir := stack(t, fmt.Sprintf(cfg, "red"))
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	before := status(t, dir)
	write := func(s string) {
		os.WriteFile(filepath.Join(dir, "recluster.yml"), []byte(strings.ReplaceAll(s, "WORKER", testbin.Worker(t))), 0o644)
	}
	write(fmt.Sprintf(cfg, "blue"))
	u.waitLine(`what changed in it is in force`)
	after := status(t, dir)
	gen := func(st statusJSON, name string) int {
		for _, s := range st.Services {
			if s.Name == name {
				return s.Generation
			}
		}
		return -1
	}
	if gen(after, "a") != gen(before, "a")+1 || gen(after, "b") != gen(before, "b") ||
		fmt.Sprint(pidsOf(after, "b")) != fmt.Sprint(pidsOf(before, "b")) {
		t.Errorf("an edit of a's env: a %d -> %d, b %d -> %d", gen(before, "a"), gen(after, "a"), gen(before, "b"), gen(after, "b"))
	}
	write(strings.Replace(fmt.Sprintf(cfg, "green"), "workers: 1", "workers: 0", 1))
	u.waitLine(`saved with problems; nothing changed`)
	u.waitLine(`recluster.yml:\d+:\d+: services.a.workers: must be a whole number`)
	if now := status(t, dir); gen(now, "a") != gen(after, "a") {
		t.Errorf("an invalid edit changed a")
	}
}

// retriggerWindowForTests is cli's retriggerWindow and a margin.
const retriggerWindowForTests = 1200 * time.Millisecond

// TestManySavesLeakNothing: thirty save-triggered reloads leave up's
// descriptors as they were.
func TestManySavesLeakNothing(t *testing.T) {
	t.Parallel() // mostly the waits between saves; counts its own up's descriptors
	dir := stack(t, `
services:
  w:
    command: [WORKER]
    workers: 1
    minReady: 0s
    watch: {paths: ["*.txt"], debounce: 1ms}
`)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	pid := u.cmd.Process.Pid
	save := func(i int) {
		os.WriteFile(filepath.Join(dir, "x.txt"), []byte(fmt.Sprint(i)), 0o644)
		u.waitCount(`w generation \d+ is ready`, i)
		// A save within a second of a reload's end counts towards the
		// reload's retriggering itself (watching.go), and five in a row
		// back off: a person's saves are further apart than a test's.
		time.Sleep(retriggerWindowForTests)
	}
	// Counted once the old worker is gone, as its pipes and pidfd are
	// until then: a machine under load stops it later.
	settled := func() int {
		waitStatus(t, dir, "the old worker gone", func(st statusJSON) bool {
			return len(st.Services) == 1 && len(st.Services[0].Workers) == 1
		})
		return testbin.CountFDs(pid)
	}
	save(1)
	fds := settled()
	for i := 2; i <= 30; i++ {
		save(i)
	}
	if after := settled(); after > fds+2 {
		t.Errorf("up's fds grew from %d to %d over 30 reloads on save", fds, after)
	}
}

// TestASaveRightAfterReadyReloads: once `up` says every service is ready,
// a save counts, however long watching a big tree takes to set up (before,
// the ready line could come while the watches were still being added,
// and a save made then was lost).
func TestASaveRightAfterReadyReloads(t *testing.T) {
	dir := stack(t, `
services:
  w:
    command: [WORKER]
    workers: 1
    watch: {paths: ["**/*.txt"], debounce: 1ms}
`)
	for i := 0; i < 2000; i++ {
		if err := os.MkdirAll(filepath.Join(dir, "tree", fmt.Sprint(i%40), fmt.Sprint(i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	if err := os.WriteFile(filepath.Join(dir, "tree", "39", "1999", "x.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	u.waitLine(`w generation 2 is ready`)
}

// servingPids are the pids of the serving generation's workers: not old
// ones still draining.
func servingPids(st statusJSON, service string) []int {
	var out []int
	for _, s := range st.Services {
		if s.Name == service {
			for _, w := range s.Workers {
				if w.Generation == s.Generation {
					out = append(out, w.Pid)
				}
			}
		}
	}
	return out
}

// TestWatchRestartStopsThenStarts: action restart is for a service that
// cannot run two generations side by side: the old workers are gone
// before the new start.
func TestWatchRestartStopsThenStarts(t *testing.T) {
	dir := stack(t, `
services:
  w:
    command: [WORKER]
    workers: 1
    watch: {paths: ["*.txt"], action: restart, debounce: 10ms}
`)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	before := pidsOf(status(t, dir), "w")
	os.WriteFile(filepath.Join(dir, "x.txt"), nil, 0o644)
	u.waitLine(`w: restarting: x.txt changed`)
	u.waitLine(`w: restarted`)
	after := pidsOf(status(t, dir), "w")
	if len(after) != 1 || fmt.Sprint(after) == fmt.Sprint(before) {
		t.Errorf("pids %v -> %v", before, after)
	}
	if strings.Contains(u.output(), "reloading") {
		t.Errorf("a restart service reloaded")
	}
}

// TestASaveDuringABuildEndsOnTheLatestFiles: a save made while the build
// of the one before runs supersedes that build, so the service ends on
// the second save's files, not the first's.
func TestASaveDuringABuildEndsOnTheLatestFiles(t *testing.T) {
	dir := stack(t, `
services:
  web:
    command: sh -c 'echo "serving $(cat built.out)"; exec sleep 100'
    workers: 1
    build: sh -c 'v=$(cat src.txt); echo "compiling $v"; sleep 3; echo "$v" > built.out'
    watch: {paths: ["src.txt"], debounce: 50ms}
`)
	src := filepath.Join(dir, "src.txt")
	os.WriteFile(src, []byte("v1"), 0o644)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	u.waitLine(`serving v1`)
	os.WriteFile(src, []byte("v2"), 0o644)
	u.waitLine(`compiling v2`)
	os.WriteFile(src, []byte("v3"), 0o644)
	u.waitLine(`serving v3`)
	u.waitLine(`web generation \d+ is ready`)
	if strings.Contains(u.output(), "serving v2") {
		t.Errorf("the first save's build was not superseded:\n%s", tail(u.output(), 20))
	}
}

// TestAServiceThatRetriggersItselfBacksOff: a service that writes a
// watched file at each start would reload for ever; it is said once, and
// its reloads then wait, longer each time.
func TestAServiceThatRetriggersItselfBacksOff(t *testing.T) {
	dir := stack(t, `
services:
  web:
    command: sh -c 'date +%s%N > stamp.txt; exec sleep 100'
    workers: 1
    minReady: 0s
    watch: {paths: ["*.txt"], debounce: 20ms}
`)
	u := startUp(t, dir, "--timestamps")
	u.waitLine(`every service is ready`)
	os.WriteFile(filepath.Join(dir, "a.txt"), nil, 0o644)
	u.waitLine(`web: its watched files changed during or right after each of its last 5 reloads \(stamp.txt\)`)
	n := u.countLines(`web: reloading: `)
	u.waitCount(`web: reloading: `, n+2)
	if said := u.countLines(`its watched files changed during or right after`); said != 1 {
		t.Errorf("said %d times, want once", said)
	}
	var at []time.Time
	for _, l := range strings.Split(u.output(), "\n") {
		if strings.Contains(l, "web: reloading: ") {
			if ts, err := time.Parse("15:04:05.000", strings.Fields(l)[0]); err == nil {
				at = append(at, ts)
			}
		}
	}
	if len(at) < n+2 {
		t.Fatalf("%d timed reload lines, want %d", len(at), n+2)
	}
	// The second reload after the one said waits 4s from its change:
	// more than the 2s the watcher keeps between a storm's reloads.
	if gap := at[n+1].Sub(at[n]); gap < 3*time.Second {
		t.Errorf("reloads %s apart after the back-off was said, want at least 4s", gap)
	}
}

// TestFortyServicesSavedAtOnceAllReload: a save in each of forty watched
// services at once (a git pull in a monorepo) reloads every one of them.
func TestFortyServicesSavedAtOnceAllReload(t *testing.T) {
	var yml strings.Builder
	yml.WriteString("services:\n")
	for i := range 40 {
		fmt.Fprintf(&yml, "  s%d: {command: [WORKER], workers: 1, dir: s%d, watch: \"*.txt\"}\n", i, i)
	}
	dir := stack(t, yml.String())
	for i := range 40 {
		os.Mkdir(filepath.Join(dir, fmt.Sprintf("s%d", i)), 0o755)
	}
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	for i := range 40 {
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("s%d", i), "a.txt"), nil, 0o644)
	}
	u.waitCount(`s\d+ generation 2 is ready`, 40)
	if n := u.countLines(`s\d+: reloading: a.txt changed`); n != 40 {
		t.Errorf("%d reloads for forty saves", n)
	}
}

// TestARecreatedFolderIsWatchedUnderUp: `rm -rf src && mkdir src` (a
// git checkout, a clean build) and then a save in it reloads.
func TestARecreatedFolderIsWatchedUnderUp(t *testing.T) {
	dir := stack(t, `
services:
  web:
    command: [WORKER]
    workers: 1
    watch: {paths: ["src"], debounce: 20ms}
`)
	src := filepath.Join(dir, "src")
	os.Mkdir(src, 0o755)
	u := startUp(t, dir)
	u.waitLine(`every service is ready`)
	os.RemoveAll(src)
	os.Mkdir(src, 0o755)
	// The folder's own events are a change of src: one reload.
	u.waitLine(`web generation 2 is ready`)
	os.WriteFile(filepath.Join(src, "app.txt"), []byte("v2"), 0o644)
	u.waitLine(`web: reloading: src/app.txt changed`)
	u.waitLine(`web generation 3 is ready`)
}
