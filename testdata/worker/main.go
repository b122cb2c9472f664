// Command worker is the test suite's worker program: one binary with a mode
// per behaviour the runner must handle. Tests build it and run it under the
// real runner and the real recluster binary.
package main

import (
	"bufio"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	mode := flag.String("mode", "sleep", "serve | naive | crash | exit | ignoreterm | grandchild | listen | lines | env | fds | sendnotify | closeout | bigline | noready | stopping | sleep")
	after := flag.Duration("after", 0, "delay before the mode's action")
	code := flag.Int("code", 1, "exit code for crash")
	n := flag.Int("n", 10, "lines to print")
	size := flag.Int("size", 100, "bytes per line")
	ready := flag.Bool("ready", false, "tell recluster when ready (NOTIFY_SOCKET, else RECLUSTER_READY_FD)")
	readyFD := flag.Bool("readyfd", false, "tell recluster through RECLUSTER_READY_FD")
	bind := flag.String("bind", "", "serve: bind this address itself instead of taking fd 3")
	once := flag.String("once", "", "stopping: ask only if this file does not exist yet, then create it")
	to := flag.String("to", "", "sendnotify: the notify socket to send -msg to")
	msg := flag.String("msg", "READY=1", "sendnotify: the datagram")
	statusText := flag.String("status", "", "default mode: send STATUS= with this text when ready")
	closeWS := flag.Bool("closews", false, "naive: on SIGTERM, close WebSockets with 1001 and exit")
	flag.Parse()
	id := os.Getenv("WORKER_ID")
	gen := os.Getenv("RECLUSTER_GENERATION")

	switch *mode {
	case "serve":
		serve(*after, *ready, *readyFD, *bind, id, gen)
	case "crash":
		fmt.Printf("worker %s crashing in %s\n", id, *after)
		time.Sleep(*after)
		fmt.Fprintf(os.Stderr, "worker %s: crash with code %d\n", id, *code)
		os.Exit(*code)
	case "exit":
		time.Sleep(*after)
		os.Exit(0)
	case "ignoreterm":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ignoring SIGTERM")
		select {}
	case "grandchild":
		// A child in the same group that also ignores SIGTERM, as servers that
		// fork do.
		signal.Ignore(syscall.SIGTERM)
		cmd := exec.Command(os.Args[0], "-mode", "ignoreterm")
		cmd.Stdout = os.Stdout
		if err := cmd.Start(); err != nil {
			fmt.Println("cannot fork:", err)
			os.Exit(2)
		}
		fmt.Printf("grandchild pid %d\n", cmd.Process.Pid)
		select {}
	case "listen":
		time.Sleep(*after)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Println(err)
			os.Exit(2)
		}
		fmt.Println("listening on", ln.Addr())
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	case "lines":
		// Buffered, as a busy program's output is: the pipe gets big writes.
		// Formatted by hand, so the producer is not what a benchmark measures.
		fill := []byte(strings.Repeat("x", max(*size-len(id)-12, 0)))
		w := bufio.NewWriterSize(os.Stdout, 64<<10)
		buf := make([]byte, 0, *size+32)
		for i := 0; i < *n; i++ {
			buf = append(buf[:0], id...)
			buf = append(buf, ' ')
			buf = appendPadded(buf, i)
			buf = append(buf, ' ')
			buf = append(buf, fill...)
			buf = append(buf, '\n')
			w.Write(buf)
		}
		w.Flush()
		time.Sleep(*after)
	case "env":
		for _, k := range []string{"WORKER_ID", "RECLUSTER_SERVICE", "RECLUSTER_GENERATION", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "FROM_CONFIG"} {
			fmt.Printf("%s=%s\n", k, os.Getenv(k))
		}
		fmt.Printf("PID=%d\n", os.Getpid())
		if *ready {
			notify("READY=1")
		}
		select {}
	case "closeout":
		// Closes its stdout early and lives on, talking on stderr.
		fmt.Println("closing stdout")
		os.Stdout.Close()
		syscall.Close(1)
		fmt.Fprintln(os.Stderr, "stdout closed, still here")
		waitTerm()
	case "bigline":
		// One line of -size bytes, then a marker line.
		w := bufio.NewWriterSize(os.Stdout, 1<<20)
		chunk := []byte(strings.Repeat("x", 1<<16))
		for left := *size; left > 0; left -= len(chunk) {
			w.Write(chunk[:min(len(chunk), left)])
		}
		w.WriteString("\nafter the big line\n")
		w.Flush()
		waitTerm()
	case "sendnotify":
		// A process that is not the worker writes to a worker's socket.
		c, err := net.Dial("unixgram", *to)
		if err != nil {
			fmt.Println(err)
			os.Exit(2)
		}
		c.Write([]byte(*msg))
		c.Close()
	case "naive":
		// An app written the usual way: it binds $PORT itself after a slow
		// boot and handles no signal at all (SIGTERM ends it at once).
		time.Sleep(*after)
		ln, err := net.Listen("tcp", ":"+os.Getenv("PORT"))
		if err != nil {
			fmt.Println(err)
			os.Exit(3)
		}
		fmt.Printf("naive listening on %s\n", ln.Addr())
		ws := &webSockets{gen: gen}
		if *closeWS {
			// Its only signal handling: WebSockets get a clean close
			// (1001, going away) on SIGTERM, and the process ends once
			// they are closed.
			term := make(chan os.Signal, 1)
			signal.Notify(term, syscall.SIGTERM)
			go func() {
				<-term
				ws.closeAll()
				fmt.Println("websockets closed")
				os.Exit(0)
			}()
		}
		http.Serve(ln, naiveHandler(gen, id, ws))
	case "blackhole":
		// Binds $PORT, accepts every connection and never reads, writes
		// nor closes one: a worker wedged with its port open.
		ln, err := net.Listen("tcp", "127.0.0.1:"+os.Getenv("PORT"))
		if err != nil {
			fmt.Println(err)
			os.Exit(3)
		}
		fmt.Printf("blackhole listening on %s\n", ln.Addr())
		var held []net.Conn
		for {
			c, err := ln.Accept()
			if err != nil {
				time.Sleep(10 * time.Millisecond) // out of descriptors: wedged, not dead
				continue
			}
			held = append(held, c)
		}
	case "fds":
		// What each open descriptor points at, one a line, then wait.
		entries, _ := os.ReadDir("/proc/self/fd")
		for _, e := range entries {
			target, _ := os.Readlink("/proc/self/fd/" + e.Name())
			fmt.Printf("fd %s -> %s\n", e.Name(), target)
		}
		fmt.Println("fds listed")
		waitTerm()
	case "noready":
		fmt.Println("never ready")
		select {}
	case "stopping":
		notify("READY=1")
		time.Sleep(*after)
		if _, err := os.Stat(*once); *once == "" || err != nil {
			if *once != "" {
				os.WriteFile(*once, nil, 0o644)
			}
			fmt.Println("asking to be replaced")
			notify("STOPPING=1")
		}
		waitTerm()
	default:
		if *ready {
			notify("READY=1")
		}
		if *statusText != "" {
			notify("STATUS=" + *statusText)
		}
		waitTerm()
	}
}

