// Command bench runs edgewise's side-by-side benchmarks against the peer a user
// would pick instead, in the same run on the same machine, and prints a table.
//
// Registrar: authenticated REGISTER throughput (REGISTER → 401 → REGISTER with
// digest → 200, distinct users) against `edgewise serve` and against Kamailio
// configured as an equivalent registrar (test/bench/kamailio.cfg), both driven
// by the same SIPp scenario (test/sipp/register.xml). Each server's sustained
// knee is searched with 60 s runs, each on fresh processes: 60 s because
// sipgo-based servers pay for completed transactions only after Timer J (32 s)
// — a short run hides that cost — and because a stall of a second or two hides
// in a short step's average (every run prints its per-second timeline).
//
// Everything listens on 127.0.0.1; every SIPp run is bounded by -m and a timeout.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

func main() {
	var (
		out      = flag.String("out", "bench-results", "directory for the results tables")
		suites   = flag.String("suites", "registrar,failover,steady,token,relay,calls,webrtc,flood", "comma-separated suites to run")
		users    = flag.Int("users", 20000, "registrar: distinct users (AORs) registered")
		stepDur  = flag.Duration("step", 60*time.Second, "registrar: duration of each run of the knee search")
		ratesArg = flag.String("rates", "8000,12000,16000,20000,24000,28000,32000", "registrar: coarse REGISTER rates (per second) of the knee search, refined between the last clean and the first failed")
		regRuns  = flag.Int("reg-runs", 8, "registrar: most runs per server in the knee search")
		only     = flag.String("only", "", "registrar: run only this server (edgewise|kamailio)")
		gctrace  = flag.Bool("gctrace", false, "registrar: run edgewise with GODEBUG=gctrace=1 and keep its log in -out")
		window   = flag.Duration("window", 330*time.Second, "steady: measuring window (≥ half the 600 s expiry, so refreshes are in it)")
		callRate = flag.String("call-rates", "100,200,400,600,800,1000,1200", "calls: offered call setup rates (per second) to step through")
		callStep = flag.Duration("call-step", 10*time.Second, "calls: length of each rate step (calls offered = rate × step)")
		callHold = flag.Duration("call-hold", time.Second, "calls: how long each short call stays up before BYE")
		memCalls = flag.Int("call-mem", 1000, "calls: concurrent calls held for the memory-per-call figure")
		memHold  = flag.Duration("call-mem-hold", 20*time.Second, "calls: how long those calls stay up")
		callRuns = flag.Int("call-runs", 3, "calls: repetitions (fresh processes each); the table gives medians")
		callProf = flag.String("call-pprof", "", "calls: write edgewise's CPU and allocation profiles of each step into this directory (diagnosis: profiling costs edgewise some CPU)")
		callPeer = flag.Bool("call-peer", true, "calls: run the peer (Kamailio + rtpengine) after edgewise in each run")
		relayPin = flag.Bool("relay-pin", true, "relay: pin each relay, every thread, to one CPU (the last this process may use) and the generator to the others, so the suite measures one core of relay rather than a machine shared with the generator")
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
	// The suites run bin/edgewise and bin/edgesim: build them from the tree
	// as it is, so a run never measures a binary left from older code.
	build := exec.Command("go", "build", "-o", filepath.Join(repo, "bin")+"/", "./cmd/edgewise", "./cmd/edgesim")
	build.Dir = repo
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		log.Fatalf("build bin/edgewise and bin/edgesim: %v", err)
	}
	for _, suite := range strings.Split(*suites, ",") {
		var table string
		var err error
		switch strings.TrimSpace(suite) {
		case "registrar":
			table, err = registrarSuite(repo, *out, registrarOptions{users: *users, rates: *ratesArg,
				dur: *stepDur, maxRuns: *regRuns, only: *only, gctrace: *gctrace})
		case "failover":
			table, err = failoverSuite()
		case "steady":
			table, err = steadySuite(repo, *window)
		case "token":
			table, err = tokenSuite(repo)
		case "relay":
			table, err = relaySuite(repo, *relayPin)
		case "webrtc":
			table, err = webrtcSuite(repo)
		case "flood":
			table, err = floodSuite(repo)
		case "calls":
			var rates []int
			if rates, err = parseRates(*callRate); err == nil {
				table, err = callsSuite(repo, callsOptions{rates: rates, step: *callStep, hold: *callHold,
					memCalls: *memCalls, memHold: *memHold, runs: *callRuns, pprofDir: *callProf, peer: *callPeer})
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

var (
	reSuccess = regexp.MustCompile(`Successful call\s*\|\s*\d+\s*\|\s*(\d+)`)
	reFailed  = regexp.MustCompile(`Failed call\s*\|\s*\d+\s*\|\s*(\d+)`)
	reRetrans = regexp.MustCompile(`Retransmissions\s*\|\s*\d+\s*\|\s*(\d+)`)
)

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
