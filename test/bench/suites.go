package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/emiago/sipgo/sip"
	"golang.org/x/sys/unix"

	"github.com/edgewise-sip/edgewise/test/bench/upstreambench"
	"github.com/edgewise-sip/edgewise/token"
)

// failoverSuite measures, with 1,000 users registered upstream, how long it
// takes after the primary edge stops answering (drop, right after a
// keepalive found it alive: the worst case) to (a) declare it down, (b) have
// every user on the secondary, (c) the longest any user was registered
// nowhere — with OPTIONS keepalives, REGISTER keepalives, and none (failover
// only on refresh, which is how a phone or Asterisk behaves).
func failoverSuite() (string, error) {
	sip.SetDefaultLogger(slog.New(slog.DiscardHandler))
	var figs []upstreambench.Figures
	for _, c := range []upstreambench.Config{
		{KeepaliveMethod: "options", WorstPhase: true},
		{KeepaliveMethod: "register", WorstPhase: true},
		// Without keepalives only a refresh finds the dead edge; a 60 s expiry
		// keeps the run short (600 s would take ten times as long, same shape).
		{KeepaliveMethod: "none", RegisterExpires: 60 * time.Second, WorstPhase: true},
	} {
		log.Printf("== failover, keepalive %s", c.KeepaliveMethod)
		f, err := upstreambench.Failover(context.Background(), c)
		if err != nil {
			return "", err
		}
		figs = append(figs, f)
	}
	return "\nFailover with 1,000 users, primary edge dropped (worst phase)\n" + upstreambench.Table(figs), nil
}

