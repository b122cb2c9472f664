package cli_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/recluster/recluster/internal/testbin"
)

// TestHelpShowsTheVerbsOwnFlags: `help CMD` and `CMD --help` print the
// same text, with the flags the verb really takes.
func TestHelpShowsTheVerbsOwnFlags(t *testing.T) {
	for verb, flag := range map[string]string{"up": "-timestamps", "logs": "-follow", "reload": "-wait", "status": "-json", "check": "-print"} {
		help := run(t, ".", "help", verb)
		flagHelp := run(t, ".", verb, "--help")
		if help.code != 0 || flagHelp.code != 0 {
			t.Errorf("%s: exit %d / %d", verb, help.code, flagHelp.code)
		}
		if !strings.Contains(help.stdout, flag) {
			t.Errorf("help %s does not show %s:\n%s", verb, flag, help.stdout)
		}
		if help.stdout != flagHelp.stdout {
			t.Errorf("help %s and %s --help differ:\n%s\n---\n%s", verb, verb, help.stdout, flagHelp.stdout)
		}
	}
}

func TestUnknownCommandSuggests(t *testing.T) {
	r := run(t, ".", "relaod")
	if r.code != 2 || !strings.Contains(r.err, `did you mean "reload"?`) {
		t.Errorf("relaod: exit %d: %s", r.code, r.err)
	}
	if r := run(t, ".", "help", "stauts"); r.code != 2 || !strings.Contains(r.err, `did you mean "status"?`) {
		t.Errorf("help stauts: exit %d: %s", r.code, r.err)
	}
}

func TestCompleteOffersVerbsFlagsAndServices(t *testing.T) {
	dir := stack(t, simpleStack)
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	sub := filepath.Join(dir, "sub")
	cases := map[string][]string{
		"re":           {"reload", "restart"},
		"reload --w":   {"--wait"},
		"reload ":      {"api", "db"},
		"scale a":      {"api="},
		"logs --f":     {"--file", "--follow"},
		"completion z": {"zsh"},
		"help st":      {"start", "status", "stop"},
		"version ":     {},
	}
	for typed, want := range cases {
		words := strings.Split(typed, " ")
		r := run(t, sub, append([]string{"__complete", "--"}, words...)...)
		got := strings.Fields(r.stdout)
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%q: %q, want %q", typed, got, want)
		}
	}
}

// TestBashCompletionScript runs the bash script in bash, as a shell would
// on <Tab>.
func TestBashCompletionScript(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash here")
	}
	dir := stack(t, simpleStack)
	bin := filepath.Dir(testbin.Recluster(t))
	script := run(t, dir, "completion", "bash").stdout
	cmd := exec.Command(bash, "-c", script+`
COMP_WORDS=(recluster stop ""); COMP_CWORD=2; _recluster; echo "${COMPREPLY[*]}"
COMP_WORDS=(recluster sta); COMP_CWORD=1; _recluster; echo "${COMPREPLY[*]}"`)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 || lines[0] != "api db" || lines[1] != "start status" {
		t.Errorf("bash completion gave %q", lines)
	}
	for _, shell := range []string{"zsh", "fish"} {
		r := run(t, dir, "completion", shell)
		if r.code != 0 || !strings.Contains(r.stdout, "__complete") {
			t.Errorf("completion %s: exit %d %s", shell, r.code, r.stdout)
		}
		if sh, err := exec.LookPath(shell); err == nil {
			check := exec.Command(sh, "-n")
			check.Stdin = strings.NewReader(r.stdout)
			if out, err := check.CombinedOutput(); err != nil {
				t.Errorf("%s -n: %v\n%s", shell, err, out)
			}
		}
	}
}
