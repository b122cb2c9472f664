package runner

import (
	"context"
	"regexp"
	"strings"
	"time"
)

// LastReload is a service's last reload, as status shows it.
type LastReload struct {
	Started  time.Time
	Duration time.Duration // 0 while it runs
	// Trigger is what asked for it: "reload" (the command or the API),
	// "SIGUSR2", "watch: FILE", "config saved"; "" when not said.
	Trigger string
	// Outcome is running, succeeded, failed or superseded.
	Outcome    string
	Generation int
	// Reason and Lines say why it failed: the error, and the worker's
	// lines that tell it (those that look like an error first).
	Reason string
	Lines  []string
}

type triggerKey struct{}

// WithTrigger marks the reloads asked for with ctx as asked for by what
// (status shows it).
func WithTrigger(ctx context.Context, what string) context.Context {
	return context.WithValue(ctx, triggerKey{}, what)
}

func triggerOf(ctx context.Context) string {
	s, _ := ctx.Value(triggerKey{}).(string)
	return s
}

// errorLine matches the lines of output that say what went wrong, in the
// languages recluster runs: Node's and Python's exceptions, Go's panics,
// Ruby's errors, and the usual words.
var errorLine = regexp.MustCompile(`(?i)(error|exception|traceback|panic|fatal|cannot|can't|failed|refused|denied|not found|no such|invalid|unexpected)`)

// tellingLines keeps, of a worker's last lines, those that say what went
// wrong, and the last few, at most n in their order: a stack of frames
// after the error line no longer pushes the error out.
func tellingLines(lines []string, n int) []string {
	if len(lines) <= n {
		return lines
	}
	const lastFew = 3
	keep := make([]bool, len(lines))
	kept := 0
	for i := len(lines) - 1; i >= len(lines)-lastFew; i-- {
		keep[i] = true
		kept++
	}
	for i, l := range lines {
		if kept < n && !keep[i] && errorLine.MatchString(l) {
			keep[i] = true
			kept++
		}
	}
	for i := len(lines) - lastFew - 1; i >= 0 && kept < n; i-- {
		if !keep[i] {
			keep[i] = true
			kept++
		}
	}
	out := make([]string, 0, n)
	for i, l := range lines {
		if keep[i] {
			out = append(out, l)
		}
	}
	return out
}

// failureLines is what a worker that failed said: from its last 50 lines,
// the 10 that tell.
func (c *cluster) failureLines(w WorkerRef) []string {
	return tellingLines(c.opts.Output.Tail(w, 50), 10)
}

// reloadEnded records the end of the last reload.
func (c *cluster) reloadEnded(outcome string, err error) {
	r := c.lastReload
	if r == nil || r.Outcome != "running" {
		return
	}
	r.Outcome, r.Duration = outcome, time.Since(r.Started)
	c.countReload(outcome)
	if err != nil && outcome == "failed" {
		reason, _, _ := strings.Cut(err.Error(), "; its last lines:")
		r.Reason = reason
		switch e := err.(type) {
		case *WorkerFailedError:
			r.Lines = e.Tail
		case *BuildFailedError:
			r.Lines = e.Tail
		}
	}
}

// countReload counts a reload's end by its outcome, for status and
// metrics.
func (c *cluster) countReload(outcome string) {
	if c.reloads == nil {
		c.reloads = map[string]int{}
	}
	c.reloads[outcome]++
}
