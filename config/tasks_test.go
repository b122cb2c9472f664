package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func loadString(t *testing.T, yml string) (*Config, []string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "recluster.yml")
	os.WriteFile(path, []byte(yml), 0o644)
	cfg, err := testOptions.Load(path)
	var problems []string
	for _, p := range Problems(err) {
		problems = append(problems, strings.TrimPrefix(p.Error(), path+":"))
	}
	if err != nil && problems == nil {
		t.Fatal(err)
	}
	return cfg, problems
}

func TestTasksAndConditions(t *testing.T) {
	cfg, problems := loadString(t, `
services:
  migrate: {command: ./migrate, restart: never}
  seed: {command: ./seed, restart: on-failure, startLimit: 0, minUptime: 0}
  thumbs: {command: ./thumbs, restart: on-failure, workers: 3}
  cache: {command: ./cache}
  api:
    command: ./api
    after: {migrate: completed, seed: completed, cache: started}
  web: {command: ./web, after: [api]}
`)
	if problems != nil {
		t.Fatal(problems)
	}
	api, seed := cfg.Service("api"), cfg.Service("seed")
	if strings.Join(api.After, ",") != "migrate,seed,cache" || api.AfterWhen["migrate"] != AfterCompleted || api.AfterWhen["cache"] != AfterStarted {
		t.Errorf("api's after: %v %v", api.After, api.AfterWhen)
	}
	if cfg.Service("web").AfterWhen["api"] != AfterReady {
		t.Errorf("the list form does not wait for ready: %v", cfg.Service("web").AfterWhen)
	}
	if cfg.Service("migrate").Restart != RestartNever || seed.Restart != RestartOnFailure || seed.StartLimit != 0 || seed.MinUptime != 0 {
		t.Errorf("migrate %+v seed %+v", cfg.Service("migrate"), seed)
	}
	// A task runs once, not once per CPU, unless the file says otherwise.
	if w := []int{cfg.Service("migrate").Workers, seed.Workers, cfg.Service("thumbs").Workers, api.Workers}; w[0] != 1 || w[1] != 1 || w[2] != 3 || w[3] != testOptions.NumCPU {
		t.Errorf("workers of migrate, seed, thumbs, api: %v; want 1 1 3 %d", w, testOptions.NumCPU)
	}
}

func TestTaskProblems(t *testing.T) {
	_, problems := loadString(t, `
services:
  db: {command: ./db}
  api:
    command: ./api
    after: {db: completed, cache: ready, x: soon}
    restart: sometimes
    startLimit: -1
  cache: {command: ./cache}
  w:
    command: ./w
    depends_on: [db]
    replicas: 2
    working_dir: /
    environment: {A: b}
    autorestart: true
`)
	want := []string{
		`6:13: services.api.after.db: waits for db to complete, but db has restart: always and never completes; give db restart: never (a task that runs once) or on-failure, or wait for it to be ready`,
		`6:45: services.api.after.x: unknown condition "soon"; allowed: ready (every worker ready), started (its workers started), completed (it ran and exited 0, for a task)`,
		`7:14: services.api.restart: unknown restart "sometimes"; allowed: always (whatever the exit), on-failure (after a non-zero exit or a signal), never (a task that runs once)`,
		`8:17: services.api.startLimit: must be a whole number of exits in a row, 0 (never give up) to 1000000, got -1`,
		`12:5: services.w: unknown key "depends_on" (recluster calls it "after")`,
		`13:5: services.w: unknown key "replicas" (recluster calls it "workers")`,
		`14:5: services.w: unknown key "working_dir" (recluster calls it "dir")`,
		`15:5: services.w: unknown key "environment" (recluster calls it "env")`,
		`16:5: services.w: unknown key "autorestart" (recluster calls it "restart")`,
	}
	got := map[string]bool{}
	for _, p := range problems {
		p, _, _ = strings.Cut(p, "; allowed: command,")
		got[p] = true
	}
	for _, w := range want {
		if !got[w] {
			t.Errorf("missing problem %s\ngot:\n%s", w, strings.Join(problems, "\n"))
		}
	}
	if len(problems) != len(want) {
		t.Errorf("%d problems, want %d:\n%s", len(problems), len(want), strings.Join(problems, "\n"))
	}
}

func TestProcfileReleaseRunsFirst(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "Procfile"), []byte("web: ./web\nrelease: ./migrate\nworker: ./worker\n"), 0o644)
	cfg, err := testOptions.Load(filepath.Join(dir, "Procfile"))
	if err != nil {
		t.Fatal(err)
	}
	if r := cfg.Service("release"); r.Restart != RestartNever || len(r.After) != 0 {
		t.Errorf("release: %+v", r)
	}
	for _, name := range []string{"web", "worker"} {
		if s := cfg.Service(name); s.AfterWhen["release"] != AfterCompleted || len(s.After) != 1 {
			t.Errorf("%s does not wait for release: %v %v", name, s.After, s.AfterWhen)
		}
	}
}
