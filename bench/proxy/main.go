// Command proxy compares recluster's proxy with HAProxy and nginx in front
// of the same app, in one run on one machine: 4 Node workers
// (bench/peers/server.js, binding their own ports), wrk -t2 -c32 for each
// cell (tcp or http, one request per connection or keep-alive) after 3 s
// of the same load unmeasured, the three proxies alternated round after
// round. HAProxy and nginx start for each cell in front of 4 workers that
// run the whole time; recluster's `up` also runs the whole time, with a
// service of 4 such workers behind each mode, so that every proxy's
// workers are as warm (Node's JIT) in every cell. CPU per request is the proxy process's own utime+stime over the
// run (recluster: `up`, whose workers are not counted; nginx: its master
// and single worker) divided by the requests. It installs haproxy, nginx with the stream module and wrk from
// Debian when they are missing (as root), builds recluster, and prints a
// Markdown table.
//
//	go run ./bench/proxy -rounds 3 -duration 6s
package main

import (
	"flag"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/recluster/recluster/internal/proc"
)

type cell struct {
	protocol  string // tcp or http
	keepAlive bool
}

func (c cell) String() string {
	if c.keepAlive {
		return c.protocol + ", keep-alive"
	}
	return c.protocol + ", one request per connection"
}

// result is one proxy's run of one cell.
type result struct {
	requests int
	p99      time.Duration
	cpu      time.Duration
	// What else ran, for the per-round line: the proxy's workers' and
	// wrk's CPU, and the share of the machine left idle. Two proxies of
	// the same CPU a request can still differ in requests by what they
	// cost the others.
	workersCPU, wrkCPU time.Duration
	idle               float64
}

func (r result) cpuPerRequest() time.Duration { return r.perRequest(r.cpu) }

// perRequest is cpu, spent over r's run, a request.
func (r result) perRequest(cpu time.Duration) time.Duration {
	if r.requests == 0 {
		return 0
	}
	return cpu / time.Duration(r.requests)
}

func micros(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }

var proxies = []string{"haproxy", "nginx", "recluster"}

func main() {
	rounds := flag.Int("rounds", 2, "rounds; each runs every cell on every proxy")
	duration := flag.Duration("duration", 6*time.Second, "wrk's run per cell")
	only := flag.String("only", "", "run only this proxy (haproxy, nginx or recluster), to profile it")
	cells := []cell{{"tcp", false}, {"http", false}, {"tcp", true}, {"http", true}}
	var onlyCells []cell
	flag.Func("cell", `run only this cell ("tcp, keep-alive" and so on; more than once for more cells), for more rounds of it`, func(name string) error {
		for _, c := range cells {
			if c.String() == name {
				onlyCells = append(onlyCells, c)
				return nil
			}
		}
		return fmt.Errorf("no such cell; the cells are %q, %q, %q and %q", cells[0], cells[1], cells[2], cells[3])
	})
	flag.Parse()
	if onlyCells != nil {
		cells = onlyCells
	}
	if err := ensureTools(); err != nil {
		fail(err)
	}
	work, err := os.MkdirTemp("", "recluster-bench-proxy-")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(work)
	bin := filepath.Join(work, "recluster")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/recluster").CombinedOutput(); err != nil {
		fail(fmt.Errorf("building recluster: %v\n%s", err, out))
	}
	server, _ := filepath.Abs("bench/peers/server.js")
	var backends []string
	var backendPids []int
	for i := 0; i < 4; i++ {
		port := freePort()
		cmd := exec.Command("node", server)
		cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port))
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			fail(err)
		}
		defer cmd.Process.Kill()
		backendPids = append(backendPids, cmd.Process.Pid)
		addr := "127.0.0.1:" + strconv.Itoa(port)
		waitListening(addr)
		backends = append(backends, addr)
	}
	var up *reclusterUp
	if *only == "" || *only == "recluster" {
		if up, err = startRecluster(bin, server, work, len(backends)); err != nil {
			fail(err)
		}
		defer proc.StopGroup(up.cmd)
	}
	results := map[cell]map[string][]result{}
	for _, c := range cells {
		results[c] = map[string][]result{}
	}
	for round := 0; round < *rounds; round++ {
		for _, c := range cells {
			order := rotate(proxies, round)
			for _, name := range order {
				if *only != "" && name != *only {
					continue
				}
				r, err := runCell(name, c, backends, backendPids, up, work, *duration)
				if err != nil {
					fail(fmt.Errorf("%s, %s: %w", name, c, err))
				}
				fmt.Fprintf(os.Stderr, "round %d, %s, %s: %d requests, p99 %s, %.1f µs CPU a request (its workers %.1f, wrk %.1f), %.1f %% idle\n",
					round+1, c, name, r.requests, r.p99, micros(r.cpuPerRequest()), micros(r.perRequest(r.workersCPU)), micros(r.perRequest(r.wrkCPU)), 100*r.idle)
				results[c][name] = append(results[c][name], r)
			}
		}
	}
	printTable(cells, results, *duration)
}

