package config

import (
	"errors"
	"regexp"
	"strings"

	"github.com/mattn/go-shellwords"
)

// Command is what a worker runs. Exactly one of Line and Args is set.
type Command struct {
	// Line is the command as the user wrote it, when written as a string.
	Line string
	// Shell is true when Line needs /bin/sh: it has pipes, lists,
	// redirections, substitutions, subshells or leading assignments.
	Shell bool
	// Args is the argv the user wrote as a YAML list, taken unsplit.
	Args []string
}

func (c Command) String() string {
	if c.Args != nil {
		return shellJoin(c.Args)
	}
	return c.Line
}

// Argv returns the program and its arguments for one worker. getenv is the
// worker's own environment: $VAR in a direct command is expanded from it,
// and a shell command gets its expansion from /bin/sh itself.
func (c Command) Argv(getenv func(string) string) ([]string, error) {
	switch {
	case c.Args != nil:
		return append([]string(nil), c.Args...), nil
	case c.Shell:
		return []string{"/bin/sh", "-c", c.Line}, nil
	}
	p := shellwords.NewParser()
	p.ParseEnv = true
	p.Getenv = getenv
	args, err := p.Parse(c.Line)
	if err != nil {
		return nil, err
	}
	if len(args) == 0 {
		return nil, errors.New("command expands to nothing")
	}
	return args, nil
}

var assignment = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)

// parseCommandLine classifies a command string. It returns a non-nil error
// for what neither an exec nor /bin/sh could run: unbalanced quotes or
// nothing to run.
func parseCommandLine(line string) (Command, error) {
	if strings.TrimSpace(line) == "" {
		return Command{}, errors.New("is empty")
	}
	if err := checkQuotes(line); err != nil {
		return Command{}, err
	}
	cmd := Command{Line: line}
	p := shellwords.NewParser()
	args, err := p.Parse(line)
	switch {
	case err != nil:
		// Quotes balance (checked above), so what shellwords refused is a
		// subshell or grouping: legal for /bin/sh.
		cmd.Shell = true
	case p.Position >= 0, hasSubstitution(line):
		cmd.Shell = true
	case len(args) == 0:
		return Command{}, errors.New("has no program to run")
	case assignment.MatchString(args[0]):
		cmd.Shell = true
	}
	return cmd, nil
}

// checkQuotes reports unbalanced quotes and a trailing backslash, the one
// error /bin/sh and an exec would both hit.
func checkQuotes(line string) error {
	var quote rune
	escaped := false
	for _, r := range line {
		switch {
		case escaped:
			escaped = false
		case r == '\\' && quote != '\'':
			escaped = true
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '\'' || r == '"' || r == '`':
			quote = r
		}
	}
	switch {
	case quote != 0:
		return errors.New("has an unclosed " + string(quote) + " quote")
	case escaped:
		return errors.New("ends with a lone backslash")
	}
	return nil
}

// hasSubstitution reports an unquoted-by-single-quotes backtick or $( …).
func hasSubstitution(line string) bool {
	inSingle := false
	for i := 0; i < len(line); i++ {
		switch c := line[i]; {
		case c == '\'':
			inSingle = !inSingle
		case inSingle:
		case c == '`':
			return true
		case c == '$' && i+1 < len(line) && line[i+1] == '(':
			return true
		case c == '$' && i+1 < len(line) && line[i+1] == '{' && hasOperator(line[i+2:]):
			// ${PORT:-3000} and the like: /bin/sh expands them as
			// foreman's users expect; shellwords would pass them on
			// as text.
			return true
		case c == '\\':
			i++
		}
	}
	return false
}

// hasOperator says whether the ${ body that s starts has an operator
// after its name (:-, -, :?, ?, :+, +, =, #, %, /).
func hasOperator(s string) bool {
	j := 0
	for j < len(s) && isNameChar(s[j]) {
		j++
	}
	return j < len(s) && s[j] != '}'
}

// shellJoin quotes args so a shell would split them back the same way.
func shellJoin(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		if a != "" && !strings.ContainsAny(a, " \t\n'\"\\$`|&;<>()*?[]#~{}") {
			out[i] = a
			continue
		}
		out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(out, " ")
}

// requiredUnset finds the first ${NAME:?message} or ${NAME?message} of a
// shell command that lookup (the worker's environment) leaves unset, and
// returns the error /bin/sh would end the worker with, so that `check`
// and `up` say it before any worker starts and crash-loops on it.
func (c Command) requiredUnset(lookup func(string) (string, bool)) error {
	if !c.Shell {
		return nil
	}
	line, inSingle := c.Line, false
	for i := 0; i < len(line); i++ {
		switch ch := line[i]; {
		case ch == '\'':
			inSingle = !inSingle
		case inSingle:
		case ch == '\\':
			i++
		case ch == '$' && i+1 < len(line) && line[i+1] == '{':
			end := closingBrace(line, i+2)
			if end < 0 {
				return nil
			}
			body := line[i+2 : end]
			j := 0
			for j < len(body) && isNameChar(body[j]) {
				j++
			}
			if op := strings.TrimPrefix(body[j:], ":"); strings.HasPrefix(op, "?") {
				// Only the ? operator is judged here: sh has more
				// operators (=, #, %) than recluster's expansion.
				if _, err := expandBraced(body, lookup); err != nil && strings.Contains(err.Error(), " is required: ") {
					return err
				}
			}
			i = end
		}
	}
	return nil
}

// setPerWorker are the variables recluster sets in each worker's
// environment itself, so a command may always name them.
var setPerWorker = []string{"PORT", "WORKER_ID", "RECLUSTER_SERVICE", "RECLUSTER_GENERATION",
	"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "RECLUSTER_READY_FD"}

// workerLookup is what a worker of svc finds in its environment, but for
// what recluster sets per worker (taken as set): the service's env over
// recluster's own.
func workerLookup(svc *Service, getenv func(string) string) func(string) (string, bool) {
	own := map[string]string{}
	for _, v := range svc.Env {
		own[v.Name] = v.Value
	}
	return func(k string) (string, bool) {
		if v, ok := own[k]; ok {
			return v, true
		}
		for _, p := range setPerWorker {
			if k == p {
				return "set by recluster", true
			}
		}
		v := getenv(k)
		return v, v != ""
	}
}
