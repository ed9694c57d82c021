package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/edgewise-sip/edgewise/test/bench/relaytest"
)

// The peer's own addresses in the calls suite's range: Kamailio's SIP
// listener and rtpengine's ng socket and media ports (SIPp's are 40000 up,
// edgewise's relay 20000-29999).
const (
	callsPeerIP       = "127.0.10.2"
	callsPeerSIP      = callsPeerIP + ":5060"
	callsPeerNGPort   = 2223
	callsPeerChildren = 4 // as the registrar suite runs Kamailio
	// callsPeerEdgeIP is the one edgesim IP Kamailio sends every INVITE to
	// (edgewise picks one IP of the active edge too).
	callsPeerEdgeIP = "127.0.10.11:5060"
)

// callsPeer is Kamailio (test/bench/kamailio-calls.cfg) with rtpengine, the
// processes a user would run instead of edgewise for the same calls.
type callsPeer struct {
	repo, work string
	rtp        *relaytest.Rtpengine
	kam        *exec.Cmd
}

func (p *callsPeer) start() error {
	for _, bin := range []string{"kamailio", "rtpengine"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s not installed (make bench installs it): %w", bin, err)
		}
	}
	rlog, err := os.Create(filepath.Join(p.work, "rtpengine.log"))
	if err != nil {
		return err
	}
	defer rlog.Close() // the child has its own descriptor
	// Userspace forwarding only, and a timeout above any hold time here:
	// the calls carry no RTP, as through edgewise.
	p.rtp = &relaytest.Rtpengine{Addr: callsPeerIP, NGPort: callsPeerNGPort, PortMin: 30000, PortMax: 39999, Log: rlog}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.rtp.Start(ctx); err != nil {
		p.rtp = nil
		return fmt.Errorf("rtpengine: %w", err)
	}
	tmpl, err := os.ReadFile(filepath.Join(p.repo, "test", "bench", "kamailio-calls.cfg"))
	if err != nil {
		p.stop()
		return err
	}
	cfg := strings.NewReplacer("CHILDREN", strconv.Itoa(callsPeerChildren), "LISTEN", callsPeerSIP,
		"NGSOCK", p.rtp.NG(), "EDGEIP", callsPeerEdgeIP, "DOMAIN", "bench.sip.ashburn.twilio.com").Replace(string(tmpl))
	path := filepath.Join(p.work, "kamailio-calls.cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		p.stop()
		return err
	}
	klog, err := os.Create(filepath.Join(p.work, "kamailio.log"))
	if err != nil {
		p.stop()
		return err
	}
	defer klog.Close()
	p.kam = exec.Command("kamailio", "-f", path, "-DD", "-E", "-m", "512", "-M", "32",
		"-P", filepath.Join(p.work, "kamailio.pid"), "-Y", p.work)
	p.kam.Stdout, p.kam.Stderr = klog, klog
	p.kam.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.kam.Start(); err != nil {
		p.kam = nil
		p.stop()
		return err
	}
	// Ready once it answers an OPTIONS with anything (405 here).
	if err := waitFor(20*time.Second, func() bool { return sipAnswers(callsPeerSIP) }); err != nil {
		p.stop()
		return fmt.Errorf("kamailio: %w (log: %s)", err, lastLines(readFile(filepath.Join(p.work, "kamailio.log")), 5))
	}
	return nil
}

// pids are Kamailio's main process, every child it forked, and rtpengine:
// the peer's CPU is theirs together.
func (p *callsPeer) pids() []int {
	var pids []int
	if p.kam != nil && p.kam.Process != nil {
		pids = withChildren(p.kam.Process.Pid)
	}
	if p.rtp != nil {
		pids = append(pids, p.rtp.PIDs()...)
	}
	return pids
}

func (p *callsPeer) stop() {
	if p.kam != nil && p.kam.Process != nil {
		_ = p.kam.Process.Signal(syscall.SIGTERM)
		_ = p.kam.Wait()
	}
	p.kam = nil
	if p.rtp != nil {
		_ = p.rtp.Stop()
	}
	p.rtp = nil
}

// callsPeerIdle waits until edgesim has no call up: the peer keeps no
// gauge like edgewise's, and every call ends at edgesim either way.
func callsPeerIdle() error {
	return waitFor(60*time.Second, func() bool { return callsSimActive() == 0 })
}

