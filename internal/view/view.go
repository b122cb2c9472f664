// Package view is `recluster top`: a live view of a running stack, on
// bubbletea and lipgloss. It is linked into recluster-top, not into
// recluster, whose `top` and `up --top` run recluster-top: every page of
// a static binary's code is resident in every `up` (the kernel maps 64
// KiB around each page an initialiser touches), and the view's libraries
// cost each `up` 1.1 MiB of idle memory that way, view or not.
package view

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	tea "charm.land/bubbletea/v2"
	"charm.land/lipgloss/v2"
	"github.com/charmbracelet/colorprofile"

	"github.com/recluster/recluster/internal/control"
)

// Run shows the stack that client reaches until the view is closed (q,
// Ctrl-C) or `up` ends; ended then says why, for the user.
func Run(in io.Reader, out io.Writer, client Client, color bool, every time.Duration) (ended string, err error) {
	// A first look before the terminal is taken: no instance is said as
	// every verb says it.
	first, err := client.Status(context.Background())
	if err != nil {
		return "", err
	}
	// The view uses the 8 ANSI colours only; without colour (NO_COLOR,
	// --color never) bold and reverse still mark the title and the
	// selected line.
	profile := colorprofile.ANSI
	if !color {
		profile = colorprofile.Ascii
	}
	m := newModel(client, every)
	m.take(first, time.Now())
	end, err := tea.NewProgram(m, tea.WithInput(in), tea.WithOutput(out), tea.WithColorProfile(profile)).Run()
	if err != nil {
		return "", err
	}
	if final, ok := end.(*model); ok {
		return final.ended, nil
	}
	return "", nil
}

// Client is what the view asks of `up`: control.Client, or a fake in
// the model's tests.
type Client interface {
	Status(ctx context.Context) ([]control.ServiceStatus, error)
	Reload(ctx context.Context, services []string) (control.Outcome, error)
	Restart(ctx context.Context, services []string) error
	Start(ctx context.Context, services []string) error
	Stop(ctx context.Context, services []string) error
	Scale(ctx context.Context, counts map[string]int) error
	Logs(ctx context.Context, services []string, n int, follow bool, each func(control.LogEvent) error) error
}

// model is the view's state. bubbletea runs Update and View on one
// goroutine; what asks `up` runs in tea.Cmds, whose answers come back
// as messages.
type model struct {
	client Client
	every  time.Duration

	services []control.ServiceStatus
	at       time.Time
	selected string
	// rates are each service's requests a second, oldest first, and cpu
	// its CPU share, from the last two looks.
	rates   map[string][]float64
	cpu     map[string]float64
	prevReq map[string]uint64
	prevCPU map[string]float64
	// workerCPU is each worker's CPU share (by service and pid) from the
	// last two looks, prevWorker its CPU time at the last.
	workerCPU  map[string]float64
	prevWorker map[string]float64
	allLogs    bool // the log shows every service's lines
	logs       []string
	filter     string
	typing     bool // the filter is being typed
	message    string
	busy       bool // an action runs; another waits for its answer
	width      int
	height     int
	ended      string // why the view ended by itself
	failures   int    // looks in a row that found no `up`
}

const sparkWidth = 12

func newModel(client Client, every time.Duration) *model {
	return &model{client: client, every: every, width: 80, height: 24,
		rates: map[string][]float64{}, cpu: map[string]float64{}, prevReq: map[string]uint64{}, prevCPU: map[string]float64{},
		workerCPU: map[string]float64{}, prevWorker: map[string]float64{}}
}

type (
	tickMsg   time.Time
	statusMsg struct {
		st  []control.ServiceStatus
		err error
		at  time.Time
	}
	logsMsg   []string
	answerMsg struct{ text string }
)

func (m *model) Init() tea.Cmd { return tea.Batch(m.look(), m.tick()) }

func (m *model) tick() tea.Cmd {
	return tea.Tick(m.every, func(t time.Time) tea.Msg { return tickMsg(t) })
}

