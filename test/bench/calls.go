package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// callsOptions shape the calls suite (flags in main.go).
type callsOptions struct {
	rates    []int         // offered call rates, calls per second, one step each
	step     time.Duration // calls offered per step = rate × step
	hold     time.Duration // how long each short call stays up before the phone's BYE
	memCalls int           // concurrent long calls for memory per call
	memHold  time.Duration // how long those stay up
	runs     int           // repetitions; the table gives every run and the medians
	pprofDir string        // "": no profiles; else edgewise's CPU and allocs profiles per step
	peer     bool          // run the peer after edgewise in each run
}

// Addresses of the calls suite's own, so it never meets the registrar or
// steady suites' processes (127.0.9.x).
const (
	callsEdgewise = "127.0.10.1"
	callsAdmin    = "127.0.10.1:9080"
	callsPhones   = "127.0.10.3"
	callsSimCtl   = "127.0.10.10"
	callsUsers    = 100
)

// callsSuite measures, through edgewise to edgesim with SIPp as the phones:
// (1) call setup rate — steps of short calls (INVITE → 407 → INVITE with
// digest → 200 → ACK, hold, BYE) at rising offered rates, each bounded in
// count (rate × step) and time; the best clean step is the highest with no
// failed call and ≥ 95 % of its offered rate achieved; (2) memory per active
// call — RSS and Go heap of edgewise before and with memCalls concurrent calls
// up. It records the CPU of edgewise, edgesim and SIPp per step so a
// generator or simulator at its limit shows, and the rest of the box's CPU so
// a noisy neighbour shows too. No peer: see callsPeerNote.
func callsSuite(repo string, o callsOptions) (string, error) {
	work, err := os.MkdirTemp("", "edgewise-calls")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	// Fresh binaries of the tree as it is, in the suite's own directory: bin/
	// may be stale or rebuilt by someone else mid-run.
	build := exec.Command("go", "build", "-o", work+"/", "./cmd/edgewise", "./cmd/edgesim")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building edgewise and edgesim: %w\n%s", err, out)
	}
	if err := writeCallsFiles(work); err != nil {
		return "", err
	}
	if o.pprofDir != "" {
		if err := os.MkdirAll(o.pprofDir, 0o755); err != nil {
			return "", err
		}
	}
	var runs []callsRun
	var failed []string
	for i := 1; i <= o.runs; i++ {
		log.Printf("== calls: run %d of %d", i, o.runs)
		r, err := callsOnce(repo, work, o)
		if err != nil {
			// A run that cannot even start (or measure memory) is reported
			// and the next one starts with fresh processes: one bad run
			// must not cost the suites that follow.
			log.Printf("   run %d failed: %v", i, err)
			failed = append(failed, fmt.Sprintf("run %d: %v", i, err))
			continue
		}
		runs = append(runs, r)
	}
	if len(runs) == 0 {
		return "", fmt.Errorf("every run failed: %s", strings.Join(failed, "; "))
	}
	out := renderCalls(runs, o)
	for _, f := range failed {
		out += "not measured: " + f + "\n"
	}
	return out, nil
}

// callsRun is one run: a fresh edgesim and edgewise, the memory measurement
// first (so earlier load does not inflate the baseline), then the steps.
type callsRun struct {
	mem   callsMem
	steps []callsStep
	// stopped says why the run ended before its last rate, when a step
	// could not run: the rest of the run is abandoned, not the suite.
	stopped string
	// The same steps through the peer (Kamailio + rtpengine), right after
	// edgewise's in the same run, against the same edgesim.
	peerSteps   []callsStep
	peerStopped string
}

type callsMem struct {
	calls                            int
	rssBefore, rssWith               float64 // bytes
	heapBefore, heapWith             float64 // bytes, go_memstats_heap_inuse_bytes (lowest of several scrapes)
	goroutinesBefore, goroutinesWith float64
	ok, failed                       int
	idleCPU                          float64 // edgewise, % of one core, no calls
}