func rotate(s []string, n int) []string {
	n %= len(s)
	return append(append([]string{}, s[n:]...), s[:n]...)
}

// reclusterUp is the one `up` of the run: a service behind each mode.
type reclusterUp struct {
	cmd   *exec.Cmd
	addrs map[string]string // by protocol
}

// startRecluster starts `up` with a service of n Node workers behind a
// tcp proxy and one behind an http proxy, and waits until both answer.
func startRecluster(bin, server, work string, n int) (*reclusterUp, error) {
	dir := filepath.Join(work, "up")
	os.MkdirAll(dir, 0o755)
	up := &reclusterUp{addrs: map[string]string{}}
	var cfg strings.Builder
	cfg.WriteString("services:\n")
	for _, protocol := range []string{"tcp", "http"} {
		up.addrs[protocol] = "127.0.0.1:" + strconv.Itoa(freePort())
		fmt.Fprintf(&cfg, "  %s:\n    command: node %s\n    workers: %d\n    proxy: {address: \"%s\", protocol: %s}\n",
			protocol, server, n, up.addrs[protocol], protocol)
	}
	os.WriteFile(filepath.Join(dir, "recluster.yml"), []byte(cfg.String()), 0o644)
	up.cmd = exec.Command(bin, "up")
	up.cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+dir, "NO_COLOR=1")
	up.cmd.Dir = dir
	up.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logf, err := os.Create(filepath.Join(dir, "out.log"))
	if err != nil {
		return nil, err
	}
	up.cmd.Stdout, up.cmd.Stderr = logf, logf
	if err := up.cmd.Start(); err != nil {
		return nil, err
	}
	for _, addr := range up.addrs {
		if err := waitAnswering(addr, true); err != nil {
			proc.StopGroup(up.cmd)
			out, _ := os.ReadFile(filepath.Join(dir, "out.log"))
			return nil, fmt.Errorf("recluster: %v\n%s", err, out)
		}
	}
	return up, nil
}