// look asks `up` for its status and the selected service's last lines.
func (m *model) look() tea.Cmd {
	client, n := m.client, max(m.height, 10)
	services := []string{m.selected}
	if m.allLogs {
		services = nil // every service's
	}
	return tea.Batch(func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		st, err := client.Status(ctx)
		return statusMsg{st, err, time.Now()}
	}, func() tea.Msg {
		if len(services) == 1 && services[0] == "" {
			return logsMsg(nil)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		var lines []string
		client.Logs(ctx, services, n, false, func(e control.LogEvent) error {
			if l := e.Line; l != nil {
				who := l.Service
				if l.Worker >= 0 {
					who += "." + strconv.Itoa(l.Worker)
				}
				lines = append(lines, who+" | "+l.Text)
			}
			return nil
		})
		return logsMsg(lines)
	})
}

// act runs one action on `up` and answers with what it said.
func (m *model) act(what string, do func(ctx context.Context) (string, error)) tea.Cmd {
	if m.busy {
		m.message = "still waiting for the last action"
		return nil
	}
	m.busy, m.message = true, what+"…"
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		said, err := do(ctx)
		if err != nil {
			return answerMsg{what + ": " + err.Error()}
		}
		return answerMsg{what + ": " + said}
	}
}

func (m *model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case tickMsg:
		return m, tea.Batch(m.look(), m.tick())
	case statusMsg:
		if msg.err != nil {
			m.failures++
			if errors.Is(msg.err, control.ErrNotRunning) || m.failures >= 3 {
				m.ended = "recluster up has ended: " + msg.err.Error()
				return m, tea.Quit
			}
			m.message = "cannot reach up: " + msg.err.Error()
			return m, nil
		}
		m.failures = 0
		m.take(msg.st, msg.at)
	case logsMsg:
		m.logs = msg
	case answerMsg:
		m.busy, m.message = false, msg.text
		return m, m.look()
	case tea.KeyPressMsg:
		return m, m.key(msg)
	}
	return m, nil
}

// key handles one key press.
func (m *model) key(k tea.KeyPressMsg) tea.Cmd {
	if m.typing {
		switch k.Code {
		case tea.KeyEnter, tea.KeyEscape:
			m.typing = false
		case tea.KeyBackspace:
			_, size := utf8.DecodeLastRuneInString(m.filter)
			m.filter = m.filter[:len(m.filter)-size] // a letter, not a byte of one
		default:
			m.filter += k.Text
		}
		return nil
	}
	name := m.selected
	client := m.client
	switch k.String() {
	case "q", "ctrl+c":
		return tea.Quit
	case "up", "k":
		m.move(-1)
	case "down", "j":
		m.move(1)
	case "/":
		m.typing, m.filter = true, ""
	case "a":
		m.allLogs, m.logs = !m.allLogs, nil
		return m.look()
	case "r":
		return m.act("reload "+name, func(ctx context.Context) (string, error) {
			out, err := client.Reload(ctx, []string{name})
			if err != nil {
				return "", err
			}
			if out.Cut > 0 {
				return fmt.Sprintf("done, but %d request(s) or connection(s) cut", out.Cut), nil
			}
			return "done", nil
		})
	case "R":
		return m.act("restart "+name, func(ctx context.Context) (string, error) {
			return "done", client.Restart(ctx, []string{name})
		})
	case "+", "-":
		s := m.service(name)
		if s == nil {
			return nil
		}
		n := s.Size + 1
		if k.String() == "-" {
			n = s.Size - 1
		}
		if n < 1 {
			m.message = "a service has at least 1 worker; s stops it"
			return nil
		}
		return m.act(fmt.Sprintf("scale %s=%d", name, n), func(ctx context.Context) (string, error) {
			return "done", client.Scale(ctx, map[string]int{name: n})
		})
	case "s":
		s := m.service(name)
		if s == nil {
			return nil
		}
		if s.Running {
			return m.act("stop "+name, func(ctx context.Context) (string, error) { return "done", client.Stop(ctx, []string{name}) })
		}
		return m.act("start "+name, func(ctx context.Context) (string, error) { return "done", client.Start(ctx, []string{name}) })
	}
	return nil
}

func (m *model) move(by int) {
	for i, s := range m.services {
		if s.Name == m.selected {
			i = min(max(i+by, 0), len(m.services)-1)
			m.selected, m.logs = m.services[i].Name, nil
			return
		}
	}
}

func (m *model) service(name string) *control.ServiceStatus {
	for i := range m.services {
		if m.services[i].Name == name {
			return &m.services[i]
		}
	}
	return nil
}

