package proxy

import "golang.org/x/sys/unix"

// How the tcp engine moves bytes: in rounds over the pairs a batch of
// the set's reports touched. A round plans at most one read or write for
// each direction of each pair, makes them all at once (through the ring,
// one system call for the round), then takes their results; a pair that
// moved is planned again in the next round, until none can move. A
// keep-alive request through the proxy is then two rounds of a batch:
// the reads, then the writes.
//
// Requests before answers: a round's operations for the clients'
// direction come before those for the workers', so the workers are
// handed the batch's requests together, their answers come back
// together and reach the clients bunched, and a client woken by one
// finds the others when it looks. Taken in the order epoll gives, wrk
// waited in epoll_wait 0.64 times a request (0.53 against HAProxy) and
// spent 1 µs more CPU a request than against HAProxy; requests first,
// 0.45–0.53 times, and its CPU a request is what HAProxy costs it.

// mover is the engine's state for moving bytes, guarded by its mu.
type mover struct {
	queue, next []*rawPair // the pairs to plan in this round, and in the next
	ops         []uringOp  // a round's operations
	opFlows     []opFlow   // and what each is for
	// batching: reports are being taken, and the pairs they touch wait
	// to be moved together once the batch is read; moving: a round is
	// under way, and a pair queued meanwhile waits for the next.
	batching, moving bool
	// ring is nil until a round first has two operations, or where the
	// kernel allows none: the calls are then made one by one.
	ring      *ring
	ringTried bool // the ring was set up, or could not be
}

type opFlow struct {
	pr *rawPair
	f  *rawFlow
}

// advance moves what can move on pr, with every pair queued with it; the
// caller holds mu.
func (e *tcpEngine) advance(pr *rawPair) {
	e.enqueue(pr)
	if !e.batching && !e.moving {
		e.moveQueued()
	}
}

func (e *tcpEngine) enqueue(pr *rawPair) {
	if !pr.queued && !pr.finished {
		pr.queued = true
		e.queue = append(e.queue, pr)
	}
}

// moveQueued runs rounds until no queued pair can move; the caller holds
// mu.
func (e *tcpEngine) moveQueued() {
	e.moving = true
	defer func() { e.moving = false }()
	for len(e.queue) > 0 {
		pairs := e.queue
		e.queue = e.next[:0]
		for _, pr := range pairs {
			pr.queued = false
		}
		ops, opFlows := e.ops[:0], e.opFlows[:0]
		for _, up := range [2]bool{true, false} {
			for _, pr := range pairs {
				if pr.finished {
					continue
				}
				if pr.up.done && pr.down.done {
					e.finish(pr)
					continue
				}
				f := &pr.down
				if up {
					f = &pr.up
				}
				op, ok, moved := e.plan(pr, f)
				if moved {
					e.enqueue(pr)
				}
				if ok {
					ops, opFlows = append(ops, op), append(opFlows, opFlow{pr, f})
				}
			}
		}
		e.run(ops)
		for i := range ops {
			of := opFlows[i]
			if of.pr.finished {
				continue // another of its operations failed
			}
			moved, failed := e.apply(of.pr, of.f, &ops[i])
			switch {
			case failed:
				e.finish(of.pr)
			case moved:
				e.enqueue(of.pr)
			}
			ops[i] = uringOp{}
		}
		clear(pairs)
		e.ops, e.opFlows, e.next = ops[:0], opFlows[:0], pairs[:0]
		clear(opFlows)
	}
}

// run makes ops: through the ring as one system call, or one by one. The
// ring is set up the first time a round has more than one operation, so
// a proxy that never carries two at once costs no ring.
func (e *tcpEngine) run(ops []uringOp) {
	if len(ops) > 1 && !e.ringTried {
		e.ringTried = true
		e.ring = newRing()
	}
	if len(ops) > 1 && e.ring != nil && !e.ring.broken {
		e.ring.run(ops)
		return
	}
	for i := range ops {
		ops[i].direct()
	}
}

// plan says the read or write f can make now, if any (ok). Without one,
// it passes f's end on when its source ended and all was written
// (moved).
func (e *tcpEngine) plan(pr *rawPair, f *rawFlow) (op uringOp, ok, moved bool) {
	if f.done {
		return op, false, false
	}
	if len(f.head) > 0 || f.off < f.n {
		if f.dst.fd < 0 || f.dst.connecting || !f.dst.writable {
			return op, false, false
		}
		data := f.head
		if len(data) == 0 {
			data = (*f.buf)[f.off:f.n]
		}
		return uringOp{fd: f.dst.fd, send: true, b: data}, true, false
	}
	e.giveBack(f)
	if f.eof {
		if f.dst.fd < 0 || f.dst.connecting {
			return op, false, false // passed on once the server is there
		}
		if pr.t.halfClosed.CompareAndSwap(false, true) {
			rawShutdown(f.dst.fd, unix.SHUT_WR)
		}
		f.done = true
		pr.t.moved.Add(1)
		return op, false, true
	}
	if f.src.fd < 0 || f.src.connecting || !f.src.readable {
		return op, false, false
	}
	f.buf = copyBufs.Get().(*[]byte)
	return uringOp{fd: f.src.fd, b: *f.buf}, true, false
}

// apply takes op's result for f: whether anything moved, and whether a
// socket failed (which ends the pair, as an error on either side of a
// connection does).
func (e *tcpEngine) apply(pr *rawPair, f *rawFlow, op *uringOp) (moved, failed bool) {
	if op.send {
		switch {
		case op.err == unix.EINTR:
			return true, false // again, in the next round
		case op.err == unix.EAGAIN:
			f.dst.writable = false
			return false, false
		case op.err != nil:
			return false, true
		}
		if len(f.head) > 0 {
			f.head = f.head[op.n:]
		} else {
			f.off += op.n
		}
		pr.t.moved.Add(1)
		return true, false
	}
	switch {
	case op.err == unix.EINTR:
		e.giveBack(f)
		return true, false
	case op.err == unix.EAGAIN:
		e.giveBack(f)
		f.src.readable = false
		return false, false
	case op.err != nil:
		return false, true
	case op.n == 0:
		e.giveBack(f)
		f.eof = true
		return true, false
	}
	f.off, f.n = 0, op.n
	pr.t.moved.Add(1)
	if op.n < len(*f.buf) && !f.src.ended {
		f.src.readable = false // emptied; epoll says when more (or an end) comes
	}
	return true, false
}

// giveBack returns f's buffer, empty, to the pool: unless the ring was
// given up with a read under way, which may yet fill it.
func (e *tcpEngine) giveBack(f *rawFlow) {
	if f.buf == nil {
		return
	}
	if e.ring == nil || !e.ring.broken {
		copyBufs.Put(f.buf)
	}
	f.buf, f.off, f.n = nil, 0, 0
}