// steadySuite registers 10,000 users locally (SIPp) and upstream (edgesim,
// 600 s registrations, OPTIONS keepalives every 10 s), then measures
// edgewise's CPU and memory over a window long enough to include a round of
// refreshes.
func steadySuite(repo string, window time.Duration) (string, error) {
	const users = 10000
	work, err := os.MkdirTemp("", "edgewise-steady")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)

	simCfg := filepath.Join(work, "edgesim.yaml")
	var b strings.Builder
	b.WriteString("domain: bench\nedges:\n")
	b.WriteString("  - {name: ashburn, ips: [127.0.9.11, 127.0.9.12, 127.0.9.13], port: 5060}\n")
	b.WriteString("  - {name: umatilla, ips: [127.0.9.21, 127.0.9.22, 127.0.9.23], port: 5060}\n")
	b.WriteString("dns: {listen: 127.0.9.10:5353, ttl: 600}\ncontrol: {listen: 127.0.9.10:9070}\ncredentials:\n")
	for i := 0; i < users; i++ {
		fmt.Fprintf(&b, "  - {user: u%06d, password: Tw%06dPass}\n", i, i)
	}
	if err := os.WriteFile(simCfg, []byte(b.String()), 0o600); err != nil {
		return "", err
	}
	sim := exec.Command(filepath.Join(repo, "bin", "edgesim"), "-c", simCfg, "-log-level", "warn")
	sim.Stdout, sim.Stderr = io.Discard, io.Discard
	if err := sim.Start(); err != nil {
		return "", err
	}
	defer func() { _ = sim.Process.Signal(syscall.SIGTERM); _ = sim.Wait() }()
	if err := waitFor(20*time.Second, func() bool { return httpOK("http://127.0.9.10:9070/healthz") }); err != nil {
		return "", fmt.Errorf("edgesim: %w", err)
	}

	b.Reset()
	b.WriteString("log:\n  level: warn\nsip:\n  listen: [\"udp:127.0.9.1:5060\"]\n  realm: edgewise\n  lockout: {failures: 0}\n")
	b.WriteString("twilio:\n  domain: bench\n  edges: [ashburn, umatilla]\n  dns_server: 127.0.9.10:5353\n")
	b.WriteString("  register_expires: 600s\n  keepalive: {method: options, interval: 10s}\n  signalling_cidrs: [127.0.9.0/24]\n")
	fmt.Fprintf(&b, "store:\n  path: %s/edgewise.db\nadmin:\n  listen: 127.0.9.1:9080\nphones:\n", work)
	for i := 0; i < users; i++ {
		fmt.Fprintf(&b, "  - {user: u%06d, password: pw-u%06d, twilio_password: Tw%06dPass}\n", i, i, i)
	}
	cfg := filepath.Join(work, "edgewise.yaml")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
		return "", err
	}
	ew := exec.Command(filepath.Join(repo, "bin", "edgewise"), "serve", "-c", cfg)
	ew.Stdout, ew.Stderr = io.Discard, io.Discard
	if err := ew.Start(); err != nil {
		return "", err
	}
	defer func() { _ = ew.Process.Signal(syscall.SIGINT); _ = ew.Wait() }()
	if err := waitFor(30*time.Second, func() bool { return httpOK("http://127.0.9.1:9080/healthz") }); err != nil {
		return "", fmt.Errorf("edgewise: %w", err)
	}

	usersCSV := filepath.Join(work, "users.csv")
	if err := writeUsers(usersCSV, users); err != nil {
		return "", err
	}
	reg := exec.Command("sipp", "-sf", filepath.Join(repo, "test", "sipp", "register.xml"),
		"-inf", usersCSV, "-i", "127.0.9.3", "-r", "1000", "-m", fmt.Sprint(users),
		"-buff_size", "4194304", "-timeout", "120s", "-nostdin", "127.0.9.1:5060")
	reg.Dir = work
	if out, err := reg.CombinedOutput(); err != nil {
		return "", fmt.Errorf("sipp registering %d users: %w\n%s", users, err, lastLines(string(out), 30))
	}
	// Every user registered upstream: edgesim's shared table holds them all.
	log.Printf("== steady: %d users registered locally; waiting for the upstream registrations", users)
	start := time.Now()
	if err := waitFor(3*time.Minute, func() bool { return upstreamCount("http://127.0.9.10:9070/v1/bindings") >= users }); err != nil {
		return "", fmt.Errorf("upstream registrations: %w (%d of %d)", err, upstreamCount("http://127.0.9.10:9070/v1/bindings"), users)
	}
	upIn := time.Since(start)

	log.Printf("== steady: measuring for %v", window)
	pid := []int{ew.Process.Pid}
	cpu0, t0 := cpuTime(pid), time.Now()
	time.Sleep(window)
	cpu, wall := cpuTime(pid)-cpu0, time.Since(t0)
	rssMB := float64(rss(pid)) / 1024
	after := upstreamCount("http://127.0.9.10:9070/v1/bindings")

	var o strings.Builder
	fmt.Fprintf(&o, "\nSteady state: %d users, 600 s upstream registrations, OPTIONS keepalive every 10 s\n", users)
	fmt.Fprintf(&o, "upstream registered in %v after local registration\n", upIn.Round(time.Second))
	fmt.Fprintf(&o, "%-22s %10s\n", "window", wall.Round(time.Second))
	fmt.Fprintf(&o, "%-22s %9.1f%%   (target < 10%%)\n", "CPU of one core", 100*cpu.Seconds()/wall.Seconds())
	fmt.Fprintf(&o, "%-22s %8.0f MB   (target < 200 MB)\n", "RSS", rssMB)
	fmt.Fprintf(&o, "%-22s %10d   (of %d)\n", "upstream bindings", after, users)
	return o.String(), nil
}