// runCell runs wrk through one proxy for c: HAProxy or nginx started for
// the cell, or the run's `up`.
func runCell(name string, c cell, backends []string, backendPids []int, up *reclusterUp, work string, d time.Duration) (result, error) {
	port := freePort()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	dir := filepath.Join(work, fmt.Sprintf("%s-%s-%v", name, c.protocol, c.keepAlive))
	os.MkdirAll(dir, 0o755)
	var cmd *exec.Cmd
	switch name {
	case "haproxy":
		cfg := filepath.Join(dir, "haproxy.cfg")
		os.WriteFile(cfg, []byte(haproxyConfig(c.protocol, port, backends)), 0o644)
		cmd = exec.Command("haproxy", "-db", "-f", cfg)
	case "nginx":
		cfg := filepath.Join(dir, "nginx.conf")
		os.WriteFile(cfg, []byte(nginxConfig(c.protocol, port, backends, dir)), 0o644)
		cmd = exec.Command("nginx", "-p", dir, "-c", cfg, "-e", "stderr")
	case "recluster":
		cmd, addr = up.cmd, up.addrs[c.protocol]
	}
	if name != "recluster" {
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		logf, _ := os.Create(filepath.Join(dir, "out.log"))
		defer logf.Close()
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			return result{}, err
		}
		defer proc.StopGroup(cmd)
		if err := waitAnswering(addr, false); err != nil {
			out, _ := os.ReadFile(filepath.Join(dir, "out.log"))
			return result{}, fmt.Errorf("%v\n%s", err, out)
		}
	}
	args := []string{"-t2", "-c32", "--latency"}
	if !c.keepAlive {
		args = append(args, "-H", "Connection: close")
	}
	// Unmeasured, first: HAProxy's and nginx's first allocations, and the
	// connections every proxy keeps to its workers, warm up here.
	exec.Command("wrk", append(args, "-d"+warmUp.String(), "http://"+addr+"/")...).Run()
	pids := proxyPids(name, cmd.Process.Pid)
	workers := backendPids
	if name == "recluster" {
		workers = serviceWorkers(cmd.Process.Pid, c.protocol)
	}
	before, workersBefore := cpuOf(pids), cpuOf(workers)
	busyBefore, idleBefore := machineTicks()
	wrk := exec.Command("wrk", append(args, "-d"+d.String(), "http://"+addr+"/")...)
	out, err := wrk.CombinedOutput()
	cpu, workersCPU := cpuOf(pids)-before, cpuOf(workers)-workersBefore
	busy, idle := machineTicks()
	if err != nil {
		return result{}, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	r, err := parseWrk(string(out))
	r.cpu, r.workersCPU = cpu, workersCPU
	r.wrkCPU = wrk.ProcessState.UserTime() + wrk.ProcessState.SystemTime()
	if total := busy - busyBefore + idle - idleBefore; total > 0 {
		r.idle = (idle - idleBefore) / total
	}
	return r, err
}

// serviceWorkers are the processes `up` (pid) runs for service, told by
// the RECLUSTER_SERVICE it gives them.
func serviceWorkers(pid int, service string) []int {
	var pids []int
	for _, p := range proc.All() {
		if p.PPid != pid {
			continue
		}
		env, _ := os.ReadFile("/proc/" + strconv.Itoa(p.Pid) + "/environ")
		for _, kv := range strings.Split(string(env), "\x00") {
			if kv == "RECLUSTER_SERVICE="+service {
				pids = append(pids, p.Pid)
			}
		}
	}
	return pids
}

// machineTicks are the clock ticks all processors spent busy and idle
// since boot, by /proc/stat's first line.
func machineTicks() (busy, idle float64) {
	data, _ := os.ReadFile("/proc/stat")
	line, _, _ := strings.Cut(string(data), "\n")
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseFloat(f, 64)
		switch i {
		case 3, 4: // idle, iowait
			idle += v
		case 8, 9: // guest time, counted in user already
		default:
			busy += v
		}
	}
	return busy, idle
}

// warmUp is the unmeasured load before each measured run.
const warmUp = 3 * time.Second

func haproxyConfig(protocol string, port int, backends []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "global\n  nbthread 1\n  maxconn 8000\ndefaults\n  mode %s\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n", protocol)
	fmt.Fprintf(&b, "frontend f\n  bind 127.0.0.1:%d\n  default_backend b\nbackend b\n  balance leastconn\n", port)
	for i, a := range backends {
		fmt.Fprintf(&b, "  server s%d %s\n", i, a)
	}
	return b.String()
}