func (m callsMem) perCall(before, with float64) float64 {
	if m.calls == 0 {
		return 0
	}
	return (with - before) / float64(m.calls)
}

type callsStep struct {
	rate, calls          int
	ok, failed, retrans  int
	answered             int           // edgewise_b2bua_call_setups_total{outcome=answered} delta
	elapsed              time.Duration // SIPp start to exit
	hold                 time.Duration
	ew, sim, sipp, other time.Duration // CPU time during the step; ew = the server under test (edgewise, or Kamailio + rtpengine); other = the rest of the box
}

// perCall is the server's CPU per successful call, in µs.
func (s callsStep) perCall() float64 {
	if s.ok == 0 {
		return 0
	}
	return float64(s.ew.Microseconds()) / float64(s.ok)
}

// callsTarget is the server the phones call through: edgewise, or the peer.
type callsTarget struct {
	addr     string
	pids     func() []int
	idle     func() error
	edgewise bool // scrape edgewise's metrics around each step
}

// achieved is the setup rate SIPp kept up: successful calls over the time it
// spent placing them — its run time less one hold time (the last call's
// talk), so a step that falls behind the offered rate shows as < 95 %.
func (s callsStep) achieved() float64 {
	d := s.elapsed - s.hold
	if d <= 0 {
		return 0
	}
	return float64(s.ok) / d.Seconds()
}

func (s callsStep) clean() bool {
	return s.failed == 0 && s.ok == s.calls && s.achieved() >= 0.95*float64(s.rate)
}

func (s callsStep) pct(d time.Duration) float64 {
	if s.elapsed <= 0 {
		return 0
	}
	return 100 * d.Seconds() / s.elapsed.Seconds()
}