func httpOK(url string) bool {
	resp, err := http.Get(url)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// upstreamCount counts live bindings in edgesim's shared location table.
func upstreamCount(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var body struct {
		Bindings []json.RawMessage `json:"bindings"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return -1
	}
	return len(body.Bindings)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// tokenSuite loads one edgewise token replica and, in the same run with the
// same generator, a reference server written as Twilio's quickstarts do
// (Node.js with the official twilio package, test/bench/tokenref).
func tokenSuite(repo string) (string, error) {
	const conc, requests = 16, 60000
	const dur = 20 * time.Second
	ctx := context.Background()

	log.Printf("== token: edgewise")
	ours, err := token.Bench(ctx, token.BenchOptions{Concurrency: conc, Requests: requests, Duration: dur})
	if err != nil {
		return "", err
	}

	log.Printf("== token: Node.js reference (npm twilio)")
	ref := filepath.Join(repo, "test", "bench", "tokenref")
	install := exec.Command("npm", "ci", "--no-audit", "--no-fund")
	install.Dir = ref
	if out, err := install.CombinedOutput(); err != nil {
		return "", fmt.Errorf("npm ci in %s: %w\n%s", ref, err, out)
	}
	node := exec.Command("node", "server.mjs", "127.0.0.1", "0")
	node.Dir = ref
	stdout, err := node.StdoutPipe()
	if err != nil {
		return "", err
	}
	node.Stderr = os.Stderr
	if err := node.Start(); err != nil {
		return "", err
	}
	defer func() { _ = node.Process.Signal(syscall.SIGTERM); _ = node.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reference server did not start: %w", err)
	}
	addr := strings.TrimSpace(strings.TrimPrefix(line, "listening "))
	refRes, err := token.Load(ctx, token.LoadOptions{
		Client:      &token.Client{Providers: []string{"http://" + addr + "/v1/token"}, Timeout: 5 * time.Second, Username: "bench", Password: "bench-password"},
		Concurrency: conc, Requests: requests, Duration: dur,
	})
	if err != nil {
		return "", err
	}

	var o strings.Builder
	fmt.Fprintf(&o, "\nAccess tokens, one replica, %d concurrent clients over loopback HTTP (generator on the same cores)\n", conc)
	fmt.Fprintf(&o, "%-22s %9s %8s %9s %9s\n", "server", "tokens/s", "failed", "p50", "p99")
	for _, r := range []struct {
		name string
		res  token.LoadResult
	}{{"edgewise", ours}, {"node twilio (ref)", refRes}} {
		fmt.Fprintf(&o, "%-22s %9.0f %8d %9s %9s\n", r.name, r.res.PerSecond, r.res.Failures,
			r.res.P50.Round(10*time.Microsecond), r.res.P99.Round(10*time.Microsecond))
	}
	if refRes.PerSecond > 0 {
		fmt.Fprintf(&o, "ratio edgewise/reference: %.2f  (target ≥ 3; target ≥ 20,000 tokens/s with p99 < 5 ms)\n", ours.PerSecond/refRes.PerSecond)
	}
	return o.String(), nil
}

// relaySuite runs test/bench/relaytest's relay benchmark: edgewise's RTP relay and
// rtpengine (userspace, driven over its ng protocol) with the same generator,
// (a) many 50 pps G.711 streams, (b) one stream at rising rates, (c) one-way
// latency at 1,000 calls. It prints its own table. With pin, each relay
// runs on the last CPU this process may use and the generator on the
// others (relaybench -relay-cpu); with one CPU nothing is pinned.
// relayBenchPkg and webrtcBenchPkg are the programs two suites run, relative
// to the repository root (TestSuiteProgramsExist keeps them true).
const (
	relayBenchPkg  = "./test/bench/relaytest/relaybench"
	webrtcBenchPkg = "./test/bench/webrtcbench"
)

func relaySuite(repo string, pin bool) (string, error) {
	relayCPU := -1
	if pin {
		var set unix.CPUSet
		if err := unix.SchedGetaffinity(0, &set); err == nil && set.Count() >= 2 {
			for c := range len(set) * 64 {
				if set.IsSet(c) {
					relayCPU = c
				}
			}
		} else {
			log.Printf("relay: fewer than two CPUs, nothing to pin the generator to: running unpinned")
		}
	}
	cmd := exec.Command("go", "run", relayBenchPkg, "-relay-cpu", strconv.Itoa(relayCPU))
	cmd.Dir = repo
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("relaybench: %w", err)
	}
	return "\n" + string(out), nil
}
