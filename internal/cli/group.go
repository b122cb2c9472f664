package cli

import (
	"context"
	"sync"
)

// group runs actors in the manner of oklog/run: each is an execute
// function and an interrupt that makes execute return. Run starts every
// execute, waits for the first to return, interrupts all, and returns once
// every execute has returned, with the first error. A group runs once.
type group struct {
	actors []actor
}

type actor struct {
	execute   func() error
	interrupt func(error)
}

// add registers an actor; its interrupt must make execute return soon,
// and may be called after execute has returned.
func (g *group) add(a actor) { g.actors = append(g.actors, a) }

// untilInterrupted is the actor that runs f until its interrupt cancels
// f's context.
func untilInterrupted(f func(ctx context.Context) error) actor {
	ctx, cancel := context.WithCancel(context.Background())
	return actor{func() error { return f(ctx) }, func(error) { cancel() }}
}

func (g *group) run() error {
	if len(g.actors) == 0 {
		return nil
	}
	errs := make(chan error, len(g.actors))
	var wg sync.WaitGroup
	for _, a := range g.actors {
		wg.Add(1)
		// Owned by run; ends when the actor's execute returns, which its
		// interrupt brings about.
		go func() {
			defer wg.Done()
			errs <- a.execute()
		}()
	}
	first := <-errs
	for _, a := range g.actors {
		a.interrupt(first)
	}
	wg.Wait()
	close(errs)
	if first != nil {
		return first
	}
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