// callsSimActive counts edgesim's calls not yet over (-1 when unreadable).
func callsSimActive() int {
	resp, err := callsHTTP.Get("http://" + callsSimCtl + ":9070/v1/calls")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var body struct {
		Calls []struct {
			State string `json:"state"`
		} `json:"calls"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return -1
	}
	n := 0
	for _, c := range body.Calls {
		if c.State != "ended" && c.State != "failed" {
			n++
		}
	}
	return n
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// callsPeerRun runs the same rate steps through the peer, against the
// same edgesim, with edgewise stopped. A step that cannot run ends the
// peer's part of this run, as for edgewise.
func callsPeerRun(repo, work string, simPid int, o callsOptions) (steps []callsStep, stopped string) {
	p := &callsPeer{repo: repo, work: work}
	if err := p.start(); err != nil {
		return nil, fmt.Sprintf("peer not started: %v", err)
	}
	defer p.stop()
	tgt := callsTarget{addr: callsPeerSIP, pids: p.pids, idle: callsPeerIdle}
	for _, rate := range o.rates {
		if err := tgt.idle(); err != nil {
			stopped = fmt.Sprintf("%d/s not run: the previous step's calls were still up at edgesim 60 s after it (%v)", rate, err)
			break
		}
		st, err := callsStepRun(repo, work, tgt, simPid, rate, o)
		if err != nil {
			stopped = fmt.Sprintf("%d/s failed: %v", rate, err)
			break
		}
		callsLogStep("peer", st)
		steps = append(steps, st)
		if st.failed > st.calls/2 {
			break
		}
	}
	return steps, stopped
}

// callsBest is the highest achieved rate of a clean step (0: none).
func callsBest(steps []callsStep) float64 {
	best := 0.0
	for _, s := range steps {
		if s.clean() {
			best = max(best, s.achieved())
		}
	}
	return best
}

// callsTopClean reports whether the highest rate tried ran clean: the true
// best is then at or above it.
func callsTopClean(steps []callsStep, rates []int) bool {
	if len(steps) == 0 || len(rates) == 0 {
		return false
	}
	last := steps[len(steps)-1]
	return last.rate == rates[len(rates)-1] && last.clean()
}

// callsCompare gives the ratios of one run's edgewise and peer figures, run
// by run and as medians: setup rate (best clean, edgewise over peer) and
// CPU per call at the highest rate both ran clean (peer's µs over
// edgewise's, so above 1 means edgewise spends less per call).
func callsCompare(runs []callsRun, o callsOptions) string {
	var b strings.Builder
	var rateRatios, cpuRatios, ewUs, peerUs []float64
	for i, r := range runs {
		e, p := callsBest(r.steps), callsBest(r.peerSteps)
		line := fmt.Sprintf("run %d: best clean edgewise %.0f/s, peer %.0f/s", i+1, e, p)
		if e > 0 && p > 0 {
			rel := ""
			switch eTop, pTop := callsTopClean(r.steps, o.rates), callsTopClean(r.peerSteps, o.rates); {
			case eTop && pTop:
				rel = " (both clean at the highest rate tried: unknown)"
			case eTop:
				rel = " (edgewise clean at the highest rate tried: at least this)"
			case pTop:
				rel = " (peer clean at the highest rate tried: at most this)"
			}
			line += fmt.Sprintf(", ratio %.2f%s", e/p, rel)
			rateRatios = append(rateRatios, e/p)
		}
		common := 0
		var ce, cp callsStep
		for _, s := range r.steps {
			if !s.clean() || s.rate <= common {
				continue
			}
			for _, q := range r.peerSteps {
				if q.rate == s.rate && q.clean() {
					common, ce, cp = s.rate, s, q
				}
			}
		}
		if common > 0 && ce.perCall() > 0 {
			line += fmt.Sprintf("; CPU per call at %d/s (both clean): edgewise %.0f µs, peer %.0f µs, peer/edgewise %.2f",
				common, ce.perCall(), cp.perCall(), cp.perCall()/ce.perCall())
			cpuRatios = append(cpuRatios, cp.perCall()/ce.perCall())
			ewUs, peerUs = append(ewUs, ce.perCall()), append(peerUs, cp.perCall())
		}
		b.WriteString(line + "\n")
	}
	if len(rateRatios) > 0 {
		fmt.Fprintf(&b, "clean setup rate edgewise/peer: median %.2f over %d runs (%s)\n", median(rateRatios), len(rateRatios), joinFloats(rateRatios, "%.2f"))
	}
	if len(cpuRatios) > 0 {
		fmt.Fprintf(&b, "CPU per call: edgewise median %.0f µs, peer median %.0f µs; efficiency edgewise over peer (peer µs / edgewise µs): median %.2f over %d runs (%s)  (target ≥ 1.5)\n",
			median(ewUs), median(peerUs), median(cpuRatios), len(cpuRatios), joinFloats(cpuRatios, "%.2f"))
	}
	return b.String()
}

// callsPeerNote is what the comparison does and does not say.
const callsPeerNote = `Peer caveats: Kamailio is a proxy, not a B2BUA. It keeps one dialog end to
end (the phone's Call-ID, tags, CSeq and Via reach edgesim), parses and
rewrites less, and never builds a second dialog's requests; edgewise ends the
phone's dialog and originates its own toward Twilio, with its own relay
sessions. Both challenge the phone (407, qop=auth), both answer edgesim's 407
with the user's Twilio digest, and both anchor every call's media (rtpengine
offer/answer/delete over ng, userspace only, vs edgewise's relay); no RTP
flows in either. The peer's CPU is Kamailio's processes (4 UDP children plus
its timers and main) and rtpengine together. It runs right after edgewise in
the same run, against the same edgesim, with edgewise stopped. Kamailio sends
every INVITE to one edgesim IP; edgewise does too (one IP of the active edge).
`
