package runner_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"path/filepath"

	"github.com/recluster/recluster/config"
	"github.com/recluster/recluster/runner"
)

// A service described in a file is run as a cluster of workers, scaled,
// reloaded with zero downtime (a new generation starts beside the old
// one, which stops once the new one is ready) and stopped.
func Example() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "recluster.yml")
	os.WriteFile(file, []byte(`
services:
  web:
    command: sleep 600
    workers: 2
`), 0o644)
	cfg, err := config.Load(file)
	if err != nil {
		log.Fatal(err)
	}
	m, err := runner.New(cfg, runner.Options{})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- m.Run(ctx, nil) }()
	<-m.Ready()
	show(m)

	if err := m.Scale(ctx, map[string]int{"web": 3}); err != nil {
		log.Fatal(err)
	}
	show(m)

	if _, err := m.Reload(ctx, []string{"web"}); err != nil {
		log.Fatal(err)
	}
	show(m)

	stop()
	fmt.Println("stopped:", <-ran)
	// Output:
	// web: generation 1, 2 ready
	// web: generation 1, 3 ready
	// web: generation 2, 3 ready
	// stopped: <nil>
}

// A service behind recluster's proxy: each worker binds its own $PORT,
// the proxy owns the public address, and a reload moves the traffic to
// the new generation before the old one stops, so no request fails.
func Example_proxy() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "recluster.yml")
	os.WriteFile(file, []byte(`
services:
  web:
    command: python3 -m http.server --bind 127.0.0.1 $PORT
    workers: 2
    proxy: {address: "127.0.0.1:0", protocol: http}
`), 0o644)
	cfg, err := config.Load(file)
	if err != nil {
		log.Fatal(err)
	}
	m, err := runner.New(cfg, runner.Options{})
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- m.Run(ctx, nil) }()
	<-m.Ready()
	all, _ := m.Status(ctx)
	url := all[0].Proxy + "/" // http://127.0.0.1:PORT/
	get(url)

	if _, err := m.Reload(ctx, nil); err != nil {
		log.Fatal(err)
	}
	show(m)
	get(url)

	stop()
	<-ran
	// Output:
	// GET / 200 OK
	// web: generation 2, 2 ready
	// GET / 200 OK
}

func get(url string) {
	resp, err := http.Get(url)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println("GET /", resp.Status)
}

// show prints each service's generation and ready workers.
func show(m *runner.Manager) {
	all, err := m.Status(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	for _, s := range all {
		fmt.Printf("%s: generation %d, %d ready\n", s.Name, s.Generation, ready(s))
	}
}

func ready(s runner.ServiceStatus) int {
	n := 0
	for _, w := range s.Workers {
		if w.State == runner.Ready {
			n++
		}
	}
	return n
}