func callsOnce(repo, work string, o callsOptions) (callsRun, error) {
	var run callsRun
	// A fresh store: edgewise resumes its upstream registrations from it
	// after a restart, but this run's edgesim starts with none.
	if err := os.Remove(filepath.Join(work, "edgewise.db")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return run, err
	}
	sim := exec.Command(filepath.Join(work, "edgesim"), "-c", filepath.Join(work, "edgesim.yaml"), "-log-level", "warn")
	simLog, err := os.Create(filepath.Join(work, "edgesim.log"))
	if err != nil {
		return run, err
	}
	defer simLog.Close()
	sim.Stdout, sim.Stderr = simLog, simLog
	if err := sim.Start(); err != nil {
		return run, err
	}
	defer func() { _ = sim.Process.Signal(syscall.SIGTERM); _ = sim.Wait() }()
	if err := waitFor(20*time.Second, func() bool { return httpOK("http://" + callsSimCtl + ":9070/healthz") }); err != nil {
		return run, fmt.Errorf("edgesim: %w", err)
	}
	ew := exec.Command(filepath.Join(work, "edgewise"), "serve", "-c", filepath.Join(work, "edgewise.yaml"))
	ewLog, err := os.Create(filepath.Join(work, "edgewise.log"))
	if err != nil {
		return run, err
	}
	defer ewLog.Close()
	ew.Stdout, ew.Stderr = ewLog, ewLog
	if err := ew.Start(); err != nil {
		return run, err
	}
	ewStopped := false
	stopEw := func() {
		if !ewStopped {
			ewStopped = true
			_ = ew.Process.Signal(syscall.SIGINT)
			_ = ew.Wait()
		}
	}
	defer stopEw()
	if err := waitFor(30*time.Second, func() bool { return httpOK("http://" + callsAdmin + "/healthz") }); err != nil {
		return run, fmt.Errorf("edgewise: %w", err)
	}

	// The phones register first, and edgewise registers them upstream, as
	// in real use; then the box is quiet before measuring.
	reg := exec.Command("sipp", "-sf", filepath.Join(repo, "test", "sipp", "register.xml"),
		"-inf", filepath.Join(work, "register.csv"), "-i", callsPhones, "-r", "200", "-m", strconv.Itoa(callsUsers),
		"-timeout", "30s", "-nostdin", callsEdgewise+":5060")
	reg.Dir = work
	if out, err := reg.CombinedOutput(); err != nil {
		return run, fmt.Errorf("sipp registering %d phones: %w\n%s", callsUsers, err, lastLines(string(out), 30))
	}
	bindings := "http://" + callsSimCtl + ":9070/v1/bindings"
	if err := waitFor(30*time.Second, func() bool { return upstreamCount(bindings) == callsUsers }); err != nil {
		return run, fmt.Errorf("upstream registrations: %w (%d of %d)", err, upstreamCount(bindings), callsUsers)
	}

	pids := callsPids{ew: ew.Process.Pid, sim: sim.Process.Pid}
	if run.mem, err = callsMemory(repo, work, pids, o); err != nil {
		return run, err
	}
	log.Printf("   memory: %d calls: rss %.0f → %.0f MB, heap %.0f → %.0f MB, %d ok %d failed",
		run.mem.calls, run.mem.rssBefore/1e6, run.mem.rssWith/1e6, run.mem.heapBefore/1e6, run.mem.heapWith/1e6, run.mem.ok, run.mem.failed)
	ewTarget := callsTarget{addr: callsEdgewise + ":5060", pids: func() []int { return []int{pids.ew} }, idle: callsIdle, edgewise: true}
	for _, rate := range o.rates {
		if err := callsIdle(); err != nil {
			// The step before overloaded edgewise past recovering within a
			// minute: that is a result, and this run is over.
			run.stopped = fmt.Sprintf("%d/s not run: the previous step's calls were still up 60 s after it (%v)", rate, err)
			log.Printf("   %s", run.stopped)
			break
		}
		st, err := callsStepRun(repo, work, ewTarget, pids.sim, rate, o)
		if err != nil {
			run.stopped = fmt.Sprintf("%d/s failed: %v", rate, err)
			log.Printf("   %s", run.stopped)
			break
		}
		callsLogStep("edgewise", st)
		run.steps = append(run.steps, st)
		if st.failed > st.calls/2 {
			break // far past the knee: higher rates only collapse further
		}
	}
	// The peer's turn, on the same edgesim: edgewise stops first so its
	// keepalives and timers are not on the box.
	stopEw()
	if !o.peer {
		run.peerStopped = "not run (-call-peer=false)"
	} else if err := callsPeerIdle(); err != nil {
		run.peerStopped = fmt.Sprintf("not run: edgesim still had calls up (%v)", err)
	} else {
		run.peerSteps, run.peerStopped = callsPeerRun(repo, work, pids.sim, o)
	}
	if run.peerStopped != "" {
		log.Printf("   peer: %s", run.peerStopped)
	}
	return run, nil
}

// callsProfile saves one of edgewise's /debug/pprof profiles (a run's
// later steps overwrite its earlier ones of the same rate).
func callsProfile(dir, name, what string) {
	c := http.Client{Timeout: 2 * time.Minute}
	resp, err := c.Get("http://" + callsAdmin + "/debug/pprof/" + what)
	if err != nil {
		log.Printf("   pprof %s: %v", what, err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", resp.Status, b)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, name), b, 0o644)
	}
	if err != nil {
		log.Printf("   pprof %s: %v", what, err)
	}
}

func callsLogStep(who string, st callsStep) {
	log.Printf("   %-8s %4d/s offered: %d ok, %d failed, %d retrans, %.0f/s achieved, %.0f µs/call, cpu %s %.0f%% sim %.0f%% sipp %.0f%% other %.0f%%",
		who, st.rate, st.ok, st.failed, st.retrans, st.achieved(), st.perCall(), who, st.pct(st.ew), st.pct(st.sim), st.pct(st.sipp), st.pct(st.other))
}

type callsPids struct{ ew, sim int }

// callsIdle waits until the previous step's calls are all over in edgewise.
func callsIdle() error {
	return waitFor(60*time.Second, func() bool {
		m, err := callsScrape()
		return err == nil && m.value("edgewise_b2bua_calls_active") == 0 && m.value("edgewise_media_ports_in_use") == 0
	})
}

// callsSipp runs the short-call scenario: calls at rate, up to limit at
// once, each holding hold. SIPp's -timeout bounds it; ctx is the backstop.
func callsSipp(ctx context.Context, repo, work, target string, rate, calls, limit int, hold time.Duration) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "sipp", "-sf", filepath.Join(repo, "test", "sipp", "load_call_short.xml"),
		"-inf", filepath.Join(work, "calls.csv"), "-i", callsPhones, "-mi", callsPhones, "-mp", "40000",
		"-r", strconv.Itoa(rate), "-m", strconv.Itoa(calls), "-l", strconv.Itoa(limit),
		"-d", strconv.Itoa(int(hold.Milliseconds())),
		"-buff_size", "4194304", "-max_recv_loops", "10000",
		"-timeout", strconv.Itoa(int(float64(calls)/float64(rate)+hold.Seconds())+60)+"s",
		"-auth_uri", callsNumber+"@"+target,
		"-nostdin", target)
	cmd.Dir = work
	return cmd
}