func nginxConfig(protocol string, port int, backends []string, dir string) string {
	var servers strings.Builder
	for _, a := range backends {
		fmt.Fprintf(&servers, "    server %s;\n", a)
	}
	head := fmt.Sprintf("load_module /usr/lib/nginx/modules/ngx_stream_module.so;\ndaemon off;\nworker_processes 1;\npid %s/nginx.pid;\nerror_log stderr;\nevents { worker_connections 20000; }\n", dir)
	if protocol == "tcp" {
		return head + fmt.Sprintf("stream {\n  upstream b {\n    least_conn;\n%s  }\n  server { listen 127.0.0.1:%d; proxy_pass b; }\n}\n", servers.String(), port)
	}
	return head + fmt.Sprintf(`http {
  access_log off;
  client_body_temp_path %[1]s; proxy_temp_path %[1]s; fastcgi_temp_path %[1]s; uwsgi_temp_path %[1]s; scgi_temp_path %[1]s;
  upstream b {
    least_conn;
%[2]s    keepalive 64;
  }
  server {
    listen 127.0.0.1:%[3]d;
    location / { proxy_pass http://b; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
`, dir, servers.String(), port)
}

// proxyPids are the processes whose CPU is the proxy's.
func proxyPids(name string, pid int) []int {
	if name != "nginx" {
		return []int{pid} // recluster: up itself, not its workers
	}
	pids := []int{pid}
	for _, p := range proc.All() {
		if p.PPid == pid { // its worker
			pids = append(pids, p.Pid)
		}
	}
	return pids
}

func cpuOf(pids []int) time.Duration {
	var seconds float64
	for _, p := range pids {
		seconds += proc.CPUSeconds(p)
	}
	return time.Duration(seconds * float64(time.Second))
}

var (
	wrkRequests = regexp.MustCompile(`(\d+) requests in`)
	wrkP99      = regexp.MustCompile(`99%\s+([\d.]+)(us|ms|s)`)
	wrkErrors   = regexp.MustCompile(`Socket errors: (.*)|Non-2xx or 3xx responses: (\d+)`)
)

