package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type registrarOptions struct {
	users   int
	rates   string        // coarse rates, ascending
	dur     time.Duration // of every run
	maxRuns int           // per server
	only    string
	gctrace bool
}

// registrarSuite finds the sustained knee of edgewise and of Kamailio in the
// same run, and prints both with their ratio and the CPU each spends per
// REGISTER at the highest rate both sustain.
func registrarSuite(repo, outDir string, o registrarOptions) (string, error) {
	rates, err := parseRates(o.rates)
	if err != nil {
		return "", err
	}
	work, err := os.MkdirTemp("", "edgewise-bench")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	usersCSV := filepath.Join(work, "users.csv")
	if err := writeUsers(usersCSV, o.users); err != nil {
		return "", err
	}
	logDir := ""
	if o.gctrace {
		if logDir, err = filepath.Abs(outDir); err != nil {
			return "", err
		}
	}
	// Addresses of their own, so a Kamailio or edgewise left on the usual
	// ports by something else does not answer in their place.
	servers := []server{
		&edgewiseServer{repo: repo, work: work, users: o.users, addr: "127.0.9.1:5080", admin: "127.0.9.1:9080",
			gctrace: o.gctrace, logDir: logDir},
		&kamailioServer{repo: repo, work: work, addr: "127.0.9.2:5070", children: 4},
	}
	var results []result
	for _, s := range servers {
		if o.only != "" && s.name() != o.only {
			continue
		}
		results = append(results, searchKnee(s, repo, usersCSV, rates, o))
	}
	return render(results, o), nil
}

// server is one registrar under test.
type server interface {
	name() string
	start(rate int) error // fresh processes and state; rate names logs
	stop()
	target() string
	pids() []int // every process whose CPU counts
}

// step is one SIPp run at a fixed offered rate, on fresh server processes.
type step struct {
	rate       int
	dur        time.Duration
	ok, failed int
	retrans    int
	elapsed    time.Duration
	cpu        time.Duration // server CPU (user+sys) during the run
	sippCPU    time.Duration // the load generator's, on the same cores
	rssKB      int           // server RSS after the run
	timeline   []second
	causes     string // SIPp's failure causes and late answers, if any
	err        error  // the run could not be made or measured: it counts as failed
}

// clean: under 0.1 % failed, and the offered rate was kept up — a server that
// answers everything but falls behind (the run stretches) is past its knee.
func (s step) clean() bool {
	total := s.ok + s.failed
	return s.err == nil && total > 0 && float64(s.failed) < 0.001*float64(total) &&
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
	steps  []step // in the order run
}

// knee returns the sustained knee: the highest clean run below the lowest
// rate that failed. A server that fails at some rate and then runs clean at
// a higher one has a stall that comes and goes, and it is not sustaining the
// higher rate either.
func (r result) knee() (step, bool) {
	firstFail := 0
	for _, s := range r.steps {
		if !s.clean() && (firstFail == 0 || s.rate < firstFail) {
			firstFail = s.rate
		}
	}
	var b step
	found := false
	for _, s := range r.steps {
		if s.clean() && s.rate > b.rate && (firstFail == 0 || s.rate < firstFail) {
			b, found = s, true
		}
	}
	return b, found
}

// at returns the clean run at rate, if any.
func (r result) at(rate int) (step, bool) {
	for _, s := range r.steps {
		if s.rate == rate && s.clean() {
			return s, true
		}
	}
	return step{}, false
}