// take records a look: the status, and each service's request rate and
// CPU share since the look before.
func (m *model) take(st []control.ServiceStatus, at time.Time) {
	since := at.Sub(m.at).Seconds()
	// Only the workers of this look are kept: a long view of a service
	// that respawns must not keep every pid it ever saw.
	prevWorker, workerCPU := m.prevWorker, m.workerCPU
	m.prevWorker, m.workerCPU = map[string]float64{}, map[string]float64{}
	for _, s := range st {
		var cpu float64
		for _, w := range s.Workers {
			cpu += w.CPUSeconds
			key := s.Name + "/" + strconv.Itoa(w.Pid)
			if prev, ok := prevWorker[key]; ok && since > 0 && w.CPUSeconds >= prev {
				m.workerCPU[key] = 100 * (w.CPUSeconds - prev) / since
			} else if cpu, ok := workerCPU[key]; ok {
				m.workerCPU[key] = cpu
			}
			m.prevWorker[key] = w.CPUSeconds
		}
		if prev, ok := m.prevCPU[s.Name]; ok && since > 0 && cpu >= prev {
			m.cpu[s.Name] = 100 * (cpu - prev) / since
		}
		m.prevCPU[s.Name] = cpu
		if r := s.Requests; r != nil {
			var n uint64
			for _, c := range r.ByClass {
				n += c
			}
			if prev, ok := m.prevReq[s.Name]; ok && since > 0 && n >= prev {
				rates := append(m.rates[s.Name], float64(n-prev)/since)
				m.rates[s.Name] = rates[max(len(rates)-sparkWidth, 0):]
			}
			m.prevReq[s.Name] = n
		}
	}
	m.services, m.at = st, at
	if m.service(m.selected) == nil && len(st) > 0 {
		m.selected = st[0].Name
	}
}

// topStyles are made when the view first draws, not at the start of
// every recluster: `up` links the view, and pays at its start for what
// package variables make.
type topStyles struct{ title, selected, bad, good, dim lipgloss.Style }

var topStyle = sync.OnceValue(func() topStyles {
	return topStyles{
		title:    lipgloss.NewStyle().Bold(true),
		selected: lipgloss.NewStyle().Reverse(true),
		bad:      lipgloss.NewStyle().Foreground(lipgloss.Color("1")),
		good:     lipgloss.NewStyle().Foreground(lipgloss.Color("2")),
		dim:      lipgloss.NewStyle().Faint(true),
	}
})

// View draws the view on the terminal's alternate screen, as top does.
func (m *model) View() tea.View {
	v := tea.NewView(m.render())
	v.AltScreen = true
	return v
}

// render is the view's text, for the terminal and the model's tests.
func (m *model) render() string {
	var lines []string
	add := func(s string) { lines = append(lines, s) }
	add(topStyle().title.Render(fmt.Sprintf("recluster top · %d services · %s", len(m.services), m.at.Format("15:04:05"))))
	add(fmt.Sprintf("  %-14s %-10s %4s %7s %4s %7s %6s %-7s %8s %5s %-12s %s", "SERVICE", "STATE", "GEN", "READY", "RST", "MEM", "CPU%", "HEALTH", "REQ/S", "FLY", "", "LAST RELOAD"))
	for _, s := range m.services {
		row := m.serviceRow(s)
		if s.Name == m.selected {
			row = topStyle().selected.Render(row)
		}
		add(row)
	}
	if s := m.service(m.selected); s != nil {
		add("")
		add(topStyle().title.Render(s.Name) + topStyle().dim.Render(" workers"))
		add(fmt.Sprintf("  %-4s %-8s %4s %-9s %8s %6s %5s %7s %6s %s", "ID", "PID", "GEN", "STATE", "UPTIME", "PORT", "FLY", "MEM", "CPU%", "HEALTH"))
		workers := append([]control.WorkerStatus(nil), s.Workers...)
		sort.SliceStable(workers, func(i, j int) bool { return workers[i].Generation > workers[j].Generation })
		for _, w := range workers {
			add(m.workerRow(s, w))
		}
	}
	logRoom := m.height - len(lines) - 3
	if logRoom > 0 {
		add("")
		title := topStyle().dim.Render("log of " + m.selected)
		if m.allLogs {
			title = topStyle().dim.Render("log of every service")
		}
		if m.filter != "" || m.typing {
			title += topStyle().dim.Render(" /" + m.filter)
		}
		add(title)
		var shown []string
		for _, l := range m.logs {
			if m.filter == "" || strings.Contains(l, m.filter) {
				shown = append(shown, l)
			}
		}
		for _, l := range shown[max(len(shown)-(logRoom-1), 0):] {
			add("  " + l)
		}
	}
	for len(lines) < m.height-2 {
		add("")
	}
	add(m.message)
	add(topStyle().dim.Render("↑↓ select  r:reload R:restart +/-:scale s:stop/start a:all logs /:filter q:quit"))
	for i, l := range lines {
		lines[i] = clip(l, m.width)
	}
	return strings.Join(lines[max(len(lines)-m.height, 0):], "\n")
}

