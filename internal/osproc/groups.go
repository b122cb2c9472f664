package osproc

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/recluster/recluster/internal/private"
	"github.com/recluster/recluster/internal/proc"
)

// GroupLog records the process group of every live worker in a small
// file, so that the next `recluster up` for the same config can end the
// groups a crashed (SIGKILLed) recluster left: the parent-death signal
// reaches only each group's leader, and not even that one once it has
// exec'd a setuid program. The file starts with the boot it belongs to,
// then holds "+ PGID START UID" and "- PGID" lines, and is rewritten when
// it grows.
type GroupLog struct {
	mu    sync.Mutex
	path  string
	f     *os.File
	live  map[int]groupEntry
	lines int
}

type groupEntry struct {
	start uint64 // the leader's start time, in clock ticks after boot
	uid   int    // the leader's real uid
}

// OpenGroupLog starts an empty log at path, a file private to the user.
func OpenGroupLog(path string) (*GroupLog, error) {
	f, err := private.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_APPEND)
	if err != nil {
		return nil, err
	}
	g := &GroupLog{path: path, f: f, live: map[int]groupEntry{}}
	g.write(groupHeader())
	return g, nil
}

func groupHeader() string { return "# recluster groups boot=" + bootID() + "\n" }

// add records a new group led by pgid.
func (g *GroupLog) add(pgid int) {
	e := groupEntry{uid: os.Getuid()}
	e.start, _ = processStart(pgid)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.live[pgid] = e
	g.write(fmt.Sprintf("+ %d %d %d\n", pgid, e.start, e.uid))
}

// remove records that the group is gone.
func (g *GroupLog) remove(pgid int) {
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
	os.Remove(tmp) // whatever it is, even a planted link: we make our own
	f, err := private.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY)
	if err != nil {
		return
	}
	var b strings.Builder
	b.WriteString(groupHeader())
	for pgid, e := range g.live {
		fmt.Fprintf(&b, "+ %d %d %d\n", pgid, e.start, e.uid)
	}
	_, err = f.WriteString(b.String())
	f.Close()
	if err != nil || os.Rename(tmp, g.path) != nil {
		os.Remove(tmp)
		return
	}
	f, err = private.OpenFile(g.path, os.O_WRONLY|os.O_APPEND)
	if err != nil {
		return
	}
	g.f.Close()
	g.f, g.lines = f, len(g.live)+1
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

// EndLeftoverGroups kills what remains of the process groups that a
// previous run recorded in the log at path and did not see end, and waits
// for it to go. Nothing there is trusted: the file must be the user's own
// and private, belong to this boot, and each process is killed only when
// it is provably one the run started: a live leader with the recorded
// start time and real uid (then its whole group), or, once the leader is
// gone, each member of the group that runs as the recorded uid and started
// no earlier than its leader did. It returns the groups it acted on.
func EndLeftoverGroups(path string) ([]int, error) {
	f, err := private.OpenFile(path, os.O_RDONLY)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	live := map[int]groupEntry{}
	sc := bufio.NewScanner(f)
	if !sc.Scan() || strings.TrimSpace(sc.Text()) != strings.TrimSpace(groupHeader()) {
		// Another boot's (pids mean nothing now), or not ours at all.
		return nil, os.Remove(path)
	}
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		pgid, err := strconv.Atoi(fields[1])
		if err != nil || pgid <= 1 {
			continue
		}
		switch {
		case fields[0] == "+" && len(fields) == 4:
			start, err1 := strconv.ParseUint(fields[2], 10, 64)
			uid, err2 := strconv.Atoi(fields[3])
			if err1 == nil && err2 == nil && start > 0 {
				live[pgid] = groupEntry{start, uid}
			}
		case fields[0] == "-":
			delete(live, pgid)
		}
	}
	var ended []int
	for pgid, e := range live {
		if endGroupIfOurs(pgid, e) {
			ended = append(ended, pgid)
		}
	}
	for _, pgid := range ended {
		waitGroupGone(pgid, 5*time.Second)
	}
	return ended, os.Remove(path)
}

// endGroupIfOurs kills what of group pgid is provably the recorded one.
func endGroupIfOurs(pgid int, e groupEntry) bool {
	if start, ok := processStart(pgid); ok {
		uid, _ := realUID(pgid)
		if start != e.start || uid != e.uid {
			return false // the pid was reused: that group is not ours
		}
		return syscall.Kill(-pgid, syscall.SIGKILL) == nil
	}
	killed := false
	for _, pr := range proc.All() {
		if pr.Pgid != pgid || pr.Start < e.start {
			continue
		}
		if uid, ok := realUID(pr.Pid); ok && uid == e.uid && syscall.Kill(pr.Pid, syscall.SIGKILL) == nil {
			killed = true
		}
	}
	return killed
}

// InstanceEnv names the variable that marks every worker of one config's
// `up` (Options.Instance): a process that left its group (setsid, a
// daemon) or was forked before its group was logged still carries it.
const InstanceEnv = "RECLUSTER_INSTANCE"

// EndMarkedLeftovers kills the processes of this user that carry
// instance's mark: what a crashed `up` for the same config left behind
// that the group log does not name. The caller holds the instance lock,
// so no live `up` has such workers. It returns the pids it ended.
func EndMarkedLeftovers(instance string) []int {
	if instance == "" {
		return nil
	}
	var ended []int
	for _, pid := range markedProcesses(InstanceEnv + "=" + instance) {
		if syscall.Kill(pid, syscall.SIGKILL) == nil {
			ended = append(ended, pid)
		}
	}
	return ended
}
