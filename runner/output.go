package runner

import (
	"io"

	"github.com/recluster/recluster/logmux"
)

// MuxOutput adapts a logmux.Mux to the runner's Output.
func MuxOutput(m *logmux.Mux) Output { return muxOutput{m} }

type muxOutput struct{ m *logmux.Mux }

func source(w WorkerRef) logmux.Source {
	return logmux.Source{Service: w.Service, ID: w.ID, Generation: w.Generation}
}

func (o muxOutput) Open(w WorkerRef) (io.WriteCloser, io.WriteCloser) {
	return o.m.Open(source(w))
}

func (o muxOutput) Retire(w WorkerRef)          { o.m.Retire(source(w)) }
func (o muxOutput) System(service, line string) { o.m.System(service, line) }

func (o muxOutput) Tail(w WorkerRef, n int) []string {
	lines := o.m.Tail(source(w), n)
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = string(l.Text)
	}
	return out
}
