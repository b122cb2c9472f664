// Command go is a recluster worker in Go: it takes the socket recluster
// passes as fd 3, says READY=1 on NOTIFY_SOCKET, and drains on SIGTERM.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
)

func main() {
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
		fmt.Fprintln(os.Stderr, "no socket from recluster (LISTEN_PID is not my pid)")
		os.Exit(1)
	}
	// Catch SIGTERM before accepting anything: its default action would end
	// the process with connections it accepted unanswered.
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)

	f := os.NewFile(3, "listener")
	ln, err := net.FileListener(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	f.Close()

	// Track every connection from the moment it is accepted. On SIGTERM the
	// server stops accepting and waits for each to finish. http.Server's own
	// Shutdown would close a connection whose first request it has not read
	// yet (golang/go#75591), failing a request the kernel already accepted.
	var conns sync.WaitGroup
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s from go worker %s (generation %s, pid %d)\n",
				os.Getenv("GREETING"), os.Getenv("WORKER_ID"), os.Getenv("RECLUSTER_GENERATION"), os.Getpid())
		}),
		ConnState: func(c net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				conns.Done()
			}
		},
	}
	served := make(chan struct{})
	go func() {
		srv.Serve(ln)
		close(served)
	}()
	notify("READY=1")
	fmt.Printf("go worker %s ready\n", os.Getenv("WORKER_ID"))

	<-term
	ln.Close() // close, never shutdown(2): the socket is shared
	// Serve returns once its accept loop has ended, and every connection it
	// accepted has been counted (ConnState runs StateNew in that loop):
	// waiting on conns before that could miss one just accepted.
	<-served
	srv.SetKeepAlivesEnabled(false) // each connection closes after its response
	conns.Wait()
}

func notify(msg string) {
	if addr := os.Getenv("NOTIFY_SOCKET"); addr != "" {
		if c, err := net.Dial("unixgram", addr); err == nil {
			c.Write([]byte(msg))
			c.Close()
		}
	}
}
