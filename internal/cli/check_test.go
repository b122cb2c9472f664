package cli_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/recluster/recluster/internal/cli"
	"github.com/recluster/recluster/internal/testbin"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

type result struct {
	code        int
	stdout, err string
}

// run runs one command line of recluster in dir. In the test's own
// folder it runs in this process (cli.Main, as main calls it: the verbs
// that start nothing need no binary); elsewhere, since a relative -f
// means the binary's working folder, it runs the real binary there.
func run(t *testing.T, dir string, args ...string) result {
	t.Helper()
	if dir == "." {
		var out, errb bytes.Buffer
		std := cli.Stdio()
		code := cli.Main(args, cli.IO{In: strings.NewReader(""), Out: &out, Err: &errb, Getenv: std.Getenv, Getwd: std.Getwd})
		return result{code, out.String(), errb.String()}
	}
	cmd := exec.Command(testbin.Recluster(t), args...)
	cmd.Dir = dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{code, out.String(), errb.String()}
}

func TestCheckReportsEveryErrorOfEveryInvalidFile(t *testing.T) {
	files, _ := filepath.Glob("../../testdata/config/invalid-*.yml")
	if len(files) == 0 {
		t.Fatal("no fixtures")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			golden, err := os.ReadFile(strings.TrimSuffix(file, ".yml") + ".golden")
			if err != nil {
				t.Fatal(err)
			}
			abs, _ := filepath.Abs("../../testdata/config")
			want := strings.Split(strings.TrimSpace(strings.ReplaceAll(string(golden), "$DIR", abs)), "\n")
			r := run(t, ".", "check", "-f", file)
			if r.code != 1 {
				t.Fatalf("exit %d, want 1; stderr:\n%s", r.code, r.err)
			}
			// The goldens are written by config's tests, one folder up
			// from the repository root rather than two.
			stderr := strings.ReplaceAll(r.err, "../../testdata/", "../testdata/")
			got := strings.Split(strings.TrimSpace(stderr), "\n")
			if len(got) != len(want)+1 {
				t.Fatalf("got %d lines, want %d errors and a summary:\n%s", len(got), len(want), r.err)
			}
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("line %d:\n got %s\nwant %s", i+1, got[i], want[i])
				}
			}
			if !strings.Contains(got[len(want)], "nothing was started") {
				t.Errorf("summary line: %s", got[len(want)])
			}
		})
	}
}

func TestCheckValid(t *testing.T) {
	r := run(t, ".", "check", "-f", "../../testdata/config/valid-full.yml")
	if r.code != 0 || !strings.Contains(r.stdout, "ok, 3 services, 7 workers (api×4, db×1, pipeline×2)") {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.err)
	}
	// Found from a subfolder, with the flag after the verb or before it.
	r = run(t, "../../examples", "-f", "recluster.yml", "check", "--print")
	if r.code != 0 || !strings.Contains(r.stdout, "services:") {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.err)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"frobnicate"}, {"check", "--nope"}, {"check", "extra"}, {}} {
		r := run(t, ".", args...)
		if r.code != 2 || !strings.Contains(r.err, "usage: recluster") {
			t.Errorf("%q: exit %d, stderr:\n%s", args, r.code, r.err)
		}
	}
	if r := run(t, ".", "check", "--help"); r.code != 0 || !strings.Contains(r.stdout, "-print") {
		t.Errorf("check --help: exit %d\n%s", r.code, r.stdout)
	}
	if r := run(t, ".", "version"); r.code != 0 || !strings.HasPrefix(r.stdout, "recluster ") {
		t.Errorf("version: exit %d %s", r.code, r.stdout)
	}
	r := run(t, t.TempDir(), "check")
	if r.code != 1 || !strings.Contains(r.err, "no recluster.yml") {
		t.Errorf("no config: exit %d %s", r.code, r.err)
	}
}