func waitTerm() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
	<-c
}

// notify speaks sd_notify, or writes a line on the ready fd when there is
// no notify socket.
func notify(msg string) {
	if addr := os.Getenv("NOTIFY_SOCKET"); addr != "" && !readyFDOnly {
		c, err := net.Dial("unixgram", addr)
		if err == nil {
			c.Write([]byte(msg))
			c.Close()
			return
		}
	}
	if fd, err := strconv.Atoi(os.Getenv("RECLUSTER_READY_FD")); err == nil {
		f := os.NewFile(uintptr(fd), "ready")
		f.Write([]byte(msg + "\n"))
	}
}

var readyFDOnly bool

// grown is what /grow holds.
var (
	grownMu sync.Mutex
	grown   [][]byte
)

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// serve answers HTTP on the inherited socket (fd 3) and drains as README
// tells workers to: on SIGTERM, close the listener (never shutdown(2) it:
// the socket is shared), finish every connection already accepted, exit.
func serve(after time.Duration, ready, readyFD bool, bind, id, gen string) {
	readyFDOnly = readyFD
	// Catch the stop signal before accepting anything: its default action
	// would kill the process with accepted connections unanswered.
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	var ln net.Listener
	if bind != "" {
		// The way most tools run servers: each binds the port itself, so
		// the port is closed while no worker runs.
		var err error
		if ln, err = net.Listen("tcp", bind); err != nil {
			fmt.Println(err)
			os.Exit(3)
		}
	} else {
		if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) || os.Getenv("LISTEN_FDS") == "" {
			fmt.Printf("LISTEN_PID=%s but my pid is %d\n", os.Getenv("LISTEN_PID"), os.Getpid())
			os.Exit(3)
		}
		f := os.NewFile(3, "listener")
		var err error
		if ln, err = net.FileListener(f); err != nil {
			fmt.Println("fd 3:", err)
			os.Exit(3)
		}
		f.Close()
	}
	var conns sync.WaitGroup
	var mu sync.Mutex
	tracked := map[net.Conn]bool{}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if ms, err := strconv.Atoi(r.URL.Query().Get("ms")); err == nil {
				fmt.Printf("request in, answering in %d ms\n", ms)
				time.Sleep(time.Duration(ms) * time.Millisecond)
			}
			fmt.Fprintf(w, "gen=%s id=%s pid=%d\n", gen, id, os.Getpid())
		}),
		ConnState: func(c net.Conn, s http.ConnState) {
			mu.Lock()
			defer mu.Unlock()
			switch s {
			case http.StateNew:
				tracked[c] = true
				conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				if tracked[c] {
					delete(tracked, c)
					conns.Done()
				}
			}
		},
	}
	time.Sleep(after)
	served := make(chan struct{})
	go func() {
		srv.Serve(ln)
		close(served)
	}()
	if ready || readyFD {
		notify("READY=1")
	}
	fmt.Printf("serving gen=%s id=%s pid=%d\n", gen, id, os.Getpid())
	<-term
	ln.Close()
	// Serve returns once its accept loop has ended; every connection it
	// accepted has been counted by then (ConnState StateNew runs in that
	// loop). Waiting on conns before that could miss one just accepted.
	<-served
	srv.SetKeepAlivesEnabled(false)
	conns.Wait()
	fmt.Printf("drained gen=%s id=%s\n", gen, id)
}