// callsNumber is what every benchmark call dials. SIPp signs its digest for
// one URI per run (-auth_uri), and edgewise checks that the digest uri is
// the Request-URI.
const callsNumber = "15550000000"

func callsStepRun(repo, work string, tgt callsTarget, simPid, rate int, o callsOptions) (callsStep, error) {
	st := callsStep{rate: rate, calls: int(float64(rate) * o.step.Seconds()), hold: o.hold}
	// Room for every call up at once at this rate with up to 4 s of setup
	// and teardown each, so a slow answer shows as a slow step rather than
	// as SIPp holding back; capped below the 2,500 calls the port range holds.
	limit := min(int(float64(rate)*(o.hold.Seconds()+4)), 2000)
	var before callsMetrics
	if tgt.edgewise {
		var err error
		if before, err = callsScrape(); err != nil {
			return st, err
		}
	}
	ew0, sim0, box0 := cpuTime(tgt.pids()), cpuTime([]int{simPid}), boxCPU()
	ctx, cancel := context.WithTimeout(context.Background(), o.step+o.hold+90*time.Second)
	defer cancel()
	cmd := callsSipp(ctx, repo, work, tgt.addr, rate, st.calls, limit, o.hold)
	var profiled chan struct{}
	if tgt.edgewise && o.pprofDir != "" {
		profiled = make(chan struct{})
		go func() {
			defer close(profiled)
			callsProfile(o.pprofDir, fmt.Sprintf("calls-edgewise-%d-cpu.pb.gz", rate),
				fmt.Sprintf("profile?seconds=%d", max(1, int(o.step.Seconds())-1)))
		}()
	}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	st.elapsed = time.Since(start)
	if profiled != nil {
		<-profiled
		callsProfile(o.pprofDir, fmt.Sprintf("calls-edgewise-%d-allocs.pb.gz", rate), "allocs")
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		return st, fmt.Errorf("sipp: %w", err)
	}
	st.ew, st.sim = cpuTime(tgt.pids())-ew0, cpuTime([]int{simPid})-sim0
	st.sipp = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	st.other = max(0, boxCPU()-box0-st.ew-st.sim-st.sipp)
	text := string(out)
	st.ok, st.failed, st.retrans = lastInt(reSuccess, text), lastInt(reFailed, text), lastInt(reRetrans, text)
	if st.ok+st.failed == 0 {
		return st, fmt.Errorf("sipp printed no statistics:\n%s", lastLines(text, 40))
	}
	if !tgt.edgewise {
		return st, nil
	}
	if after, err := callsScrape(); err == nil {
		st.answered = int(after.value("edgewise_b2bua_call_setups_total", "direction", "outbound", "outcome", "answered") -
			before.value("edgewise_b2bua_call_setups_total", "direction", "outbound", "outcome", "answered"))
	}
	return st, nil
}

