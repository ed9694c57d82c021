// Command bench runs edgewise's side-by-side benchmarks against the peer a user
// would pick instead, in the same run on the same machine, and prints a table.
//
// Registrar: authenticated REGISTER throughput (REGISTER → 401 → REGISTER with
// digest → 200, distinct users) against `edgewise serve` and against Kamailio
// configured as an equivalent registrar (test/bench/kamailio.cfg), both driven
// by the same SIPp scenario (test/sipp/register.xml). Rates are stepped to find
// each server's knee, then the best clean rate is held for a long steady run,
// because sipgo-based servers pay for completed transactions only after Timer J
// (32 s) — a short run hides that cost.
//
// Everything listens on 127.0.0.1; every SIPp run is bounded by -m and a timeout.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	var (
		out      = flag.String("out", "bench-results", "directory for the results tables")
		suites   = flag.String("suites", "registrar,failover,steady,token,relay,calls,webrtc,flood", "comma-separated suites to run")
		users    = flag.Int("users", 20000, "registrar: distinct users (AORs) registered")
		stepDur  = flag.Duration("step", 15*time.Second, "registrar: duration of each rate step")
		steady   = flag.Duration("steady", 60*time.Second, "registrar: duration of the steady run at the best clean rate")
		ratesArg = flag.String("rates", "6000,10000,14000,18000,22000", "registrar: REGISTER rates (per second) to step through")
		only     = flag.String("only", "", "registrar: run only this server (edgewise|kamailio)")
		window   = flag.Duration("window", 330*time.Second, "steady: measuring window (≥ half the 600 s expiry, so refreshes are in it)")
		callRate = flag.String("call-rates", "100,200,400,600,800,1000,1200", "calls: offered call setup rates (per second) to step through")
		callStep = flag.Duration("call-step", 10*time.Second, "calls: length of each rate step (calls offered = rate × step)")
		callHold = flag.Duration("call-hold", time.Second, "calls: how long each short call stays up before BYE")
		memCalls = flag.Int("call-mem", 1000, "calls: concurrent calls held for the memory-per-call figure")
		memHold  = flag.Duration("call-mem-hold", 20*time.Second, "calls: how long those calls stay up")
		callRuns = flag.Int("call-runs", 3, "calls: repetitions (fresh processes each); the table gives medians")
	)
	flag.Parse()
	log.SetFlags(0)

	repo, err := repoRoot()
	if err != nil {
		log.Fatal(err)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}
	for _, suite := range strings.Split(*suites, ",") {
		var table string
		var err error
		switch strings.TrimSpace(suite) {
		case "registrar":
			table, err = registrarSuite(repo, *users, *ratesArg, *stepDur, *steady, *only)
		case "failover":
			table, err = failoverSuite()
		case "steady":
			table, err = steadySuite(repo, *window)
		case "token":
			table, err = tokenSuite(repo)
		case "relay":
			table, err = relaySuite(repo)
		case "webrtc":
			table, err = webrtcSuite(repo)
		case "flood":
			table, err = floodSuite(repo)
		case "calls":
			var rates []int
			if rates, err = parseRates(*callRate); err == nil {
				table, err = callsSuite(repo, callsOptions{rates: rates, step: *callStep, hold: *callHold,
					memCalls: *memCalls, memHold: *memHold, runs: *callRuns})
			}
		default:
			err = fmt.Errorf("unknown suite %q", suite)
		}
		if err != nil {
			log.Fatalf("%s: %v", suite, err)
		}
		fmt.Print(table)
		if err := os.WriteFile(filepath.Join(*out, strings.TrimSpace(suite)+".txt"), []byte(table), 0o644); err != nil {
			log.Fatal(err)
		}
	}
}

// registrarSuite measures authenticated REGISTER throughput of edgewise and
// Kamailio in the same run and prints both with their ratio.
func registrarSuite(repo string, users int, ratesArg string, stepDur, steady time.Duration, only string) (string, error) {
	rates, err := parseRates(ratesArg)
	if err != nil {
		return "", err
	}
	work, err := os.MkdirTemp("", "edgewise-bench")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	usersCSV := filepath.Join(work, "users.csv")
	if err := writeUsers(usersCSV, users); err != nil {
		return "", err
	}
	// Addresses of their own, so a Kamailio or edgewise left on the usual
	// ports by something else does not answer in their place.
	servers := []server{
		&edgewiseServer{repo: repo, work: work, users: users, addr: "127.0.9.1:5080", admin: "127.0.9.1:9080"},
		&kamailioServer{repo: repo, work: work, addr: "127.0.9.2:5070", children: 4},
	}
	var results []result
	for _, s := range servers {
		if only != "" && s.name() != only {
			continue
		}
		r, err := benchRegistrar(s, repo, usersCSV, rates, stepDur, steady)
		if err != nil {
			return "", fmt.Errorf("%s: %w", s.name(), err)
		}
		results = append(results, r)
	}
	return render(results, users, stepDur, steady), nil
}

