package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/recluster/recluster/bench/internal/peers"
)

// peerFootprint runs S `sleep` services under a peer and measures the
// peer's own process (PM2: its daemon) over the idle window.
func peerFootprint(dir, peer string, services int, window time.Duration) error {
	var b strings.Builder
	var cmd *exec.Cmd
	env := append(os.Environ(), "PM2_HOME="+filepath.Join(dir, "pm2"))
	switch peer {
	case "goreman":
		for i := 0; i < services; i++ {
			fmt.Fprintf(&b, "s%d: sleep 100000\n", i)
		}
		os.WriteFile(filepath.Join(dir, "Procfile"), []byte(b.String()), 0o644)
		bin, err := peers.Go("goreman")
		if err != nil {
			return err
		}
		cmd = exec.Command(bin, "start")
	case "process-compose":
		b.WriteString("version: \"0.5\"\nprocesses:\n")
		for i := 0; i < services; i++ {
			fmt.Fprintf(&b, "  s%d:\n    command: sleep 100000\n", i)
		}
		os.WriteFile(filepath.Join(dir, "pc.yaml"), []byte(b.String()), 0o644)
		bin, err := peers.Go("process-compose")
		if err != nil {
			return err
		}
		cmd = exec.Command(bin, "up", "--tui=false", "--port", "0", "-f", "pc.yaml")
	case "pm2":
		b.WriteString("module.exports = {apps: [\n")
		for i := 0; i < services; i++ {
			fmt.Fprintf(&b, "  {name: 's%d', script: 'sleep', args: '100000', interpreter: 'none', autorestart: true},\n", i)
		}
		b.WriteString("]};\n")
		os.WriteFile(filepath.Join(dir, "ecosystem.config.js"), []byte(b.String()), 0o644)
		mods, err := peers.NPM()
		if err != nil {
			return err
		}
		pm2 := filepath.Join(mods, ".bin", "pm2")
		start := exec.Command(pm2, "start", "ecosystem.config.js")
		start.Dir, start.Env = dir, env
		if out, err := start.CombinedOutput(); err != nil {
			return fmt.Errorf("pm2 start: %v: %s", err, out)
		}
		defer func() {
			kill := exec.Command(pm2, "kill")
			kill.Env = env
			kill.Run()
		}()
		data, err := os.ReadFile(filepath.Join(dir, "pm2", "pm2.pid"))
		if err != nil {
			return err
		}
		pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
		report("pm2 (daemon)", services, pid, window)
		return nil
	default:
		return fmt.Errorf("unknown -peer %q", peer)
	}
	cmd.Dir, cmd.Env = dir, env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
	}()
	// Let it start its processes before the window opens.
	time.Sleep(3 * time.Second)
	report(peer, services, cmd.Process.Pid, window)
	return nil
}
