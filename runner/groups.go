package runner

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// GroupLog records the process group of every live worker in a small file,
// so that the next `recluster up` for the same config can end the groups a
// crashed (SIGKILLed) recluster left: the parent-death signal reaches only
// each group's leader. The file is an append-only list of "+ PGID START"
// and "- PGID" lines, rewritten when it grows.
type GroupLog struct {
	mu    sync.Mutex
	path  string
	f     *os.File
	live  map[int]uint64
	lines int
}

// OpenGroupLog starts an empty log at path.
func OpenGroupLog(path string) (*GroupLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	return &GroupLog{path: path, f: f, live: map[int]uint64{}}, nil
}

// Add records a new group led by pgid.
func (g *GroupLog) Add(pgid int) {
	start, _ := processStart(pgid)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.live[pgid] = start
	g.write(fmt.Sprintf("+ %d %d\n", pgid, start))
}

// Remove records that the group is gone.
func (g *GroupLog) Remove(pgid int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.live, pgid)
	g.write(fmt.Sprintf("- %d\n", pgid))
	if g.lines > 1000 && g.lines > 4*len(g.live) {
		g.compact()
	}
}

func (g *GroupLog) write(line string) {
	if g.f != nil {
		g.f.WriteString(line)
		g.lines++
	}
}

// compact rewrites the file with only the live groups, through a rename so
// that a crash mid-way leaves one whole file or the other.
func (g *GroupLog) compact() {
	tmp := g.path + ".tmp"
	var b strings.Builder
	for pgid, start := range g.live {
		fmt.Fprintf(&b, "+ %d %d\n", pgid, start)
	}
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return
	}
	if err := os.Rename(tmp, g.path); err != nil {
		return
	}
	f, err := os.OpenFile(g.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	g.f.Close()
	g.f, g.lines = f, len(g.live)
}

// Close removes the log: a clean exit leaves nothing to end.
func (g *GroupLog) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.f == nil {
		return nil
	}
	g.f.Close()
	g.f = nil
	return os.Remove(g.path)
}

// EndLeftoverGroups kills the process groups a previous run recorded in the
// log at path and did not see end, and waits for them to go. A group is
// ended only while it is provably the one recorded: its leader still has
// the recorded start time, or its leader is gone but members remain (Linux
// does not reuse a pid while a group carries its number). It returns the
// groups it ended.
func EndLeftoverGroups(path string) ([]int, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	live := map[int]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		pgid, err := strconv.Atoi(fields[1])
		if err != nil || pgid <= 1 {
			continue
		}
		switch fields[0] {
		case "+":
			var start uint64
			if len(fields) > 2 {
				start, _ = strconv.ParseUint(fields[2], 10, 64)
			}
			live[pgid] = start
		case "-":
			delete(live, pgid)
		}
	}
	var ended []int
	for pgid, start := range live {
		if now, ok := processStart(pgid); ok && start != 0 && now != start {
			continue // the pid was reused; that group is not ours
		}
		if syscall.Kill(-pgid, syscall.SIGKILL) == nil {
			ended = append(ended, pgid)
		}
	}
	for _, pgid := range ended {
		waitGroupGone(pgid, 5*time.Second)
	}
	return ended, os.Remove(path)
}
