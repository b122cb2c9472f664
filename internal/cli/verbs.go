package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/recluster/recluster/internal/control"
	"github.com/recluster/recluster/logmux"
)

// defaultWait bounds how long a verb waits for its change; a reload waits
// for readiness (readyTimeout) and then for the old workers' drain.
const defaultWait = 15 * time.Minute

func init() {
	change := func(name, args, summary, done string, op func(*control.Client, context.Context, []string) (control.Outcome, error), needNames bool) {
		register(&verb{name: name, args: args, summary: summary, services: true, run: func(io IO, c *common, argv []string) error {
			wait := c.fs.Duration("wait", defaultWait, "give up waiting for the change after this long")
			names, err := c.parse(argv)
			if err != nil {
				return err
			}
			if needNames && len(names) == 0 {
				return usagef("name at least one service")
			}
			client, err := clientFor(io, c)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), *wait)
			defer cancel()
			start := time.Now()
			outcome, err := op(client, ctx, names)
			if err != nil {
				if ctx.Err() != nil {
					return stillWaiting(client, name, *wait)
				}
				return err
			}
			what := "every service"
			if len(names) > 0 {
				what = strings.Join(names, ", ")
			}
			fmt.Fprintf(io.Out, "%s %s (%.1fs)\n", done, what, time.Since(start).Seconds())
			for _, n := range outcome.Notes {
				fmt.Fprintf(io.Out, "  note: %s\n", printable(n))
			}
			if outcome.Cut > 0 || len(outcome.Notes) > 0 {
				return &exitError{code: ExitCut, msg: fmt.Sprintf("%s, but the old workers' stop cut %d request(s) or connection(s); see the notes above", done, outcome.Cut)}
			}
			return nil
		}})
	}
	noNotes := func(op func(*control.Client, context.Context, []string) error) func(*control.Client, context.Context, []string) (control.Outcome, error) {
		return func(c *control.Client, ctx context.Context, names []string) (control.Outcome, error) {
			return control.Outcome{}, op(c, ctx, names)
		}
	}
	change("reload", "[SERVICE…]",
		"Replace the services' workers (all when none named) with a new generation, with zero downtime.\nThe config file is read again; an invalid one changes nothing. Returns when the old workers are gone.",
		"reloaded", (*control.Client).Reload, false)
	change("restart", "[SERVICE…]", "Stop, then start the services (all when none named): not zero-downtime.",
		"restarted", noNotes((*control.Client).Restart), false)
	change("stop", "SERVICE…", "Stop the named services' workers; the services stay known and can be started again.",
		"stopped", noNotes((*control.Client).Stop), true)
	change("start", "SERVICE…", "Start stopped services; returns once every worker is ready.",
		"started", noNotes((*control.Client).Start), true)

	register(&verb{name: "scale", args: "SERVICE=N…", services: true, summary: "Change worker counts live: new ids start, the highest ids stop gracefully.", run: runScale})
	register(&verb{name: "status", aliases: []string{"ps"}, summary: "Show every service's workers: pid, state, generation, uptime, restarts.", run: runStatus})
	register(&verb{name: "logs", args: "[SERVICE…]", followFlag: true, services: true, run: runLogs,
		summary: "Print the services' recent lines (all when none named); -f follows new ones.\nHere -f means follow: name the config with --file FILE (or -f FILE when FILE exists)."})
	register(&verb{name: "down", summary: "Stop every service gracefully and end `recluster up`.", run: runDown})
}

// clientFor finds the running instance for the config file, from any
// folder below it.
func clientFor(io IO, c *common) (*control.Client, error) {
	path, err := c.configPath(io)
	if err != nil {
		return nil, err
	}
	return control.ClientFor(path, io.Getenv)
}

// configFor is the absolute path of the file the verb is about, which
// names its running `up`.
func configFor(io IO, c *common) (string, error) {
	path, err := c.configPath(io)
	if err != nil {
		return "", err
	}
	return control.ConfigFile(path)
}

func runScale(io IO, c *common, args []string) error {
	wait := c.fs.Duration("wait", defaultWait, "give up waiting for the change after this long")
	rest, err := c.parse(args)
	if err != nil {
		return err
	}
	if len(rest) == 0 {
		return usagef("name at least one SERVICE=N")
	}
	counts := map[string]int{}
	for _, a := range rest {
		name, num, ok := strings.Cut(a, "=")
		n, err := strconv.Atoi(num)
		if !ok || name == "" || err != nil || n < 1 || n > control.MaxScale {
			return usagef("%q: want SERVICE=N with N a whole number from 1 to %d", a, control.MaxScale)
		}
		if _, dup := counts[name]; dup {
			return usagef("%s is named twice", name)
		}
		counts[name] = n
	}
	client, err := clientFor(io, c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *wait)
	defer cancel()
	if err := client.Scale(ctx, counts); err != nil {
		return err
	}
	fmt.Fprintf(io.Out, "scaled %s\n", strings.Join(rest, " "))
	return nil
}

