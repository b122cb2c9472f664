package runner

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/recluster/recluster/config"
)

// A reload of several services goes in `after` order, under the
// conditions `up` starts them by: a service waits for the reloads of the
// services it names in `after` that this reload also takes, and is not
// reloaded if one of them failed, or (for `completed`) did not complete:
// its old generation serves on. Services the reload does not take are
// not waited for, so `reload web` never reruns web's tasks; `reload
// migrate web` does, in order.

// reloadJob is one service a reload takes: a serving cluster and its new
// spec, or an added cluster, with done told its start's result.
type reloadJob struct {
	c    *cluster
	spec *serviceSpec
	done chan error
}

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
func (o reloadOrder) markAwaited(jobs []reloadJob) {
	for _, j := range jobs {
		if j.spec == nil {
			continue // added: up's rules start it
		}
		for dep, when := range j.spec.AfterWhen {
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

// carryOut reloads the jobs' services in `after` order (the added ones
// start as up starts them) and ends the removed ones, all at once
// otherwise; it joins what each says.
func (m *Manager) carryOut(ctx context.Context, jobs []reloadJob, removed []*cluster) (ReloadReport, error) {
	var cs []*cluster
	byCluster := map[*cluster]reloadJob{}
	order := reloadOrder{}
	for _, j := range jobs {
		cs = append(cs, j.c)
		byCluster[j.c] = j
		order[j.c.name] = &reloadStep{c: j.c, done: make(chan struct{})}
	}
	order.markAwaited(jobs)
	cs = append(cs, removed...)
	var reportMu sync.Mutex
	var report ReloadReport
	err := each(cs, func(c *cluster) error {
		j, ok := byCluster[c]
		switch {
		case !ok: // removed from the file
			return m.endCluster(ctx, c)
		case j.done != nil:
			// Added: it starts once its `after` conditions are met, as
			// under up (depends.go).
			step := order[c.name]
			select {
			case step.err = <-j.done:
			case <-ctx.Done():
				step.err = ctx.Err()
			}
			if step.err == nil && step.awaited {
				step.err = step.settle(ctx)
			}
			close(step.done)
			return step.err
		default:
			step := order[c.name]
			defer close(step.done)
			if step.err = order.await(ctx, j.spec); step.err != nil {
				return step.err
			}
			var r ReloadReport
			r, step.err = c.Reload(ctx, j.spec)
			reportMu.Lock()
			report.add(r)
			reportMu.Unlock()
			if step.err == nil && step.awaited {
				// A service this reload takes next needs it completed:
				// its answer is how its run ended.
				step.err = step.settle(ctx)
			}
			return step.err
		}
	})
	return report, err
}
