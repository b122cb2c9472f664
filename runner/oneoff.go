package runner

import (
	"errors"
	"fmt"

	"github.com/recluster/recluster/config"
	"github.com/recluster/recluster/internal/osproc"
)

// OneOff is a one-off process of a service (`recluster run`): what a
// worker of it would get, but for the per-worker variables (WORKER_ID,
// RECLUSTER_GENERATION, a proxied worker's own PORT), which belong to
// workers.
type OneOff struct {
	Path string   // the program, looked up in the service's PATH
	Argv []string // its argv, Argv[0] as given
	Dir  string
	Env  []string
}

// NewOneOff prepares args (the service's own command when empty) to run
// as svc would, with base as recluster's own environment.
func NewOneOff(svc *config.Service, base []string, args []string) (*OneOff, error) {
	env := append(mergeEnviron(base, svc.Env), "RECLUSTER_SERVICE="+svc.Name)
	argv := args
	if len(argv) == 0 {
		var err error
		if argv, err = svc.Command.Argv(func(k string) string { return osproc.Getenv(env, k) }); err != nil {
			return nil, fmt.Errorf("%s's command: %w", svc.Name, err)
		}
	}
	path, err := osproc.LookPath(argv[0], osproc.Getenv(env, "PATH"), svc.Dir)
	if err != nil {
		return nil, fmt.Errorf("cannot run %s in %s: %w", argv[0], svc.Dir, errors.Unwrap(err))
	}
	return &OneOff{Path: path, Argv: argv, Dir: svc.Dir, Env: env}, nil
}