func (m *model) serviceRow(s control.ServiceStatus) string {
	ready, fly := 0, 0
	var mem int64
	for _, w := range s.Workers {
		if w.State == "ready" {
			ready++
		}
		fly += w.InFlight
		mem += w.RSS
	}
	rst := 0
	for _, w := range s.Workers {
		rst += w.Restarts
	}
	state := s.State
	switch state {
	case "failed", "blocked":
		state = topStyle().bad.Render(fmt.Sprintf("%-10s", state))
	case "reloading":
		state = topStyle().good.Render(fmt.Sprintf("%-10s", state))
	default:
		state = fmt.Sprintf("%-10s", state)
	}
	reqs, spark := "-", ""
	if rates := m.rates[s.Name]; len(rates) > 0 {
		reqs = strconv.FormatFloat(rates[len(rates)-1], 'f', 0, 64)
		spark = sparkline(rates)
	}
	last := "-"
	if r := s.LastReload; r != nil {
		last = r.Started.Local().Format("15:04:05") + " " + r.Outcome
		if r.Outcome != "running" {
			last += fmt.Sprintf(" %.1fs", r.Seconds)
		}
	}
	return fmt.Sprintf("  %-14s %s %4d %7s %4d %7s %6.1f %-7s %8s %5d %-12s %s", clip(s.Name, 14), state, s.Generation,
		fmt.Sprintf("%d/%d", ready, s.Size), rst, control.RSSText(mem), m.cpu[s.Name], serviceHealth(s), reqs, fly, spark, last)
}

func (m *model) workerRow(s *control.ServiceStatus, w control.WorkerStatus) string {
	uptime, pid, port := "-", "-", "-"
	if !w.Started.IsZero() {
		uptime = m.at.Sub(w.Started).Round(time.Second).String()
	}
	if w.Pid > 0 {
		pid = strconv.Itoa(w.Pid)
	}
	if w.Port > 0 {
		port = strconv.Itoa(w.Port)
	}
	state := w.State
	if w.Generation < s.Generation && state == "stopping" {
		state = "draining" // an old worker finishing what it has
	}
	row := fmt.Sprintf("  %-4d %-8s %4d %-9s %8s %6s %5d %7s %6.1f %s", w.ID, pid, w.Generation, state, uptime, port, w.InFlight, control.RSSText(w.RSS),
		m.workerCPU[s.Name+"/"+strconv.Itoa(w.Pid)], w.Health.Word())
	if w.Generation < s.Generation {
		return topStyle().dim.Render(row)
	}
	return row
}

// serviceHealth sums up the workers' last probes: "-" without probes,
// "ok", or how many are sick.
func serviceHealth(s control.ServiceStatus) string {
	probed, sick := false, 0
	for _, w := range s.Workers {
		if w.Health != nil {
			probed = true
			if !w.Health.OK {
				sick++
			}
		}
	}
	switch {
	case !probed:
		return "-"
	case sick == 0:
		return "ok"
	}
	return strconv.Itoa(sick) + " sick"
}

// sparkline draws rates as bars, the highest full.
func sparkline(rates []float64) string {
	bars := []rune("▁▂▃▄▅▆▇█")
	top := 0.0
	for _, r := range rates {
		top = max(top, r)
	}
	var b strings.Builder
	for _, r := range rates {
		i := 0
		if top > 0 {
			i = int(r / top * float64(len(bars)-1))
		}
		b.WriteRune(bars[i])
	}
	return b.String()
}

// clip cuts s to width cells on the screen.
func clip(s string, width int) string {
	if width <= 0 || lipgloss.Width(s) <= width {
		return s
	}
	return lipgloss.NewStyle().MaxWidth(width).Render(s)
}