// callsMemory holds o.memCalls calls up at once and compares edgewise's
// memory with them up to before. The calls carry no RTP: the relay's packet
// buffers belong to its workers, not to calls, so a flowing stream adds
// kernel socket memory, not process memory.
func callsMemory(repo, work string, pids callsPids, o callsOptions) (callsMem, error) {
	m := callsMem{calls: o.memCalls}
	var err error
	// The before-sample spans two idle seconds: edgewise's idle CPU (timers,
	// keepalives) is measured over them, so per-call CPU can be read net of it.
	cpu0, t0 := cpuTime([]int{pids.ew}), time.Now()
	if m.rssBefore, m.heapBefore, m.goroutinesBefore, err = callsMemSample(pids.ew); err != nil {
		return m, err
	}
	m.idleCPU = 100 * (cpuTime([]int{pids.ew}) - cpu0).Seconds() / time.Since(t0).Seconds()
	const rate = 200
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(o.memCalls/rate)*time.Second+o.memHold+90*time.Second)
	defer cancel()
	cmd := callsSipp(ctx, repo, work, callsEdgewise+":5060", rate, o.memCalls, o.memCalls, o.memHold)
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return m, err
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	// All calls up: edgewise's active-call gauge reaches memCalls well before
	// the first call's hold time is over (ramp memCalls/rate < memHold).
	up := waitFor(time.Duration(o.memCalls/rate)*time.Second+o.memHold/2, func() bool {
		mt, err := callsScrape()
		return err == nil && mt.value("edgewise_b2bua_calls_active") >= float64(o.memCalls)
	})
	if up == nil {
		m.rssWith, m.heapWith, m.goroutinesWith, err = callsMemSample(pids.ew)
	}
	werr := <-waitErr
	var exitErr *exec.ExitError
	if werr != nil && !errors.As(werr, &exitErr) {
		return m, fmt.Errorf("sipp: %w", werr)
	}
	m.ok, m.failed = lastInt(reSuccess, out.String()), lastInt(reFailed, out.String())
	if up != nil {
		return m, fmt.Errorf("%d calls never up at once (%d ok, %d failed): %w\n%s", o.memCalls, m.ok, m.failed, up, lastLines(out.String(), 30))
	}
	return m, err
}

// callsMemSample reads RSS, heap in use and goroutines a few times over two
// seconds and keeps the lowest heap: Go's heap in use includes garbage not yet
// collected, and the lowest reading is the closest to the live heap.
func callsMemSample(pid int) (rssB, heap, goroutines float64, err error) {
	heap = -1
	for i := range 10 {
		if i > 0 {
			time.Sleep(200 * time.Millisecond) // spacing samples, not synchronising
		}
		mt, err := callsScrape()
		if err != nil {
			return 0, 0, 0, err
		}
		if h := mt.value("go_memstats_heap_inuse_bytes"); heap < 0 || h < heap {
			heap = h
		}
		goroutines = mt.value("go_goroutines")
	}
	return float64(rss([]int{pid})) * 1024, heap, goroutines, nil
}

// callsMetrics is one scrape of edgewise's /metrics, parsed.
type callsMetrics map[string]float64

// value sums the samples of name whose labels include the given pairs.
func (m callsMetrics) value(name string, labels ...string) float64 {
	var sum float64
	for key, v := range m {
		n, ls, _ := strings.Cut(key, "{")
		if n != name {
			continue
		}
		ok := true
		for i := 0; i+1 < len(labels); i += 2 {
			if !strings.Contains(ls, labels[i]+"="+strconv.Quote(labels[i+1])) {
				ok = false
			}
		}
		if ok {
			sum += v
		}
	}
	return sum
}

var callsHTTP = &http.Client{Timeout: 5 * time.Second}

func callsScrape() (callsMetrics, error) {
	resp, err := callsHTTP.Get("http://" + callsAdmin + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse /metrics: %w", err)
	}
	m := callsMetrics{}
	for name, mf := range mfs {
		for i, s := range mf.GetMetric() {
			var ls []string
			for _, l := range s.GetLabel() {
				ls = append(ls, l.GetName()+"="+strconv.Quote(l.GetValue()))
			}
			key := fmt.Sprintf("%s{%s}#%d", name, strings.Join(ls, ","), i)
			m[key] = s.GetCounter().GetValue() + s.GetGauge().GetValue() + s.GetUntyped().GetValue()
		}
	}
	return m, nil
}