// appendPadded appends i as nine digits.
func appendPadded(b []byte, i int) []byte {
	var d [9]byte
	for k := 8; k >= 0; k-- {
		d[k] = byte('0' + i%10)
		i /= 10
	}
	return append(b, d[:]...)
}

// naiveHandler is the naive app's: a page, an upload that hashes its body,
// a download of a pattern, WebSockets, a health check and memory growth.
func naiveHandler(gen, id string, ws *webSockets) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/upload":
			// The sha256 of the body, read as slowly as it comes.
			h := sha256.New()
			n, err := io.Copy(h, r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			fmt.Fprintf(w, "%d %x gen=%s\n", n, h.Sum(nil), gen)
			return
		case "/download":
			// bytes=N of a pattern the client can check.
			n, _ := strconv.Atoi(r.URL.Query().Get("bytes"))
			w.Header().Set("Content-Length", strconv.Itoa(n))
			writePattern(w, n)
			return
		case "/ws":
			ws.serve(w, r)
			return
		case "/healthz":
			// Sick while $SICK_DIR holds "all" or this pid's name.
			if dir := os.Getenv("SICK_DIR"); dir != "" && (exists(dir+"/all") || exists(fmt.Sprintf("%s/%d", dir, os.Getpid()))) {
				http.Error(w, "sick", http.StatusServiceUnavailable)
				return
			}
			fmt.Fprintln(w, "ok")
			return
		case "/grow":
			// Holds mb more MiB, every page touched.
			mb, _ := strconv.Atoi(r.URL.Query().Get("mb"))
			b := make([]byte, mb<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			grownMu.Lock()
			grown = append(grown, b)
			grownMu.Unlock()
			fmt.Fprintf(w, "grew %d MiB\n", mb)
			return
		}
		if ms, err := strconv.Atoi(r.URL.Query().Get("ms")); err == nil {
			fmt.Printf("request in, answering in %d ms\n", ms)
			time.Sleep(time.Duration(ms) * time.Millisecond)
		}
		fmt.Fprintf(w, "gen=%s id=%s pid=%d\n", gen, id, os.Getpid())
	})
}
