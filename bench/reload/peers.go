package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/recluster/recluster/bench/internal/peers"
)

// peerCache is where bench/internal/peers puts the npm peers.
func peerCache() string { return filepath.Join(peers.Cache(), "npm") }

type peer struct {
	kind, dir, addr string
	env             []string
	cmd             *exec.Cmd // node-recluster's master
}

func startPeer(kind string, workers int) (*peer, error) {
	if _, err := peers.NPM(); err != nil {
		return nil, fmt.Errorf("installing peers: %w", err)
	}
	dir, err := os.MkdirTemp("", "recluster-bench-peer-")
	if err != nil {
		return nil, err
	}
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	_, port, _ := net.SplitHostPort(addr)
	server, _ := filepath.Abs("bench/peers")
	p := &peer{kind: kind, dir: dir, addr: addr, env: append(os.Environ(),
		"PORT="+port, "PM2_HOME="+filepath.Join(dir, "pm2"), "NODE_PATH="+filepath.Join(peerCache(), "node_modules"))}
	switch kind {
	case "pm2":
		err = p.pm2("start", filepath.Join(server, "server.js"), "-i", strconv.Itoa(workers), "--name", "web", "--wait-ready", "--kill-timeout", "30000")
	case "node-recluster":
		if workers != 4 {
			return nil, errors.New("node-recluster runs 4 workers")
		}
		p.cmd = exec.Command("node", filepath.Join(server, "recluster-node.js"))
		p.cmd.Env = p.env
		err = p.cmd.Start()
	}
	if err != nil {
		p.stop()
		return nil, err
	}
	end := time.Now().Add(time.Minute)
	for get(addr) != nil {
		if time.Now().After(end) {
			p.stop()
			return nil, fmt.Errorf("%s does not serve on %s", kind, addr)
		}
		time.Sleep(50 * time.Millisecond) // a benchmark waiting for a peer to come up
	}
	return p, nil
}

func (p *peer) pm2(args ...string) error {
	cmd := exec.Command(filepath.Join(peerCache(), "node_modules", ".bin", "pm2"), args...)
	cmd.Env = p.env
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("pm2 %v: %v: %s", args, err, out)
	}
	return nil
}

func (p *peer) address() string { return p.addr }

// managerPid is PM2's daemon, or the Node recluster's master.
func (p *peer) managerPid() int {
	if p.cmd != nil {
		return p.cmd.Process.Pid
	}
	data, _ := os.ReadFile(filepath.Join(p.dir, "pm2", "pm2.pid"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}

func (p *peer) change(mode string) error {
	switch {
	case p.kind == "pm2":
		return p.pm2(mode, "web")
	case mode == "reload":
		return p.cmd.Process.Signal(syscall.SIGUSR2)
	}
	return fmt.Errorf("%s has no %s", p.kind, mode)
}

func (p *peer) stop() {
	if p.kind == "pm2" {
		p.pm2("kill")
	}
	if p.cmd != nil {
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.cmd.Wait()
	}
	os.RemoveAll(p.dir)
}

func get(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	c.Close()
	return nil
}
