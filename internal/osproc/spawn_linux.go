package osproc

import (
	"os"
	"runtime"
	"sync"
	"syscall"
)

// Workers get SIGKILL when recluster dies, even by SIGKILL, through the
// parent-death signal. Linux delivers it when the *thread* that forked the
// worker exits, not the process (golang/go#27505), and the Go runtime ends a
// thread whenever a goroutine locked to it returns. So every fork happens on
// one goroutine locked to its thread that never returns: that thread lives
// exactly as long as recluster.
var spawner struct {
	once sync.Once
	reqs chan spawnReq
}

type spawnReq struct {
	path  string
	argv  []string
	attr  *os.ProcAttr
	reply chan spawnResult
}

type spawnResult struct {
	proc *os.Process
	err  error
}

func spawnThread() {
	runtime.LockOSThread()
	// Never unlocked and never returns: see above.
	for req := range spawner.reqs {
		p, err := os.StartProcess(req.path, req.argv, req.attr)
		req.reply <- spawnResult{p, err}
	}
}

// startProcess starts a process in its own process group with the
// parent-death signal set.
func startProcess(path string, argv []string, attr *os.ProcAttr) (*os.Process, error) {
	spawner.once.Do(func() {
		spawner.reqs = make(chan spawnReq)
		go spawnThread()
	})
	attr.Sys = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	reply := make(chan spawnResult, 1)
	spawner.reqs <- spawnReq{path, argv, attr, reply}
	r := <-reply
	return r.proc, r.err
}