// server is one registrar under test.
type server interface {
	name() string
	start() error
	stop()
	target() string
	pids() []int // every process whose CPU counts
}

// step is one SIPp run at a fixed offered rate.
type step struct {
	rate       int
	dur        time.Duration
	ok, failed int
	retrans    int
	elapsed    time.Duration
	cpu        time.Duration // server CPU (user+sys) during the run
	rssKB      int           // server RSS after the run
}

// clean: under 0.1 % failed, and the offered rate was kept up — a server that
// answers everything but falls behind (the run stretches) is past its knee.
func (s step) clean() bool {
	total := s.ok + s.failed
	return total > 0 && float64(s.failed) < 0.001*float64(total) &&
		float64(s.ok) >= 0.98*float64(s.rate)*s.dur.Seconds() &&
		s.achieved() >= 0.95*float64(s.rate)
}

func (s step) achieved() float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return float64(s.ok) / s.elapsed.Seconds()
}

type result struct {
	server string
	steps  []step
	steady *step
}

// best returns the highest clean step.
func (r result) best() (step, bool) {
	var b step
	found := false
	for _, s := range r.steps {
		if s.clean() && s.rate > b.rate {
			b, found = s, true
		}
	}
	return b, found
}

func benchRegistrar(s server, repo, usersCSV string, rates []int, stepDur, steadyDur time.Duration) (result, error) {
	log.Printf("== %s", s.name())
	if err := s.start(); err != nil {
		return result{}, err
	}
	defer s.stop()
	r := result{server: s.name()}
	for _, rate := range rates {
		st, err := runSIPp(s, repo, usersCSV, rate, stepDur)
		if err != nil {
			return r, err
		}
		log.Printf("   %6d/s offered: %d ok, %d failed, %d retransmissions, %.0f/s achieved, cpu %v",
			rate, st.ok, st.failed, st.retrans, st.achieved(), st.cpu.Round(time.Millisecond))
		r.steps = append(r.steps, st)
		if !st.clean() && st.failed > st.ok/2 {
			break // far past the knee; higher rates only collapse further
		}
		// Let retransmissions and timers of the last step drain.
		time.Sleep(3 * time.Second)
	}
	if b, ok := r.best(); ok && steadyDur > 0 {
		time.Sleep(3 * time.Second)
		st, err := runSIPp(s, repo, usersCSV, b.rate, steadyDur)
		if err != nil {
			return r, err
		}
		log.Printf("   steady %d/s for %v: %d ok, %d failed, %.0f/s achieved, rss %d KB",
			b.rate, steadyDur, st.ok, st.failed, st.achieved(), st.rssKB)
		r.steady = &st
	}
	return r, nil
}

var (
	reSuccess = regexp.MustCompile(`Successful call\s*\|\s*\d+\s*\|\s*(\d+)`)
	reFailed  = regexp.MustCompile(`Failed call\s*\|\s*\d+\s*\|\s*(\d+)`)
	reRetrans = regexp.MustCompile(`Retransmissions\s*\|\s*\d+\s*\|\s*(\d+)`)
)