// searchKnee runs the coarse rates upwards until two in a row fail (or one
// collapses), then bisects between the highest clean rate and the lowest
// failed rate above it down to about 5 %, within o.maxRuns runs. A run that
// fails is reported as failed; every run starts on fresh processes, so one
// overload does not poison the next.
func searchKnee(s server, repo, usersCSV string, rates []int, o registrarOptions) result {
	log.Printf("== %s", s.name())
	r := result{server: s.name()}
	run := func(rate int) step {
		st := runOnFresh(s, repo, usersCSV, rate, o.dur)
		r.steps = append(r.steps, st)
		return st
	}
	fails := 0
	for _, rate := range rates {
		if len(r.steps) >= o.maxRuns {
			break
		}
		st := run(rate)
		if st.clean() {
			fails = 0
			continue
		}
		fails++
		if fails >= 2 || st.err != nil || st.failed > st.ok/2 {
			break
		}
	}
	for len(r.steps) < o.maxRuns {
		lo, ok := r.knee()
		if !ok {
			break
		}
		hi := 0
		for _, st := range r.steps {
			if !st.clean() && st.rate > lo.rate && (hi == 0 || st.rate < hi) {
				hi = st.rate
			}
		}
		if hi == 0 || hi-lo.rate <= max(500, lo.rate/20) {
			break
		}
		run((lo.rate + hi) / 2 / 100 * 100)
	}
	return r
}

// runOnFresh starts the server, runs SIPp at rate for dur and stops it.
func runOnFresh(s server, repo, usersCSV string, rate int, dur time.Duration) step {
	st := step{rate: rate, dur: dur}
	defer s.stop()
	if err := s.start(rate); err != nil {
		st.err = fmt.Errorf("start: %w", err)
	} else {
		st = runSIPp(s, repo, usersCSV, rate, dur)
	}
	if st.err != nil {
		log.Printf("   %6d/s offered: FAILED: %v", rate, st.err)
		return st
	}
	verdict := "clean"
	if !st.clean() {
		verdict = "NOT CLEAN"
	}
	log.Printf("   %6d/s offered for %v: %d ok, %d failed, %d retransmissions, %.0f/s achieved, cpu %v (%.0f%% of a core), %.1f µs/REGISTER, SIPp %.0f%% of a core: %s",
		rate, dur, st.ok, st.failed, st.retrans, st.achieved(), st.cpu.Round(time.Millisecond),
		100*st.cpu.Seconds()/st.elapsed.Seconds(), perRegister(st), 100*st.sippCPU.Seconds()/st.elapsed.Seconds(), verdict)
	if st.causes != "" {
		log.Printf("      sipp: %s", st.causes)
	}
	for _, l := range timelineLines(st.timeline, rate, dur) {
		log.Printf("      %s", l)
	}
	return st
}

func runSIPp(s server, repo, usersCSV string, rate int, dur time.Duration) step {
	st := step{rate: rate, dur: dur}
	calls := int(float64(rate) * dur.Seconds())
	statFile := filepath.Join(filepath.Dir(usersCSV), fmt.Sprintf("sipp-%s-%d.csv", s.name(), rate))
	_ = os.Remove(statFile)
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
		"-trace_stat", "-stf", statFile, "-fd", "1",
		"-nostdin", s.target())
	cmd.Dir = filepath.Dir(usersCSV)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		st.err = fmt.Errorf("sipp: %w", err)
		return st
	}
	sampleCtx, stopSampling := context.WithCancel(ctx)
	var upstream func() int
	if e, ok := s.(*edgewiseServer); ok {
		upstream = e.upstreamFailures
	}
	samples := sampleSeconds(sampleCtx, s.target(), "127.0.9.3", s.pids, cmd.Process.Pid, upstream)
	err := cmd.Wait()
	st.elapsed = time.Since(start)
	stopSampling()
	perSecond := <-samples
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		st.err = fmt.Errorf("sipp: %w", err)
		return st
	}
	st.cpu = cpuTime(s.pids()) - cpu0
	if ps := cmd.ProcessState; ps != nil {
		st.sippCPU = ps.UserTime() + ps.SystemTime()
	}
	st.rssKB = rss(s.pids())
	text := out.String()
	st.ok = lastInt(reSuccess, text)
	st.failed = lastInt(reFailed, text)
	st.retrans = lastInt(reRetrans, text)
	if st.ok+st.failed == 0 {
		st.err = fmt.Errorf("sipp printed no statistics:\n%s", text)
		return st
	}
	if f, err := os.Open(statFile); err == nil {
		st.timeline, st.causes, err = readSIPpStats(f)
		f.Close()
		if err != nil {
			log.Printf("   %v", err)
		}
	}
	if len(st.timeline) > 0 {
		// SIPp 3.6's final screen printed 0 retransmissions in runs
		// whose statistics file counted tens of thousands.
		st.retrans = 0
		for _, sec := range st.timeline {
			st.retrans += sec.retrans
		}
	}
	// SIPp's periods and the sampler's seconds both start with the run;
	// they line up to within the sampler's tick.
	for i := range min(len(perSecond), len(st.timeline)) {
		p, t := perSecond[i], &st.timeline[i]
		t.srvDrops, t.sippDrops = p.srvDrops, p.sippDrops
		t.srvCPU, t.sippCPU, t.otherCPU, t.steal, t.upstream = p.srvCPU, p.sippCPU, p.otherCPU, p.steal, p.upstream
	}
	return st
}

