package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestInterpolateAsComposeAndShDo(t *testing.T) {
	env := map[string]string{"HOST": "db", "EMPTY": "", "PORT": "5432"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for _, c := range []struct{ in, want string }{
		{"plain", "plain"},
		{"postgres://$HOST/app", "postgres://db/app"},
		{"postgres://${HOST}:${PORT}/app", "postgres://db:5432/app"},
		{"${MISSING:-3000}", "3000"},
		{"${EMPTY:-3000}", "3000"},
		{"${EMPTY-3000}", ""},
		{"${MISSING-3000}", "3000"},
		{"${HOST:-x}", "db"},
		{"${HOST:+set}${MISSING:+no}", "set"},
		{"${EMPTY+set}", "set"},
		{"${MISSING:-${HOST}:${PORT:-1}}", "db:5432"},
		{"pa$$word", "pa$word"},
		{"cost: 5$", "cost: 5$"},
		{"$1 and $-", "$1 and $-"},
		{"$MISSING.", "."},
	} {
		got, err := interpolate(c.in, lookup)
		if err != nil || got != c.want {
			t.Errorf("%q: got %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, c := range []struct{ in, want string }{
		{"${MISSING:?set it in .env}", "MISSING is required: set it in .env"},
		{"${EMPTY:?}", "EMPTY is required: it is not set"},
		{"${HOST", "no closing }"},
		{"${}", "is not a variable"},
		{"${HOST:}", "is not a variable"},
		{"${HOST/a/b}", "is not a variable"},
	} {
		if _, err := interpolate(c.in, lookup); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.in, err, c.want)
		}
	}
	if _, err := interpolate("${EMPTY?}", lookup); err != nil {
		t.Errorf("${EMPTY?} with EMPTY set: %v", err)
	}
}

// TestEnvValuesAreInterpolated: env values name variables as Compose
// files do, from recluster's own environment first, then the file's.
func TestEnvValuesAreInterpolated(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "recluster.yml")
	os.WriteFile(path, []byte(`env:
  DB_HOST: db
services:
  api:
    command: run
    env:
      DATABASE_URL: postgres://$DB_HOST/app
      PORT: ${PORT:-3000}
      PRICE: 5$$
`), 0o644)
	for _, c := range []struct {
		env  map[string]string
		want []string
	}{
		{nil, []string{"DATABASE_URL=postgres://db/app", "PORT=3000", "PRICE=5$"}},
		{map[string]string{"PORT": "8000", "DB_HOST": "prod"}, []string{"DATABASE_URL=postgres://prod/app", "PORT=8000"}},
	} {
		opts := testOptions
		opts.Getenv = func(k string) string { return c.env[k] }
		cfg, err := opts.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range cfg.Services[0].Env {
			got = append(got, e.Name+"="+e.Value)
		}
		for _, w := range c.want {
			if !slices.Contains(got, w) {
				t.Errorf("env %v: want %s in %v", c.env, w, got)
			}
		}
	}
	os.WriteFile(path, []byte("services:\n  api:\n    command: run\n    env:\n      SECRET: ${SECRET:?set SECRET in .env}\n"), 0o644)
	if _, err := testOptions.Load(path); err == nil || !strings.Contains(err.Error(), "5:15: services.api.env.SECRET: SECRET is required: set SECRET in .env") {
		t.Errorf("a required variable: %v", err)
	}
}

// TestEnvFileValuesAreInterpolated: an env file's values expand as sh
// and Compose expand them, from recluster's environment then the
// variables set before them in the file; single quotes and \$ keep a
// dollar, and godotenv's own expansion (which garbles ${VAR:-default})
// never runs.
func TestEnvFileValuesAreInterpolated(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "recluster.yml")
	os.WriteFile(path, []byte("services:\n  api:\n    command: run\n"), 0o644)
	os.WriteFile(filepath.Join(dir, ".env"), []byte(`DB_HOST=db
DATABASE_URL=postgres://${DB_HOST}/app
PORT=${PORT:-3000}
export GREETING="hello $USER_NAME, ${MISSING-none}"
LITERAL='${DB_HOST} stays'
ESCAPED="costs \$5"
PRICE=5$$
HOME_DIR=$HOME
`), 0o644)
	opts := testOptions
	opts.Getenv = func(k string) string { return map[string]string{"USER_NAME": "ana", "HOME": "/home/ana"}[k] }
	cfg, err := opts.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range cfg.Services[0].Env {
		got[e.Name] = e.Value
	}
	for k, want := range map[string]string{
		"DATABASE_URL": "postgres://db/app", "PORT": "3000", "GREETING": "hello ana, none",
		"LITERAL": "${DB_HOST} stays", "ESCAPED": "costs $5", "PRICE": "5$", "HOME_DIR": "/home/ana",
	} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
	os.WriteFile(filepath.Join(dir, ".env"), []byte("SECRET=${SECRET:?set it in your shell}\n"), 0o644)
	if _, err := opts.Load(path); err == nil || !strings.Contains(err.Error(), "SECRET: SECRET is required: set it in your shell") {
		t.Errorf("a required variable in .env: %v", err)
	}
}

// TestARequiredVariableACommandNamesIsChecked: ${NAME:?message} in a
// command that nothing sets is an error of the file, said before any
// worker starts (sh would end each worker on it), in YAML and Procfile
// alike; what recluster sets per worker counts as set.
func TestARequiredVariableACommandNamesIsChecked(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "recluster.yml")
	os.WriteFile(path, []byte("services:\n  api:\n    command: run --key ${API_KEY:?set API_KEY} --port ${PORT:?} '${QUOTED:?}'\n"), 0o644)
	_, err := testOptions.Load(path)
	if err == nil || !strings.Contains(err.Error(), "3:14: services.api.command: API_KEY is required: set API_KEY; set it in recluster's environment") {
		t.Errorf("an unset required variable: %v", err)
	}
	opts := testOptions
	opts.Getenv = func(k string) string { return map[string]string{"API_KEY": "k"}[k] }
	if _, err := opts.Load(path); err != nil {
		t.Errorf("with API_KEY set: %v", err)
	}
	procfile := filepath.Join(dir, "Procfile")
	os.WriteFile(procfile, []byte("web: python3 -m http.server ${PORT:-3000}\nworker: run ${QUEUE:?name the queue}\n"), 0o644)
	if _, err := testOptions.Load(procfile); err == nil || !strings.Contains(err.Error(), "Procfile:2:1: worker: QUEUE is required: name the queue") {
		t.Errorf("a Procfile line: %v", err)
	}
}