func runSIPp(s server, repo, usersCSV string, rate int, dur time.Duration) (step, error) {
	st := step{rate: rate, dur: dur}
	calls := int(float64(rate) * dur.Seconds())
	cpu0 := cpuTime(s.pids())
	ctx, cancel := context.WithTimeout(context.Background(), dur+60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sipp",
		"-sf", filepath.Join(repo, "test", "sipp", "register.xml"),
		"-inf", usersCSV, "-i", "127.0.9.3",
		"-r", strconv.Itoa(rate), "-m", strconv.Itoa(calls),
		"-l", strconv.Itoa(rate*2),
		"-buff_size", "4194304", "-max_recv_loops", "10000",
		"-timeout", strconv.Itoa(int(dur.Seconds())+45)+"s",
		"-nostdin", s.target())
	cmd.Dir = filepath.Dir(usersCSV)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	st.elapsed = time.Since(start)
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return st, fmt.Errorf("sipp: %w", err)
	}
	st.cpu = cpuTime(s.pids()) - cpu0
	st.rssKB = rss(s.pids())
	text := string(out)
	st.ok = lastInt(reSuccess, text)
	st.failed = lastInt(reFailed, text)
	st.retrans = lastInt(reRetrans, text)
	if st.ok+st.failed == 0 {
		return st, fmt.Errorf("sipp printed no statistics:\n%s", text)
	}
	return st, nil
}

func lastInt(re *regexp.Regexp, text string) int {
	m := re.FindAllStringSubmatch(text, -1)
	if len(m) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(m[len(m)-1][1])
	return n
}

// cpuTime sums user+system time of the processes, from /proc.
func cpuTime(pids []int) time.Duration {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses and may hold spaces.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + s
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ is 100 on Linux
}

func rss(pids []int) int {
	total := 0
	for _, pid := range pids {
		f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
				n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
				total += n
			}
		}
		f.Close()
	}
	return total
}

func render(results []result, users int, stepDur, steadyDur time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nAuthenticated REGISTER throughput (REGISTER/401/REGISTER/200, %d distinct users, SIPp on the same cores)\n", users)
	fmt.Fprintf(&b, "%-10s %9s %9s %9s %8s %9s %11s %9s\n", "server", "offered/s", "ok", "failed", "retrans", "achieved", "cpu µs/reg", "rss MB")
	for _, r := range results {
		for _, s := range r.steps {
			b.WriteString(row(r.server, s))
		}
		if r.steady != nil {
			b.WriteString(row(r.server+"*", *r.steady))
		}
	}
	fmt.Fprintf(&b, "(steps of %v; * = steady run of %v at the best clean rate; clean = <0.1%% failed and ≥95%% of the offered rate achieved)\n", stepDur, steadyDur)
	bests := map[string]float64{}
	for _, r := range results {
		if r.steady != nil && r.steady.clean() {
			bests[r.server] = r.steady.achieved()
		} else if s, ok := r.best(); ok {
			bests[r.server] = s.achieved()
		}
		fmt.Fprintf(&b, "%s: best clean %.0f REGISTER/s\n", r.server, bests[r.server])
	}
	if k := bests["kamailio"]; k > 0 {
		fmt.Fprintf(&b, "ratio edgewise/kamailio: %.2f\n", bests["edgewise"]/k)
	}
	return b.String()
}

func row(name string, s step) string {
	perReg := 0.0
	if s.ok > 0 {
		perReg = float64(s.cpu.Microseconds()) / float64(s.ok)
	}
	return fmt.Sprintf("%-10s %9d %9d %9d %8d %9.0f %11.1f %9.1f\n",
		name, s.rate, s.ok, s.failed, s.retrans, s.achieved(), perReg, float64(s.rssKB)/1024)
}

func parseRates(s string) ([]int, error) {
	var rates []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad rate %q", f)
		}
		rates = append(rates, n)
	}
	sort.Ints(rates)
	return rates, nil
}

func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

