package watch

import (
	"os"
	"path"
	"path/filepath"
	"strings"

	gitignore "github.com/sabhiram/go-gitignore"
)

// defaultIgnores are never a reason to reload: version control, installed
// dependencies, caches, editors' swap and backup files, and what servers
// commonly write beside their code (logs, pid files, sockets, databases).
var defaultIgnores = []string{
	".git/", ".hg/", ".svn/", "node_modules/", "__pycache__/", ".idea/", ".vscode/", ".cache/",
	"*.pyc", "*.swp", "*.swo", "*.swx", "*~", ".#*", "#*#", "4913", ".DS_Store", "*.tmp",
	"*.log", "*.pid", "*.sock", "*.sqlite", "*.sqlite3", "*.db", "*.db-journal", "*-journal", "*-wal", "*-shm",
}

// matchGlob reports whether the slash-separated relative path matches the
// pattern, in which "**" stands for any number of folders and a pattern
// without wildcards names a file or everything below a folder.
func matchGlob(pattern, rel string) bool {
	if pattern == "." || pattern == "" {
		return true
	}
	if !strings.ContainsAny(pattern, "*?[") {
		return rel == pattern || strings.HasPrefix(rel, pattern+"/")
	}
	return matchParts(strings.Split(pattern, "/"), strings.Split(rel, "/"))
}

func matchParts(pat, parts []string) bool {
	for len(pat) > 0 {
		if pat[0] == "**" {
			for i := 0; i <= len(parts); i++ {
				if matchParts(pat[1:], parts[i:]) {
					return true
				}
			}
			return false
		}
		if len(parts) == 0 {
			return false
		}
		if ok, _ := path.Match(pat[0], parts[0]); !ok {
			return false
		}
		pat, parts = pat[1:], parts[1:]
	}
	return len(parts) == 0
}

// root returns the folder below which a pattern can match: its part
// before the first wildcard.
func root(pattern string) string {
	var fixed []string
	for _, p := range strings.Split(pattern, "/") {
		if strings.ContainsAny(p, "*?[") {
			break
		}
		fixed = append(fixed, p)
	}
	if len(fixed) == 0 {
		return "."
	}
	return strings.Join(fixed, "/")
}

// ignoreRules say which files of a service do not count: the defaults,
// the service's watch.ignore, and the .gitignore files from each file's
// folder up to the repository's root.
type ignoreRules struct {
	dir       string // the service's folder
	defaults  *gitignore.GitIgnore
	own       []string
	gitignore map[string]*gitignore.GitIgnore // folder → its .gitignore, nil when it has none
	repoRoot  string                          // the folder holding .git, or "/"
}

func newIgnoreRules(dir string, own []string) *ignoreRules {
	r := &ignoreRules{dir: dir, defaults: gitignore.CompileIgnoreLines(defaultIgnores...), own: own,
		gitignore: map[string]*gitignore.GitIgnore{}, repoRoot: "/"}
	for d := dir; ; d = filepath.Dir(d) {
		if st, err := os.Stat(filepath.Join(d, ".git")); err == nil && st != nil {
			r.repoRoot = d
			break
		}
		if filepath.Dir(d) == d {
			break
		}
	}
	return r
}

// load reads (again) the .gitignore of folder d.
func (r *ignoreRules) load(d string) {
	gi, err := gitignore.CompileIgnoreFile(filepath.Join(d, ".gitignore"))
	if err != nil {
		gi = nil
	}
	r.gitignore[d] = gi
}

func (r *ignoreRules) gitignoreOf(d string) *gitignore.GitIgnore {
	gi, ok := r.gitignore[d]
	if !ok {
		r.load(d)
		gi = r.gitignore[d]
	}
	return gi
}

// ignored reports whether the file (or folder) at abs does not count.
func (r *ignoreRules) ignored(abs string, isDir bool) bool {
	rel, err := filepath.Rel(r.dir, abs)
	if err != nil || strings.HasPrefix(rel, "..") {
		return true
	}
	rel = filepath.ToSlash(rel)
	probe := rel
	if isDir {
		probe += "/"
	}
	if r.defaults.MatchesPath(probe) {
		return true
	}
	for _, g := range r.own {
		if matchGlob(g, rel) {
			return true
		}
	}
	// The nearest .gitignore files: from the file's folder up to the
	// repository's root, each matching paths relative to itself.
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		if gi := r.gitignoreOf(d); gi != nil {
			sub, _ := filepath.Rel(d, abs)
			sub = filepath.ToSlash(sub)
			if isDir {
				sub += "/"
			}
			if gi.MatchesPath(sub) {
				return true
			}
		}
		if d == r.repoRoot || filepath.Dir(d) == d || (r.repoRoot == "/" && d == r.dir) {
			return false
		}
	}
}