func perRegister(s step) float64 {
	if s.ok == 0 {
		return 0
	}
	return float64(s.cpu.Microseconds()) / float64(s.ok)
}

func render(results []result, o registrarOptions) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nAuthenticated REGISTER, sustained (REGISTER/401/REGISTER/200, %d distinct users, %v runs on fresh processes, SIPp on the same cores)\n", o.users, o.dur)
	fmt.Fprintf(&b, "%-9s %9s %9s %7s %8s %9s %8s %11s %7s %-6s %s\n", "server", "offered/s", "ok", "failed", "retrans", "achieved", "worst/s", "cpu µs/reg", "rss MB", "clean", "achieved per second (█ = offered, ! = a failure)")
	for _, r := range results {
		for _, s := range r.steps {
			if s.err != nil {
				fmt.Fprintf(&b, "%-9s %9d  run failed: %s\n", r.server, s.rate, firstLine(s.err.Error()))
				continue
			}
			worstOK := 0
			if w, ok := worst(s.timeline, s.dur); ok {
				worstOK = s.timeline[w].ok
			}
			clean := "no"
			if s.clean() {
				clean = "yes"
			}
			fmt.Fprintf(&b, "%-9s %9d %9d %7d %8d %9.0f %8d %11.1f %7.1f %-6s %s\n",
				r.server, s.rate, s.ok, s.failed, s.retrans, s.achieved(), worstOK, perRegister(s),
				float64(s.rssKB)/1024, clean, sparkline(s.timeline, s.rate, s.dur))
		}
	}
	fmt.Fprintf(&b, "(clean = <0.1%% failed and ≥95%% of the offered rate achieved over the whole run; worst/s = fewest completions in one second)\n")
	knees := map[string]step{}
	for _, r := range results {
		k, ok := r.knee()
		if !ok {
			fmt.Fprintf(&b, "%s: no rate clean for %v\n", r.server, o.dur)
			continue
		}
		knees[r.server] = k
		note := ""
		for _, s := range r.steps {
			if s.rate > k.rate && s.clean() {
				note += fmt.Sprintf(" (%d/s ran clean too, above a failed rate)", s.rate)
			}
		}
		above := false
		for _, s := range r.steps {
			above = above || (s.rate > k.rate && !s.clean())
		}
		if !above {
			note += " (the highest rate tried: the knee is at or above it)"
		}
		fmt.Fprintf(&b, "%s: sustained knee %d/s offered, %.0f REGISTER/s achieved for %v%s\n", r.server, k.rate, k.achieved(), o.dur, note)
	}
	e, eok := knees["edgewise"]
	k, kok := knees["kamailio"]
	if eok && kok {
		// A knee at the highest rate tried is a lower bound.
		rel := "="
		eTop, kTop := reachedTop(results, "edgewise"), reachedTop(results, "kamailio")
		switch {
		case eTop:
			rel = "≥"
		case kTop:
			rel = "≤"
		}
		if eTop && kTop {
			fmt.Fprintf(&b, "ratio edgewise/kamailio, sustained: unknown (both clean at the highest rate tried)\n")
		} else {
			fmt.Fprintf(&b, "ratio edgewise/kamailio, sustained: %s %.2f\n", rel, e.achieved()/k.achieved())
		}
		// CPU per REGISTER at the highest rate both ran clean.
		common := 0
		var ce, ck step
		for _, s := range results[0].steps {
			if !s.clean() || s.rate <= common {
				continue
			}
			if other, ok := results[1].at(s.rate); ok {
				common, ce, ck = s.rate, s, other
			}
		}
		if results[0].server != "edgewise" {
			ce, ck = ck, ce
		}
		if common > 0 {
			fmt.Fprintf(&b, "CPU per REGISTER at %d/s (both clean): edgewise %.1f µs, kamailio %.1f µs, ratio %.2f\n",
				common, perRegister(ce), perRegister(ck), perRegister(ce)/perRegister(ck))
		}
	}
	return b.String()
}