func runStatus(io IO, c *common, args []string) error {
	asJSON := c.fs.Bool("json", false, "print JSON: {services: [{name, generation, listen, proxy, cut, lastReload: {started, seconds, trigger, outcome, generation, reason, lines}, workers: [{id, pid, state, generation, restarts, port, inFlight, rss, health: {probe, ready, at, ok, detail, failures}, replaced: {at, reason}}]}]}")
	if err := c.noArgs(args, ""); err != nil {
		return err
	}
	client, err := clientFor(io, c)
	if err != nil {
		return err
	}
	st, err := client.Status(context.Background())
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(io.Out)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"services": st})
	}
	if err := printStatusTable(io.Out, st); err != nil {
		return err
	}
	for _, s := range st {
		for _, w := range s.Workers {
			if h := w.Health; h != nil && !h.OK {
				fmt.Fprintf(io.Out, "%s.%d: %s probe failed %s: %s\n", printable(s.Name), w.ID, probeWord(h), h.At.Local().Format("15:04:05"), printable(h.Detail))
			}
			if r := w.Replaced; r != nil {
				fmt.Fprintf(io.Out, "%s.%d: replaced %s: its predecessor %s\n", printable(s.Name), w.ID, r.At.Local().Format("15:04:05"), printable(r.Reason))
			}
		}
		if r := s.LastReload; r != nil {
			what := r.Outcome
			if r.Outcome != "running" {
				what += fmt.Sprintf(" in %.1fs", r.Seconds)
			}
			if r.Generation > 0 {
				what += fmt.Sprintf(", generation %d", r.Generation)
			}
			trigger := ""
			if r.Trigger != "" {
				trigger = " (" + r.Trigger + ")"
			}
			fmt.Fprintf(io.Out, "%s: last reload %s%s: %s\n", printable(s.Name), r.Started.Local().Format("15:04:05"), printable(trigger), what)
			if r.Outcome == "failed" {
				fmt.Fprintf(io.Out, "  %s\n", printable(r.Reason))
				for _, l := range r.Lines {
					fmt.Fprintf(io.Out, "    %s\n", printable(l))
				}
			}
		}
		if s.Cut > 0 {
			fmt.Fprintf(io.Out, "%s: %d request(s) or connection(s) cut when workers ended, since it began (see its log)\n", printable(s.Name), s.Cut)
		}
	}
	return nil
}