func parseWrk(out string) (result, error) {
	m := wrkRequests.FindStringSubmatch(out)
	if m == nil {
		return result{}, fmt.Errorf("no request count in wrk's output:\n%s", out)
	}
	var r result
	r.requests, _ = strconv.Atoi(m[1])
	if m := wrkP99.FindStringSubmatch(out); m != nil {
		v, _ := strconv.ParseFloat(m[1], 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[m[2]]
		r.p99 = time.Duration(v * float64(unit))
	}
	if e := wrkErrors.FindString(out); e != "" {
		fmt.Fprintf(os.Stderr, "  wrk: %s\n", e)
	}
	return r, nil
}

func printTable(cells []cell, results map[cell]map[string][]result, d time.Duration) {
	fmt.Printf("| cell | HAProxy req/%s (CPU/req, p99) | nginx | recluster | recluster / HAProxy req, CPU | req by round |\n|---|---|---|---|---|---|\n", d)
	for _, c := range cells {
		row := []string{c.String()}
		for _, name := range proxies {
			row = append(row, span(results[c][name]))
		}
		ratio, byRound := "–", "–"
		if h, r := results[c]["haproxy"], results[c]["recluster"]; len(h) > 0 && len(r) > 0 {
			ratio = fmt.Sprintf("%.2f, %.1f×", float64(mean(r, reqs))/float64(mean(h, reqs)), float64(mean(r, cpuReq))/float64(mean(h, cpuReq)))
			byRound = roundRatios(h, r)
		}
		row = append(row, ratio, byRound)
		fmt.Printf("| %s |\n", strings.Join(row, " | "))
	}
}

// roundRatios is recluster's requests over HAProxy's, round by round:
// the machine's speed drifts by a fifth over minutes here, and a round
// runs both within a minute. After them, their geometric mean and its 95 %
// interval: a mean of 1.03 whose interval holds 1 is parity, not a lead.
func roundRatios(h, r []result) string {
	var out []string
	var logs []float64
	for i := range min(len(h), len(r)) {
		if h[i].requests > 0 && r[i].requests > 0 {
			ratio := float64(r[i].requests) / float64(h[i].requests)
			out = append(out, fmt.Sprintf("%.2f", ratio))
			logs = append(logs, math.Log(ratio))
		}
	}
	if m, lo, hi, ok := meanInterval(logs); ok {
		out = append(out, fmt.Sprintf("(mean %.2f, 95 %%: %.2f–%.2f)", math.Exp(m), math.Exp(lo), math.Exp(hi)))
	}
	return strings.Join(out, " ")
}

// meanInterval is the mean of v and its 95 % interval by Student's t,
// given at least two values.
func meanInterval(v []float64) (mean, lo, hi float64, ok bool) {
	n := len(v)
	if n < 2 {
		return 0, 0, 0, false
	}
	for _, x := range v {
		mean += x
	}
	mean /= float64(n)
	var ss float64
	for _, x := range v {
		ss += (x - mean) * (x - mean)
	}
	half := tQuantile975(n-1) * math.Sqrt(ss/float64(n-1)/float64(n))
	return mean, mean - half, mean + half, true
}

// tQuantile975 is Student's t at 97.5 % for df degrees of freedom.
func tQuantile975(df int) float64 {
	table := []float64{12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23, 2.20, 2.18, 2.16, 2.14, 2.13, 2.12, 2.11, 2.10, 2.09, 2.09}
	switch {
	case df <= len(table):
		return table[df-1]
	case df < 30:
		return 2.06
	case df < 60:
		return 2.02
	}
	return 1.98
}

func reqs(r result) int64   { return int64(r.requests) }
func cpuReq(r result) int64 { return int64(r.cpuPerRequest()) }

func mean(rs []result, f func(result) int64) int64 {
	var sum int64
	for _, r := range rs {
		sum += f(r)
	}
	return sum / int64(len(rs))
}

// span is a proxy's runs of a cell: requests, CPU µs a request and p99,
// each as its least–most over the rounds.
func span(rs []result) string {
	if len(rs) == 0 {
		return "–"
	}
	rng := func(f func(result) float64, format string) string {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		sort.Float64s(v)
		if fmt.Sprintf(format, v[0]) == fmt.Sprintf(format, v[len(v)-1]) {
			return fmt.Sprintf(format, v[0])
		}
		return fmt.Sprintf(format+"–"+format, v[0], v[len(v)-1])
	}
	return fmt.Sprintf("%s (%s µs, %s ms)", rng(func(r result) float64 { return float64(r.requests) }, "%.0f"),
		rng(func(r result) float64 { return micros(r.cpuPerRequest()) }, "%.1f"),
		rng(func(r result) float64 { return float64(r.p99.Microseconds()) / 1000 }, "%.1f"))
}

// ensureTools installs what the comparison needs from Debian, as root.
func ensureTools() error {
	var missing []string
	for tool, pkg := range map[string]string{"haproxy": "haproxy", "nginx": "nginx-light", "wrk": "wrk", "node": "nodejs"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, pkg)
		}
	}
	if _, err := os.Stat("/usr/lib/nginx/modules/ngx_stream_module.so"); err != nil {
		missing = append(missing, "libnginx-mod-stream")
	}
	if len(missing) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("missing %s; install them (apt-get install %s) or run as root", strings.Join(missing, ", "), strings.Join(missing, " "))
	}
	cmd := exec.Command("sh", "-c", "apt-get install -y "+strings.Join(missing, " ")+" || (apt-get update && apt-get install -y "+strings.Join(missing, " ")+")")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}

func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitListening(addr string) {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
	}
	fail(fmt.Errorf("nothing listens on %s", addr))
}

// waitAnswering waits until a request through addr is answered: for
// recluster, once its workers are ready behind the proxy.
func waitAnswering(addr string, slow bool) error {
	limit := 10 * time.Second
	if slow {
		limit = 30 * time.Second
	}
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			continue
		}
		c.SetDeadline(time.Now().Add(2 * time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		c.Close()
		if strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
			return nil
		}
	}
	return fmt.Errorf("%s does not answer", addr)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench/proxy:", err)
	os.Exit(1)
}