// writeUsers writes the SIPp injection file: user, credentials keyword, expires.
// Every server gives user U the password "pw-U".
func writeUsers(path string, n int) error {
	var b strings.Builder
	b.WriteString("SEQUENTIAL\n")
	for i := 0; i < n; i++ {
		u := fmt.Sprintf("u%06d", i)
		fmt.Fprintf(&b, "%s;[authentication username=%s password=pw-%s];600\n", u, u, u)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// edgewiseServer runs bin/edgewise serve with a generated config.
type edgewiseServer struct {
	repo, work  string
	users       int
	addr, admin string
	cmd         *exec.Cmd
}

func (e *edgewiseServer) name() string   { return "edgewise" }
func (e *edgewiseServer) target() string { return e.addr }
func (e *edgewiseServer) pids() []int {
	if e.cmd == nil || e.cmd.Process == nil {
		return nil
	}
	return []int{e.cmd.Process.Pid}
}

func (e *edgewiseServer) start() error {
	var b strings.Builder
	fmt.Fprintf(&b, "log:\n  level: warn\nsip:\n  listen: [\"udp:%s\"]\n  realm: edgewise\n  lockout: {failures: 0}\n", e.addr)
	b.WriteString("twilio:\n  domain: bench\n  edges: [ashburn]\n  dns_server: 127.0.0.1:1\n")
	fmt.Fprintf(&b, "store:\n  path: %s/edgewise.db\nadmin:\n  listen: %s\nphones:\n", e.work, e.admin)
	for i := 0; i < e.users; i++ {
		u := fmt.Sprintf("u%06d", i)
		fmt.Fprintf(&b, "  - {user: %s, password: pw-%s, twilio_password: TwilioPass123}\n", u, u)
	}
	cfg := filepath.Join(e.work, "edgewise.yaml")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(e.work, "edgewise.log"))
	if err != nil {
		return err
	}
	e.cmd = exec.Command(filepath.Join(e.repo, "bin", "edgewise"), "serve", "-c", cfg)
	e.cmd.Stdout, e.cmd.Stderr = logf, logf
	if err := e.cmd.Start(); err != nil {
		return err
	}
	return waitFor(20*time.Second, func() bool {
		resp, err := http.Get("http://" + e.admin + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func (e *edgewiseServer) stop() {
	if e.cmd != nil && e.cmd.Process != nil {
		_ = e.cmd.Process.Signal(syscall.SIGINT)
		_ = e.cmd.Wait()
	}
}

// kamailioServer runs Debian's kamailio with test/bench/kamailio.cfg.
type kamailioServer struct {
	repo, work string
	addr       string
	children   int
	cmd        *exec.Cmd
}

func (k *kamailioServer) name() string   { return "kamailio" }
func (k *kamailioServer) target() string { return k.addr }

func (k *kamailioServer) pids() []int {
	if k.cmd == nil || k.cmd.Process == nil {
		return nil
	}
	// The main process and every child it forked.
	pids := []int{k.cmd.Process.Pid}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", k.cmd.Process.Pid, k.cmd.Process.Pid))
	if err == nil {
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				pids = append(pids, n)
			}
		}
	}
	return pids
}

func (k *kamailioServer) start() error {
	if _, err := exec.LookPath("kamailio"); err != nil {
		return fmt.Errorf("kamailio not installed (make bench installs it): %w", err)
	}
	tmpl, err := os.ReadFile(filepath.Join(k.repo, "test", "bench", "kamailio.cfg"))
	if err != nil {
		return err
	}
	cfg := strings.NewReplacer("CHILDREN", strconv.Itoa(k.children), "LISTEN", k.addr).Replace(string(tmpl))
	path := filepath.Join(k.work, "kamailio.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return err
	}
	k.cmd = exec.Command("kamailio", "-f", path, "-DD", "-E", "-m", "512", "-M", "32",
		"-P", filepath.Join(k.work, "kamailio.pid"), "-Y", k.work)
	logf, err := os.Create(filepath.Join(k.work, "kamailio.log"))
	if err != nil {
		return err
	}
	k.cmd.Stdout, k.cmd.Stderr = logf, logf
	if err := k.cmd.Start(); err != nil {
		return err
	}
	// Ready once it answers an OPTIONS with anything (405 here).
	return waitFor(20*time.Second, func() bool { return sipAnswers(k.addr) })
}

func (k *kamailioServer) stop() {
	if k.cmd != nil && k.cmd.Process != nil {
		_ = k.cmd.Process.Signal(syscall.SIGTERM)
		_ = k.cmd.Wait()
	}
}

func waitFor(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// sipAnswers sends one OPTIONS over UDP and reports whether any reply came
// within a second: the server is up and reading its socket.
func sipAnswers(addr string) bool {
	conn, err := net.Dial("udp", addr)
	if err != nil {
		return false
	}
	defer conn.Close()
	local := conn.LocalAddr().String()
	msg := "OPTIONS sip:" + addr + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + local + ";branch=z9hG4bK-bench-ready\r\n" +
		"From: <sip:bench@" + local + ">;tag=ready\r\n" +
		"To: <sip:" + addr + ">\r\n" +
		"Call-ID: bench-ready@" + local + "\r\n" +
		"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
	if _, err := conn.Write([]byte(msg)); err != nil {
		return false
	}
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	buf := make([]byte, 2048)
	n, err := conn.Read(buf)
	return err == nil && strings.HasPrefix(string(buf[:n]), "SIP/2.0 ")
}