// reachedTop reports whether server's knee is its highest rate tried, with
// no failed rate above it: the true knee may be higher.
func reachedTop(results []result, server string) bool {
	for _, r := range results {
		if r.server != server {
			continue
		}
		k, ok := r.knee()
		if !ok {
			return false
		}
		for _, s := range r.steps {
			if s.rate > k.rate {
				return false
			}
		}
		return true
	}
	return false
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// edgewiseServer runs bin/edgewise serve with a generated config and an
// empty store.
type edgewiseServer struct {
	repo, work  string
	users       int
	addr, admin string
	gctrace     bool
	logDir      string // keep each run's log here ("": discard with work)
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

func (e *edgewiseServer) start(rate int) error {
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
	if err := os.Remove(filepath.Join(e.work, "edgewise.db")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	logPath := filepath.Join(e.work, "edgewise.log")
	if e.logDir != "" {
		logPath = filepath.Join(e.logDir, fmt.Sprintf("registrar-edgewise-%d.log", rate))
	}
	logf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logf.Close() // the child has its own descriptor
	e.cmd = exec.Command(filepath.Join(e.repo, "bin", "edgewise"), "serve", "-c", cfg)
	e.cmd.Stdout, e.cmd.Stderr = logf, logf
	if e.gctrace {
		e.cmd.Env = append(os.Environ(), "GODEBUG=gctrace=1")
	}
	if err := e.cmd.Start(); err != nil {
		e.cmd = nil
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

// upstreamFailures reads edgewise_upstream_failures_total from the admin
// API (-1 when it cannot).
func (e *edgewiseServer) upstreamFailures() int {
	c := http.Client{Timeout: 500 * time.Millisecond}
	resp, err := c.Get("http://" + e.admin + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return -1
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "edgewise_upstream_failures_total{") {
			if i := strings.LastIndexByte(line, ' '); i > 0 {
				v, _ := strconv.ParseFloat(line[i+1:], 64)
				n += int(v)
			}
		}
	}
	return n
}

func (e *edgewiseServer) stop() {
	if e.cmd != nil && e.cmd.Process != nil {
		_ = e.cmd.Process.Signal(syscall.SIGINT)
		_ = e.cmd.Wait()
	}
	e.cmd = nil
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
	return withChildren(k.cmd.Process.Pid)
}

// withChildren is pid and every child it forked (Kamailio's workers): a
// server's CPU is theirs together.
func withChildren(pid int) []int {
	pids := []int{pid}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err == nil {
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				pids = append(pids, n)
			}
		}
	}
	return pids
}

func (k *kamailioServer) start(int) error {
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
	defer logf.Close()
	k.cmd.Stdout, k.cmd.Stderr = logf, logf
	if err := k.cmd.Start(); err != nil {
		k.cmd = nil
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
	k.cmd = nil
}