// printable escapes what a terminal would act on rather than show:
// control characters (escape sequences, bells, carriage returns, tabs that
// would break the table) and invalid UTF-8. Workers choose their STATUS=
// text, and nothing they say may rewrite the user's screen.
func printable(s string) string {
	clean := true
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == utf8.RuneError {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	q := strconv.QuoteToGraphic(s)
	return q[1 : len(q)-1]
}

func runLogs(io IO, c *common, args []string) error {
	n := c.fs.Int("n", 100, "how many recent lines of each service")
	var follow bool
	c.fs.BoolVar(&follow, "f", false, "follow: print new lines as they come")
	c.fs.BoolVar(&follow, "follow", false, "follow: print new lines as they come")
	// `-f FILE` still names the config when FILE is a file: service names
	// never contain '.' or '/', config files nearly always do.
	for i := 0; i+1 < len(args); i++ {
		if args[i] == "-f" && strings.ContainsAny(args[i+1], "./") {
			if st, err := os.Stat(args[i+1]); err == nil && !st.IsDir() {
				args = append(append(append([]string{}, args[:i]...), "--file", args[i+1]), args[i+2:]...)
			}
		}
	}
	color := &colorFlag{value: "auto"}
	c.fs.Var(color, "color", "colour the output: auto, always or never")
	timestamps := c.fs.Bool("timestamps", false, "start each line with the time")
	names, err := c.parse(args)
	if err != nil {
		return err
	}
	if *n < 0 {
		return usagef("-n must be 0 or more")
	}
	client, err := clientFor(io, c)
	if err != nil {
		return err
	}
	st, err := client.Status(context.Background())
	if err != nil {
		return err
	}
	var services []string
	maxWorkers := 1
	for _, s := range st {
		services = append(services, s.Name)
		maxWorkers = max(maxWorkers, s.Size)
	}
	f := logmux.NewFormatter(services, maxWorkers, color.enabled(io, io.Out), *timestamps)
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	var buf []byte
	cut := false
	err = client.Logs(ctx, names, *n, follow, func(ev control.LogEvent) error {
		if ev.CutOff {
			cut = true
			return nil
		}
		if ev.Line == nil {
			return nil
		}
		buf = f.Append(buf[:0], ev.Line.Line())
		_, err := io.Out.Write(buf)
		return err
	})
	if ctx.Err() != nil {
		// Interrupted by the user (Ctrl-C): the stream may have ended
		// with no error, which is not a cut-off.
		return nil
	}
	if follow && err == nil && !cut {
		// A follow stream ends only with up, or when up cut it off
		// without a chance to say so (the reader had stopped reading).
		if _, ierr := client.Info(context.Background()); ierr == nil {
			cut = true
		} else {
			fmt.Fprintln(io.Err, "recluster logs: recluster up has ended")
			return nil
		}
	}
	if cut {
		fmt.Fprintln(io.Err, "recluster logs: cut off for falling behind; run it again to go on")
		return errReported
	}
	return err
}

func runDown(io IO, c *common, args []string) error {
	wait := c.fs.Duration("wait", defaultWait, "give up waiting after this long")
	if err := c.noArgs(args, " (to stop some services use `recluster stop`)"); err != nil {
		return err
	}
	client, err := clientFor(io, c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *wait)
	defer cancel()
	info, _ := client.Info(ctx)
	if err := client.Down(ctx); err != nil {
		return err
	}
	// The response comes once every worker is gone; `up` exits right after.
	if info.Pid > 0 {
		waitExit(info.Pid, 5*time.Second)
	}
	fmt.Fprintln(io.Out, "every service stopped; recluster up has ended")
	return nil
}

// stillWaiting explains a change that --wait gave up on: what the
// services are still doing (workers starting, stopping with work in
// flight), so the user knows what holds it. The change itself goes on.
func stillWaiting(client *control.Client, verb string, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msg := fmt.Sprintf("gave up waiting after %s (--wait); the %s goes on in recluster up", wait, verb)
	sts, err := client.Status(ctx)
	if err != nil {
		return fmt.Errorf("%s; its status could not be read: %w", msg, err)
	}
	var waiting []string
	for _, s := range sts {
		for _, w := range s.Workers {
			switch w.State {
			case "starting":
				waiting = append(waiting, fmt.Sprintf("%s.%d (generation %d, pid %d) is not ready yet", s.Name, w.ID, w.Generation, w.Pid))
			case "proving":
				waiting = append(waiting, fmt.Sprintf("%s.%d (generation %d, pid %d) has been ready for less than minReady", s.Name, w.ID, w.Generation, w.Pid))
			case "stopping":
				what := fmt.Sprintf("%s.%d (generation %d, pid %d) is stopping", s.Name, w.ID, w.Generation, w.Pid)
				if w.InFlight > 0 {
					what += fmt.Sprintf(" with %d request(s) or connection(s) in flight", w.InFlight)
				}
				waiting = append(waiting, what)
			}
		}
		if s.State == "building" {
			waiting = append(waiting, fmt.Sprintf("%s is building generation %d", s.Name, s.Generation+1))
		}
	}
	if len(waiting) == 0 {
		return errors.New(msg)
	}
	return fmt.Errorf("%s; still waiting for:\n  %s", msg, strings.Join(waiting, "\n  "))
}

// printStatusTable prints one row a worker, with the columns the stack
// needs: a port and work in flight behind a proxy, health with probes.
func printStatusTable(out io.Writer, st []control.ServiceStatus) error {
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	proxied, probed := false, false
	for _, s := range st {
		proxied = proxied || s.Proxy != ""
		for _, w := range s.Workers {
			probed = probed || w.Health != nil
		}
	}
	header := "SERVICE\tID\tPID\tSTATE\tGEN\tUPTIME\tRESTARTS\tMEM"
	if proxied {
		header += "\tPORT\tIN FLIGHT"
	}
	if probed {
		header += "\tHEALTH"
	}
	fmt.Fprintln(tw, header+"\tLAST EXIT\tSTATUS")
	now := time.Now()
	for _, s := range st {
		if len(s.Workers) == 0 {
			dashes := "-\t-\t-\t-"
			if proxied {
				dashes += "\t-\t-"
			}
			if probed {
				dashes += "\t-"
			}
			reason, _, _ := strings.Cut(s.Reason, "\n")
			fmt.Fprintf(tw, "%s\t-\t-\t%s\t%d\t%s\t%s\n", printable(s.Name), printable(s.State), s.Generation, dashes, printable(reason))
			continue
		}
		for _, w := range s.Workers {
			uptime, pid, port := "-", "-", "-"
			if !w.Started.IsZero() {
				uptime = now.Sub(w.Started).Round(time.Second).String()
			}
			if w.Pid > 0 {
				pid = strconv.Itoa(w.Pid)
			}
			if w.Port > 0 {
				port = strconv.Itoa(w.Port)
			}
			last := w.LastExit
			if last == "" {
				last = "-"
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%s\t%d\t%s\t", printable(s.Name), w.ID, pid, printable(w.State), w.Generation, uptime, w.Restarts, control.RSSText(w.RSS))
			if proxied {
				fmt.Fprintf(tw, "%s\t%d\t", port, w.InFlight)
			}
			if probed {
				fmt.Fprintf(tw, "%s\t", w.Health.Word())
			}
			status := w.Status
			if status == "" && s.Reason != "" {
				status, _, _ = strings.Cut(s.Reason, "\n")
			}
			fmt.Fprintf(tw, "%s\t%s\n", printable(last), printable(status))
		}
	}
	return tw.Flush()
}

func probeWord(h *control.Health) string {
	if h.Ready {
		return "readiness (" + h.Probe + ")"
	}
	return "health (" + h.Probe + ")"
}
