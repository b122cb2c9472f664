package cli

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/recluster/recluster/config"
	"github.com/recluster/recluster/internal/export"
)

func init() {
	register(&verb{
		name: "export",
		args: "systemd [-o DIR] [--name NAME]",
		summary: "Write the systemd units that run this stack: NAME.service for recluster itself (Type=notify; systemctl reload\n" +
			"reloads with zero downtime) and one NAME-SOCKET.socket per listen and proxy address, which systemd holds so that\n" +
			"a restart of recluster refuses no connection. Without -o, print them.",
		run: runExport,
	})
}

func runExport(io IO, c *common, args []string) error {
	out := c.fs.String("o", "", "write the units into `DIR` (such as /etc/systemd/system) instead of printing them")
	name := c.fs.String("name", "", "the stack's unit `NAME` (default: the config file's folder)")
	bin := c.fs.String("bin", "", "the recluster binary the units run (default: this one)")
	rest, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(rest) != 1 || rest[0] != "systemd" {
		return usagef("export writes units for systemd: recluster export systemd [-o DIR]")
	}
	cfg, err := readConfig(io, c, config.DefaultProcfilePortBase, nil)
	if err != nil {
		return err
	}
	if *bin == "" {
		if *bin, err = os.Executable(); err != nil {
			return err
		}
	}
	units, err := export.Systemd(cfg, export.SystemdOptions{Name: *name, Bin: *bin})
	if err != nil {
		return err
	}
	if *out == "" {
		for i, u := range units {
			if i > 0 {
				fmt.Fprintln(io.Out)
			}
			fmt.Fprintf(io.Out, "### %s\n%s", u.Name, u.Text)
		}
		return nil
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	for _, u := range units {
		if err := os.WriteFile(filepath.Join(*out, u.Name), []byte(u.Text), 0o644); err != nil {
			return err
		}
		fmt.Fprintln(io.Out, filepath.Join(*out, u.Name))
	}
	fmt.Fprintf(io.Out, "then: systemctl daemon-reload && systemctl enable --now %s\n", units[0].Name)
	return nil
}
