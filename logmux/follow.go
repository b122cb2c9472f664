package logmux

// Follower receives new lines as they are written, for `recluster logs -f`.
// Its channel is bounded: a follower that falls behind is cut off (its
// channel closed, CutOff true) rather than slowing the stack or growing
// memory.
type Follower struct {
	C        <-chan []Line
	ch       chan []Line
	services []string
	m        *Mux
	cut      bool // set under m.fmu before ch is closed
}

// Follow returns a follower of the named services (all when empty) that
// holds up to buffer batches.
func (m *Mux) Follow(services []string, buffer int) *Follower {
	if buffer <= 0 {
		buffer = DefaultFollowBuf
	}
	ch := make(chan []Line, buffer)
	f := &Follower{C: ch, ch: ch, services: services, m: m}
	m.fmu.Lock()
	m.followers[f] = true
	m.following.Store(true)
	m.fmu.Unlock()
	return f
}

// CutOff reports whether the follower was cut off for falling behind; read
// it after C is closed.
func (f *Follower) CutOff() bool {
	f.m.fmu.Lock()
	defer f.m.fmu.Unlock()
	return f.cut
}

// Close stops the follower and closes C.
func (f *Follower) Close() {
	f.m.fmu.Lock()
	defer f.m.fmu.Unlock()
	f.m.dropLocked(f)
}

func (m *Mux) dropLocked(f *Follower) {
	if m.followers[f] {
		delete(m.followers, f)
		close(f.ch)
		m.following.Store(len(m.followers) > 0)
	}
}

// publish offers a batch to every follower without ever waiting.
func (m *Mux) publish(lines []Line) {
	if !m.following.Load() {
		return
	}
	m.fmu.Lock()
	defer m.fmu.Unlock()
	for f := range m.followers {
		batch := lines
		if len(f.services) > 0 {
			batch = nil
			for _, l := range lines {
				if contains(f.services, l.Source.Service) {
					batch = append(batch, l)
				}
			}
			if len(batch) == 0 {
				continue
			}
		}
		select {
		case f.ch <- batch:
		default:
			f.cut = true
			m.dropLocked(f)
		}
	}
}
