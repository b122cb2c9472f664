package cli

import (
	"fmt"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/recluster/recluster/config"
)

func init() {
	register(&verb{
		name:    "check",
		summary: "Validate the config file: every error, each as FILE:LINE:COL.\nWith --print, show the config with every default filled in.",
		run:     runCheck,
	})
}

func runCheck(io IO, c *common, args []string) error {
	printIt := c.fs.Bool("print", false, "print the normalised config, defaults filled in")
	port := c.fs.Int("port", config.DefaultProcfilePortBase, "the first PORT in Procfile mode")
	if err := c.noArgs(args, ""); err != nil {
		return err
	}
	cfg, err := loadConfig(io, c, *port)
	if err != nil {
		return err
	}
	if *printIt {
		return config.Print(io.Out, cfg)
	}
	workers := 0
	parts := make([]string, len(cfg.Services))
	for i, s := range cfg.Services {
		workers += s.Workers
		parts[i] = fmt.Sprintf("%s×%d", s.Name, s.Workers)
	}
	fmt.Fprintf(io.Out, "%s: ok, %s, %s (%s)\n", displayPath(io, cfg.Path),
		plural(len(cfg.Services), "service"), plural(workers, "worker"), strings.Join(parts, ", "))
	return nil
}

// loadConfig finds and loads the file, printing every problem on its own
// line. Beyond what config checks, it refuses what this platform cannot do.
func loadConfig(io IO, c *common, portBase int) (*config.Config, error) {
	return readConfig(io, c, portBase, checkPlatform)
}

// readConfig loads the config and runs check on it, printing every
// problem of an invalid file; run and export, which start no worker here,
// check nothing more.
func readConfig(io IO, c *common, portBase int, check func(*config.Config) error) (*config.Config, error) {
	path, err := c.configPath(io)
	if err != nil {
		return nil, err
	}
	cfg, err := config.Options{Getenv: io.Getenv, PortBase: portBase}.Load(path)
	if err == nil && check != nil {
		err = check(cfg)
	}
	if err != nil {
		if problems := config.Problems(err); problems != nil {
			for _, p := range problems {
				fmt.Fprintln(io.Err, p)
			}
			fmt.Fprintf(io.Err, "%s: %s; nothing was started\n", path, plural(len(problems), "error"))
			return nil, errReported
		}
		return nil, err
	}
	return cfg, nil
}

// checkPlatform refuses readyWhen: listening where the kernel cannot show
// recluster which sockets a worker listens on.
func checkPlatform(cfg *config.Config) error {
	if runtime.GOOS == "linux" {
		return nil
	}
	for _, s := range cfg.Services {
		if s.ReadyWhen == config.ReadyListening {
			return fmt.Errorf("services.%s.readyWhen: listening needs Linux, which shows the sockets a worker listens on; on %s use readyWhen: ready or started", s.Name, runtime.GOOS)
		}
	}
	return nil
}

func displayPath(io IO, path string) string {
	if wd, err := io.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, path); err == nil && !strings.HasPrefix(rel, "..") {
			return rel
		}
	}
	return path
}

func plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}
