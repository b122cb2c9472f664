package runner

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/recluster/recluster/config"
)

// A reload of several services goes in `after` order, under the
// conditions `up` starts them by: a service waits for the reloads of the
// services it names in `after` that this reload also takes, and is not
// reloaded if one of them failed, or (for `completed`) did not complete:
// its old generation serves on. Services the reload does not take are
// not waited for, so `reload web` never reruns web's tasks; `reload
// migrate web` does, in order.

// reloadStep is one service's part of a reload; done is closed once err
// (and, for a task, settled) say how it went.
type reloadStep struct {
	c       *cluster
	done    chan struct{}
	err     error
	settled *serviceState // a task's state once its run ended
	// awaited: a service in the same reload needs this one completed,
	// so its step ends only when its run has.
	awaited bool
}

// reloadOrder is the steps of one reload, by service name.
type reloadOrder map[string]*reloadStep

// markAwaited marks the steps that another step needs completed.
func (o reloadOrder) markAwaited(specs []*serviceSpec) {
	for _, spec := range specs {
		for dep, when := range spec.AfterWhen {
			if step := o[dep]; step != nil && when == config.AfterCompleted {
				step.awaited = true
			}
		}
	}
}

// await waits for the steps that spec's service comes after, and says why
// it must not be reloaded, if it must not.
func (o reloadOrder) await(ctx context.Context, spec *serviceSpec) error {
	for _, dep := range spec.After {
		step := o[dep]
		if step == nil {
			continue // not reloaded now: its state stands
		}
		select {
		case <-step.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		switch {
		case step.err != nil && step.settled != nil:
			return fmt.Errorf("not reloaded, since %s failed; its old generation serves on", dep)
		case step.err != nil:
			return fmt.Errorf("not reloaded, since %s's reload failed; its old generation serves on", dep)
		}
		when := spec.AfterWhen[dep]
		if when != config.AfterCompleted {
			continue // its new generation is ready, so started too
		}
		if st := step.settled; st.phase != phaseCompleted {
			return fmt.Errorf("not reloaded, since %s did not complete (it is %s); its old generation serves on", dep, st.phase)
		}
	}
	return nil
}

// settle waits for a task's rerun to end, and fails the step unless it
// completed.
func (s *reloadStep) settle(ctx context.Context) error {
	st, err := s.c.settle(ctx)
	if err != nil {
		return err
	}
	s.settled = &st
	if st.phase == phaseFailed {
		// The ServiceError around it names the service already.
		return errors.New(strings.TrimPrefix(st.reason, s.c.name+" "))
	}
	// Completed; or stopped or blocked, as it was before the reload
	// (a reload does not start those): its dependents say so.
	return nil
}
