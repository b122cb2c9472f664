package proxy

import (
	"testing"
	"testing/synctest"
	"time"
)

// TestGoPoolReusesItsGoroutines: a function given while a goroutine of
// the pool waits runs on that goroutine; one given while all are busy
// gets a new goroutine; a goroutine left without work ends after idle.
func TestGoPoolReusesItsGoroutines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newGoPool(time.Second)
		ran := make(chan int, 3)
		p.Go(func() { ran <- 1 })
		<-ran
		synctest.Wait() // the goroutine waits for more work
		p.Go(func() { ran <- 2 })
		<-ran
		synctest.Wait()
		if got := p.started.Load(); got != 1 {
			t.Fatalf("two functions one after the other started %d goroutines, want 1", got)
		}

		release := make(chan struct{})
		p.Go(func() { <-release; ran <- 3 })
		synctest.Wait() // the first is busy
		p.Go(func() { ran <- 4 })
		<-ran
		if got := p.started.Load(); got != 2 {
			t.Fatalf("a function given while the only goroutine was busy: %d goroutines started, want 2", got)
		}
		close(release)
		<-ran

		time.Sleep(2 * time.Second) // fake time: past the idle limit
		synctest.Wait()
		if got := p.running.Load(); got != 0 {
			t.Fatalf("%d goroutines still running after the idle limit", got)
		}
	})
}
