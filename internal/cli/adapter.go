package cli

import (
	"context"
	"errors"

	"github.com/recluster/recluster/config"
	"github.com/recluster/recluster/internal/control"
	"github.com/recluster/recluster/runner"
)

// triggerSaid marks a context whose reload trigger is set already.
type triggerSaid struct{}

// withTrigger says what asks for the reloads of ctx.
func withTrigger(ctx context.Context, what string) context.Context {
	return context.WithValue(runner.WithTrigger(ctx, what), triggerSaid{}, true)
}

// controller adapts runner.Manager to the control API: it turns the
// runner's statuses into the API's wire types and its errors into the
// API's codes, so that the runner may change without changing the API.
type controller struct{ m *runner.Manager }

func (c controller) Reload(ctx context.Context, names []string) (control.Outcome, error) {
	if _, said := ctx.Value(triggerSaid{}).(bool); !said {
		ctx = runner.WithTrigger(ctx, "reload")
	}
	r, err := c.m.Reload(ctx, names)
	return control.Outcome{Notes: r.Notes, Cut: r.Cut}, apiError(err)
}

func (c controller) Restart(ctx context.Context, names []string) error {
	return apiError(c.m.Restart(ctx, names))
}

func (c controller) Start(ctx context.Context, names []string) error {
	return apiError(c.m.Start(ctx, names))
}

func (c controller) Stop(ctx context.Context, names []string) error {
	return apiError(c.m.Stop(ctx, names))
}

func (c controller) Scale(ctx context.Context, counts map[string]int) error {
	return apiError(c.m.Scale(ctx, counts))
}

func (c controller) Status(ctx context.Context) ([]control.ServiceStatus, error) {
	sts, err := c.m.Status(ctx)
	if err != nil {
		return nil, apiError(err)
	}
	out := make([]control.ServiceStatus, len(sts))
	for i, s := range sts {
		out[i] = control.ServiceStatus{Name: s.Name, State: s.State, Reason: s.Reason, Generation: s.Generation, Running: s.Running,
			Reloading: s.Reloading, Size: s.Size, Listen: s.Listen, Proxy: s.Proxy, Cut: s.Cut, LastReload: reloadStatus(s.LastReload), Reloads: s.Reloads, Workers: make([]control.WorkerStatus, len(s.Workers))}
		if r := s.Requests; r != nil {
			out[i].Requests = &control.Requests{ByClass: r.ByClass, Count: r.DurationCount, Seconds: r.DurationSum}
		}
		for j, w := range s.Workers {
			out[i].Workers[j] = control.WorkerStatus{ID: w.ID, Pid: w.Pid, State: w.State.String(), Generation: w.Generation,
				Restarts: w.Restarts, Started: w.Started, LastExit: w.LastExit, Status: w.Status,
				Port: w.Port, InFlight: w.InFlight, ExitCode: w.ExitCode, RSS: w.RSS, CPUSeconds: w.CPUSeconds}
			if h := w.Health; h != nil {
				out[i].Workers[j].Health = &control.Health{Probe: h.Probe, Ready: h.Ready, At: h.At, OK: h.OK, Detail: h.Detail, Failures: h.Failures}
			}
			if r := w.Replaced; r != nil {
				out[i].Workers[j].Replaced = &control.Replaced{At: r.At, Reason: r.Reason}
			}
			if w.Proving {
				out[i].Workers[j].State = "proving" // ready, held for minReady before it counts
			}
		}
	}
	return out, nil
}

// apiError gives a runner error the API code its callers branch on (the
// runner's sentinel errors are control's, which codes them itself).
func apiError(err error) error {
	if err == nil {
		return nil
	}
	codes := []struct {
		is   func(error) bool
		code string
	}{
		{func(e error) bool { return config.Problems(e) != nil }, control.CodeInvalidConfig},
		{func(e error) bool { var wf *runner.WorkerFailedError; return errors.As(e, &wf) }, control.CodeWorkerFailed},
		{func(e error) bool { var bf *runner.BuildFailedError; return errors.As(e, &bf) }, control.CodeBuildFailed},
		{func(e error) bool { var cl *runner.CrashLoopError; return errors.As(e, &cl) }, control.CodeWorkerFailed},
		{func(e error) bool { var tf *runner.TaskFailedError; return errors.As(e, &tf) }, control.CodeWorkerFailed},
	}
	for _, c := range codes {
		if c.is(err) {
			return &control.Error{Code: c.code, Message: err.Error()}
		}
	}
	return err
}

func reloadStatus(r *runner.LastReload) *control.ReloadStatus {
	if r == nil {
		return nil
	}
	return &control.ReloadStatus{Started: r.Started, Seconds: r.Duration.Seconds(), Trigger: r.Trigger, Outcome: r.Outcome,
		Generation: r.Generation, Reason: r.Reason, Lines: r.Lines}
}
