package view

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/x/ansi"

	"github.com/recluster/recluster/internal/control"
)

// fakeUp answers the view as `up` would, and notes what it was asked.
type fakeUp struct{ asked []string }

func (f *fakeUp) Status(context.Context) ([]control.ServiceStatus, error) { return nil, nil }
func (f *fakeUp) Reload(_ context.Context, s []string) (control.Outcome, error) {
	f.asked = append(f.asked, "reload "+strings.Join(s, " "))
	return control.Outcome{}, nil
}
func (f *fakeUp) Restart(_ context.Context, s []string) error {
	f.asked = append(f.asked, "restart "+strings.Join(s, " "))
	return nil
}
func (f *fakeUp) Start(_ context.Context, s []string) error {
	f.asked = append(f.asked, "start "+strings.Join(s, " "))
	return nil
}
func (f *fakeUp) Stop(_ context.Context, s []string) error {
	f.asked = append(f.asked, "stop "+strings.Join(s, " "))
	return nil
}
func (f *fakeUp) Scale(_ context.Context, c map[string]int) error {
	f.asked = append(f.asked, fmt.Sprint("scale ", c))
	return nil
}
func (f *fakeUp) Logs(context.Context, []string, int, bool, func(control.LogEvent) error) error {
	return nil
}

func stackAt(gen int, reloading bool, requests uint64) []control.ServiceStatus {
	started := time.Now().Add(-time.Minute)
	web := control.ServiceStatus{Name: "web", State: "running", Generation: gen, Running: true, Size: 2, Proxy: "http://127.0.0.1:8080",
		Requests: &control.Requests{ByClass: map[string]uint64{"2xx": requests}}}
	for id := 0; id < 2; id++ {
		web.Workers = append(web.Workers, control.WorkerStatus{ID: id, Pid: 100*gen + id, State: "ready", Generation: gen, Started: started, Port: 9000 + id, RSS: 30 << 20})
	}
	if reloading {
		web.State = "reloading"
		web.Workers = append(web.Workers, control.WorkerStatus{ID: 0, Pid: 100*(gen-1) + 0, State: "stopping", Generation: gen - 1, Started: started, InFlight: 3})
	}
	clock := control.ServiceStatus{Name: "clock", State: "running", Generation: 1, Running: true, Size: 1,
		Workers: []control.WorkerStatus{{ID: 0, Pid: 7, State: "ready", Generation: 1, Started: started}}}
	return []control.ServiceStatus{web, clock}
}

// update feeds msg to the model and runs what it asks to run, once.
func update(t *testing.T, m *model, msg tea.Msg) tea.Msg {
	t.Helper()
	_, cmd := m.Update(msg)
	if cmd == nil {
		return nil
	}
	return cmd()
}

// TestTopShowsTheStackAReloadAndItsKeys: the view lists every service and
// the selected one's workers, shows a reload's two generations with the
// old worker draining and its work in flight, a request rate, and keys
// ask `up` for what they say; it fits 80×24.
func TestTopShowsTheStackAReloadAndItsKeys(t *testing.T) {
	f := &fakeUp{}
	m := newModel(f, time.Second)
	m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
	t0 := time.Now()
	m.Update(statusMsg{st: stackAt(1, false, 100), at: t0})
	m.Update(statusMsg{st: stackAt(2, true, 300), at: t0.Add(time.Second)})
	view := ansi.Strip(m.render())
	for _, want := range []string{"web", "clock", "reloading", "2/2", "draining", "200", "30M"} {
		if !strings.Contains(view, want) {
			t.Errorf("the view lacks %q:\n%s", want, view)
		}
	}
	lines := strings.Split(view, "\n")
	if len(lines) > 24 {
		t.Errorf("%d lines on a 24-line terminal", len(lines))
	}
	for _, l := range lines {
		if w := lipgloss.Width(l); w > 80 {
			t.Errorf("a line of %d cells on an 80-cell terminal: %q", w, l)
		}
	}
	if msg := update(t, m, tea.KeyPressMsg{Code: 'r', Text: "r"}); msg == nil {
		t.Fatal("r asked nothing")
	} else {
		m.Update(msg)
	}
	if !strings.Contains(ansi.Strip(m.render()), "reload web: done") {
		t.Errorf("the reload's answer is not shown:\n%s", ansi.Strip(m.render()))
	}
	m.Update(tea.KeyPressMsg{Code: tea.KeyDown})
	if msg := update(t, m, tea.KeyPressMsg{Code: '+', Text: "+"}); msg != nil {
		m.Update(msg)
	}
	if msg := update(t, m, tea.KeyPressMsg{Code: 's', Text: "s"}); msg != nil {
		m.Update(msg)
	}
	if got := strings.Join(f.asked, "; "); got != "reload web; scale map[clock:2]; stop clock" {
		t.Errorf("asked: %s", got)
	}
	if msg := update(t, m, tea.KeyPressMsg{Code: 'a', Text: "a"}); msg != nil && !strings.Contains(ansi.Strip(m.render()), "log of every service") {
		t.Errorf("a: the log is not every service's:\n%s", ansi.Strip(m.render()))
	}
	// "/" types a filter for the log: letters, a space, a backspace, and
	// Enter ends it; q while typing is a letter, not quit.
	for _, k := range []tea.KeyPressMsg{{Code: '/', Text: "/"}, {Code: 'q', Text: "q"}, {Code: tea.KeySpace, Text: " "},
		{Code: 'é', Text: "é"}, {Code: tea.KeyBackspace}, {Code: tea.KeyEnter}} {
		if _, cmd := m.Update(k); cmd != nil {
			t.Fatalf("%v while typing a filter asked something", k)
		}
	}
	if m.typing || m.filter != "q " {
		t.Errorf("after typing a filter: typing %v, filter %q; want false, \"q \"", m.typing, m.filter)
	}
	m.Update(tea.WindowSizeMsg{Width: 40, Height: 10})
	for _, l := range strings.Split(ansi.Strip(m.render()), "\n") {
		if w := lipgloss.Width(l); w > 40 {
			t.Errorf("after a resize to 40 cells, a line of %d: %q", w, l)
		}
	}
}

// TestTopEndsWithUp: when `up` is gone the view says so and quits.
func TestTopEndsWithUp(t *testing.T) {
	m := newModel(&fakeUp{}, time.Second)
	_, cmd := m.Update(statusMsg{err: fmt.Errorf("recluster up for x: %w", control.ErrNotRunning)})
	if cmd == nil {
		t.Fatal("no quit")
	}
	if _, ok := cmd().(tea.QuitMsg); !ok || !strings.Contains(m.ended, "recluster up has ended") {
		t.Errorf("ended %q", m.ended)
	}
}