// boxCPU is the whole machine's busy CPU time (all cores) from /proc/stat.
func boxCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * time.Second / 100
}

func writeCallsFiles(work string) error {
	var sim, ew, regCSV, callCSV strings.Builder
	sim.WriteString("domain: bench\nedges:\n")
	sim.WriteString("  - {name: ashburn, ips: [127.0.10.11, 127.0.10.12, 127.0.10.13], port: 5060}\n")
	sim.WriteString("  - {name: umatilla, ips: [127.0.10.21, 127.0.10.22, 127.0.10.23], port: 5060}\n")
	fmt.Fprintf(&sim, "transports: [udp]\ndns: {listen: %s:5353, ttl: 600}\ncontrol: {listen: %s:9070}\n", callsSimCtl, callsSimCtl)
	// Room for the memory step's calls; a short history keeps its list small.
	sim.WriteString("calls: {max_calls: 5000, history: 100}\ncredentials:\n")
	fmt.Fprintf(&ew, "log:\n  level: warn\nsip:\n  listen: [\"udp:%s:5060\"]\n  realm: edgewise\n  lockout: {failures: 0}\n", callsEdgewise)
	fmt.Fprintf(&ew, "twilio:\n  domain: bench\n  edges: [ashburn, umatilla]\n  dns_server: %s:5353\n", callsSimCtl)
	ew.WriteString("  keepalive: {method: options, interval: 10s}\n  signalling_cidrs: [127.0.10.0/24]\n  media_cidrs: [127.0.10.0/24]\n")
	// 10,000 ports = 2,500 calls (two RTP/RTCP pairs each); media timeout
	// well above any hold time here, since the calls carry no RTP.
	// 100 SIPp users stand for many more phones: up to ~20 calls each at
	// once here, where edgewise's default per-user limit is 4 (and the
	// peer has none). The total stays bounded by the port pool.
	ew.WriteString("calls:\n  max_per_user: 0\n")
	fmt.Fprintf(&ew, "store:\n  path: %s/edgewise.db\nadmin:\n  listen: %s\nmedia:\n  rtp_ports: 20000-29999\n  timeout: 300s\nphones:\n", work, callsAdmin)
	regCSV.WriteString("SEQUENTIAL\n")
	callCSV.WriteString("SEQUENTIAL\n")
	for i := range callsUsers {
		u := fmt.Sprintf("c%03d", i)
		tw := fmt.Sprintf("Twilio%03dPass", i)
		fmt.Fprintf(&sim, "  - {user: %s, password: %s}\n", u, tw)
		fmt.Fprintf(&ew, "  - {user: %s, password: pw-%s, twilio_password: %s}\n", u, u, tw)
		fmt.Fprintf(&regCSV, "%s;[authentication username=%s password=pw-%s];3600\n", u, u, u)
		fmt.Fprintf(&callCSV, "%s;[authentication username=%s password=pw-%s];%s\n", u, u, u, callsNumber)
	}
	for name, body := range map[string]string{
		"edgesim.yaml": sim.String(), "edgewise.yaml": ew.String(),
		"register.csv": regCSV.String(), "calls.csv": callCSV.String(),
	} {
		if err := os.WriteFile(filepath.Join(work, name), []byte(body), 0o600); err != nil {
			return err
		}
	}
	return nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func renderCalls(runs []callsRun, o callsOptions) string {
	var b strings.Builder
	fmt.Fprintf(&b, "\nCall setup to edgesim (SIPp phones: INVITE/407/INVITE/200/ACK, hold %v, BYE; %d users; %v per step; edgesim answers at once), through edgewise and, in the same run right after, through the peer: Kamailio (auth, dialog, record-route, uac_auth toward edgesim) driving rtpengine for every call\n",
		o.hold, callsUsers, o.step)
	b.WriteString("| run | server | offered/s | calls | ok | failed | retrans | achieved/s | server cpu % | µs/call | edgesim cpu % | sipp cpu % | rest of box cpu % |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	var bests, peerBests []float64
	byRate := map[int][]float64{}
	row := func(run int, who string, s callsStep) {
		mark := ""
		if s.clean() {
			mark = " ✓"
		}
		fmt.Fprintf(&b, "| %d | %s | %d | %d | %d | %d | %d | %.0f%s | %.0f | %.0f | %.0f | %.0f | %.0f |\n",
			run, who, s.rate, s.calls, s.ok, s.failed, s.retrans, s.achieved(), mark,
			s.pct(s.ew), s.perCall(), s.pct(s.sim), s.pct(s.sipp), s.pct(s.other))
	}
	for i, r := range runs {
		for _, s := range r.steps {
			byRate[s.rate] = append(byRate[s.rate], s.achieved())
			row(i+1, "edgewise", s)
		}
		if r.stopped != "" {
			fmt.Fprintf(&b, "| %d | edgewise | run stopped: %s ||||||||||\n", i+1, r.stopped)
		}
		for _, s := range r.peerSteps {
			row(i+1, "peer", s)
		}
		if r.peerStopped != "" {
			fmt.Fprintf(&b, "| %d | peer | %s ||||||||||\n", i+1, r.peerStopped)
		}
		bests = append(bests, callsBest(r.steps))
		peerBests = append(peerBests, callsBest(r.peerSteps))
	}
	fmt.Fprintf(&b, "(✓ = clean: every call answered and ended, 0 failed, ≥ 95 %% of the offered rate achieved; achieved = successful calls / (SIPp run time − hold); server cpu = edgewise, or Kamailio's processes + rtpengine; cpu %% of one core, 200 %% = the whole box)\n")
	var rates []int
	for r := range byRate {
		rates = append(rates, r)
	}
	slices.Sort(rates)
	for _, r := range rates {
		fmt.Fprintf(&b, "offered %d/s: edgewise median achieved %.0f/s over %d runs\n", r, median(byRate[r]), len(byRate[r]))
	}
	fmt.Fprintf(&b, "best clean setup rate: edgewise median %.0f calls/s (runs: %s)  (target ≥ 200 calls/s, 0 failed)\n", median(bests), joinFloats(bests, "%.0f"))
	fmt.Fprintf(&b, "best clean setup rate: peer median %.0f calls/s (runs: %s)\n", median(peerBests), joinFloats(peerBests, "%.0f"))
	b.WriteString(callsCompare(runs, o))

	fmt.Fprintf(&b, "\nMemory per active call (%d concurrent calls, no RTP flowing; heap = lowest go_memstats_heap_inuse_bytes of 10 scrapes)\n", o.memCalls)
	b.WriteString("| run | calls up | ok | failed | RSS before MB | RSS with MB | RSS KB/call | heap before MB | heap with MB | heap KB/call | goroutines/call | idle edgewise cpu % |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	var rssPer, heapPer []float64
	for i, r := range runs {
		m := r.mem
		rp, hp := m.perCall(m.rssBefore, m.rssWith)/1024, m.perCall(m.heapBefore, m.heapWith)/1024
		rssPer, heapPer = append(rssPer, rp), append(heapPer, hp)
		fmt.Fprintf(&b, "| %d | %d | %d | %d | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f |\n",
			i+1, m.calls, m.ok, m.failed, m.rssBefore/1e6, m.rssWith/1e6, rp, m.heapBefore/1e6, m.heapWith/1e6, hp,
			m.perCall(m.goroutinesBefore, m.goroutinesWith), m.idleCPU)
	}
	fmt.Fprintf(&b, "memory per active call: median %.1f KB RSS, %.1f KB Go heap (edgewise only)\n\n", median(rssPer), median(heapPer))
	b.WriteString(callsPeerNote)
	return b.String()
}

func joinFloats(xs []float64, format string) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf(format, x)
	}
	return strings.Join(parts, ", ")
}
