package config

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestLogFileAndSize(t *testing.T) {
	cfg, problems := loadString(t, `
logFile: logs/up.log
logSize: 512KiB
services:
  a: {command: ./a}
`)
	if problems != nil {
		t.Fatal(problems)
	}
	if cfg.LogFile != filepath.Join(cfg.Dir, "logs", "up.log") || cfg.LogSize != 512<<10 {
		t.Errorf("logFile %q logSize %d", cfg.LogFile, cfg.LogSize)
	}
	cfg, _ = loadString(t, "services:\n  a: {command: ./a}\n")
	if cfg.LogFile != "" || cfg.LogSize != DefaultLogSize {
		t.Errorf("defaults: %q %d", cfg.LogFile, cfg.LogSize)
	}
	for size, want := range map[string]int64{"10MB": 10e6, "1G": 1 << 30, "8192": 8192, "4KiB": 4096} {
		cfg, problems := loadString(t, "logSize: "+size+"\nservices:\n  a: {command: ./a}\n")
		if problems != nil || cfg.LogSize != want {
			t.Errorf("logSize %s: %d %v, want %d", size, cfg.LogSize, problems, want)
		}
	}
	_, problems = loadString(t, `
logFile: logs/
logSize: 1KiB
services:
  a: {command: ./a}
`)
	want := []string{
		`2:10: logFile: must be the path of a file, such as logs/recluster.log, got "logs/"`,
		`3:10: logSize: must be a size from 4KiB to 1TiB, such as 10MiB, 500KB or 1G (a bare number is bytes), got "1KiB"`,
	}
	if strings.Join(problems, "\n") != strings.Join(want, "\n") {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(problems, "\n"), strings.Join(want, "\n"))
	}
}

func TestMaxSurge(t *testing.T) {
	cfg, problems := loadString(t, `
services:
  a: {command: ./a, workers: 4, maxSurge: 1}
  b: {command: ./b, maxSurge: all}
  c: {command: ./c}
`)
	if problems != nil {
		t.Fatal(problems)
	}
	if s := []int{cfg.Service("a").MaxSurge, cfg.Service("b").MaxSurge, cfg.Service("c").MaxSurge}; s[0] != 1 || s[1] != 0 || s[2] != 0 {
		t.Errorf("maxSurge of a, b, c: %v; want 1, 0 (all), 0 (all)", s)
	}
	_, problems = loadString(t, "services:\n  a: {command: ./a, maxSurge: 0}\n")
	if len(problems) != 1 || !strings.Contains(problems[0], `maxSurge: must be how many new workers a reload may run beyond workers at once, 1 to 100000, or "all"`) {
		t.Errorf("maxSurge 0: %v", problems)
	}
}
