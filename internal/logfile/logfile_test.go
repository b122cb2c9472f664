package logfile

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRotatesAtItsSizeAndKeepsTheNewestLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "up.log")
	f, err := Open(path, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if _, err := fmt.Fprintf(f, "line %03d %s\n", i, strings.Repeat("x", 40)); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	cur, _ := os.ReadFile(path)
	old, _ := os.ReadFile(path + ".1")
	if len(cur) > 1000 || len(old) > 1000 || len(old) < 1000-50 {
		t.Errorf("sizes %d and %d, want each at most 1000 and the old one full", len(cur), len(old))
	}
	if !strings.HasSuffix(string(cur), "line 099 "+strings.Repeat("x", 40)+"\n") {
		t.Errorf("the newest line is not last in %s:\n%s", path, cur)
	}
	// Whole lines, in order, across the two files.
	lines := strings.Split(strings.TrimSuffix(string(old)+string(cur), "\n"), "\n")
	first := 100 - len(lines)
	for i, l := range lines {
		if !strings.HasPrefix(l, fmt.Sprintf("line %03d ", first+i)) || len(l) != 49 {
			t.Fatalf("line %d is %q", i, l)
		}
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}

	// A batch of many lines at once rotates between its lines.
	f, _ = Open(path, 1000)
	var batch strings.Builder
	for i := 100; i < 150; i++ {
		fmt.Fprintf(&batch, "line %03d %s\n", i, strings.Repeat("x", 40))
	}
	f.Write([]byte(batch.String()))
	f.Close()
	cur, _ = os.ReadFile(path)
	old, _ = os.ReadFile(path + ".1")
	if len(cur) > 1000 || len(old) > 1000 || !strings.HasSuffix(string(cur), "line 149 "+strings.Repeat("x", 40)+"\n") ||
		!strings.HasPrefix(string(cur), "line ") || !strings.HasPrefix(string(old), "line ") {
		t.Errorf("after a batch of 2450 bytes: %d and %d bytes:\n%s", len(cur), len(old), cur)
	}

	// Reopened, it appends and counts what is there.
	f, _ = Open(path, 1000)
	f.Write([]byte(strings.Repeat("y", 900) + "\n"))
	f.Close()
	if cur, _ := os.ReadFile(path); !strings.HasPrefix(string(cur), strings.Repeat("y", 900)) {
		t.Errorf("after reopening, the file did not rotate at its size: %d bytes", len(cur))
	}
}

func TestRefusesASymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "elsewhere")
	os.WriteFile(target, []byte("keep me"), 0o600)
	link := filepath.Join(dir, "up.log")
	os.Symlink(target, link)
	if _, err := Open(link, 1000); err == nil {
		t.Fatal("opened a symlink")
	}
	if data, _ := os.ReadFile(target); string(data) != "keep me" {
		t.Errorf("the symlink's target changed: %q", data)
	}
}

// TestAWriteErrorIsSurvived: a write that fails for a full disk (here
// /dev/full, which answers ENOSPC) drops its lines and says so once; the
// next write reopens the file, notes how many were lost and why, and
// the stream hears that it works again.
func TestAWriteErrorIsSurvived(t *testing.T) {
	path := filepath.Join(t.TempDir(), "up.log")
	l, err := Open(path, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var said []string
	l.OnTrouble(func(s string) { said = append(said, s) })
	l.Write([]byte("one\n"))
	full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skip("no /dev/full:", err)
	}
	l.mu.Lock()
	l.f = full // the disk fills up
	l.mu.Unlock()
	if n, err := l.Write([]byte("two\nthree\n")); n != 10 || err != nil {
		t.Fatalf("a failed write must not end the stream: %d %v", n, err)
	}
	if len(said) != 1 || !strings.Contains(said[0], "no space left on device; its lines are dropped") {
		t.Fatalf("said %q", said)
	}
	// The disk has room again: the next write reopens the file.
	l.Write([]byte("four\n"))
	if len(said) != 2 || !strings.Contains(said[1], "works again; 2 line(s) were dropped") {
		t.Errorf("said %q", said)
	}
	data, _ := os.ReadFile(path)
	if want := "one\nrecluster | the log file dropped 2 line(s): write /dev/full: no space left on device\nfour\n"; string(data) != want {
		t.Errorf("the file holds %q, want %q", data, want)
	}
}

// TestAFailedRotationStartsTheFileOver: when NAME.1 cannot be replaced
// (here a folder holds its name), the file starts over within its size
// and says why, instead of ending.
func TestAFailedRotationStartsTheFileOver(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "up.log")
	os.MkdirAll(filepath.Join(path+".1", "taken"), 0o700)
	l, err := Open(path, 64)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := 0; i < 10; i++ {
		l.Write([]byte(fmt.Sprintf("line %d of the log\n", i)))
	}
	data, _ := os.ReadFile(path)
	if !strings.Contains(string(data), "could not be rotated") || !strings.HasSuffix(string(data), "line 9 of the log\n") {
		t.Errorf("the file holds %q", data)
	}
}
