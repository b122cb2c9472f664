package config

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestREADMEConfigsLoad: every config README.md shows loads, but for the
// files and folders it names, which a reader's project has.
func TestREADMEConfigsLoad(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(readme, -1)
	if len(blocks) == 0 {
		t.Fatal("README.md shows no config")
	}
	for i, b := range blocks {
		if !strings.Contains(string(b[1]), "services:") {
			continue
		}
		path := filepath.Join(t.TempDir(), "recluster.yml")
		os.WriteFile(path, b[1], 0o644)
		_, err := Load(path)
		for _, p := range Problems(err) {
			if !strings.Contains(p.Error(), "no such file") && !strings.Contains(p.Error(), "does not exist") {
				t.Errorf("README's config %d: %v\n%s", i+1, p, b[1])
			}
		}
		if err != nil && Problems(err) == nil {
			t.Errorf("README's config %d: %v", i+1, err)
		}
	}
}
