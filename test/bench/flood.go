package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// floodSuite shows that junk a stranger can send without credentials costs
// edgewise no memory: INVITEs without credentials (answered 407 once, with
// no transaction), BYEs for dialogs that never existed (481 once) and
// garbage (dropped), 20,000 a second for 10 s from forged-looking sources.
// It samples the daemon's RSS, heap and goroutines before, every second
// during and after the flood, and counts what came back (an amplifier
// sends more than it receives).
func floodSuite(repo string) (string, error) {
	const (
		addr   = "127.0.9.30:5090"
		admin  = "127.0.9.30:9091"
		rate   = 20000
		length = 10 * time.Second
	)
	work, err := os.MkdirTemp("", "edgewise-flood")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(work)
	cfg := fmt.Sprintf(`log:
  level: warn
sip:
  listen: ["udp:%s"]
  realm: edgewise
twilio:
  domain: bench
  edges: [ashburn]
  dns_server: 127.0.0.1:1
store:
  path: %s/edgewise.db
admin:
  listen: %s
phones:
  - {user: alice, password: alice-secret-1, twilio_password: TwilioPass123}
`, addr, work, admin)
	cfgPath := filepath.Join(work, "edgewise.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return "", err
	}
	logf, err := os.Create(filepath.Join(work, "edgewise.log"))
	if err != nil {
		return "", err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(repo, "bin", "edgewise"), "serve", "-c", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return "", err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		_ = cmd.Wait()
	}()
	if err := waitFor(20*time.Second, func() bool { return httpOK("http://" + admin + "/healthz") }); err != nil {
		return "", fmt.Errorf("edgewise not healthy: %w", err)
	}

	sample := func() floodSample {
		s := floodSample{at: time.Now(), rssKB: rssKB(cmd.Process.Pid)}
		m, err := scrapeValues("http://"+admin+"/metrics", "go_memstats_heap_inuse_bytes", "go_goroutines")
		if err == nil {
			s.heapMB = m["go_memstats_heap_inuse_bytes"] / (1 << 20)
			s.goroutines = int(m["go_goroutines"])
		}
		return s
	}
	before := sample()

	var sent, received, bytesIn, bytesOut atomic.Int64
	var kinds [3]atomic.Int64 // INVITE, BYE, garbage
	samples := []floodSample{before}
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				samples = append(samples, sample())
			}
		}
	})
	const senders = 4
	var readers, writers sync.WaitGroup
	var conns []*net.UDPConn
	start := time.Now()
	for w := range senders {
		conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 9, byte(40+w))})
		if err != nil {
			close(stop)
			return "", err
		}
		conns = append(conns, conn)
		dst, _ := net.ResolveUDPAddr("udp", addr)
		readers.Go(func() { // ends when the socket closes
			buf := make([]byte, 65535)
			for {
				n, err := conn.Read(buf)
				if err != nil {
					return
				}
				received.Add(1)
				bytesIn.Add(int64(n))
			}
		})
		writers.Go(func() {
			me := conn.LocalAddr().String()
			per := rate / senders / 1000 // per millisecond
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			for i := 0; time.Since(start) < length; {
				<-tick.C
				for range per {
					i++
					kind := i % 4
					var msg string
					switch kind {
					case 0, 1:
						msg = floodRequest("INVITE", addr, me, w, i, "")
						kinds[0].Add(1)
					case 2:
						msg = floodRequest("BYE", addr, me, w, i, "nope")
						kinds[1].Add(1)
					default:
						msg = "\x16\x03\x01 not SIP at all " + strconv.Itoa(i)
						kinds[2].Add(1)
					}
					if n, err := conn.WriteToUDP([]byte(msg), dst); err == nil {
						sent.Add(1)
						bytesOut.Add(int64(n))
					}
				}
			}
		})
	}
	writers.Wait()
	elapsed := time.Since(start)
	// Two seconds for late answers, then five quiet ones: what the flood
	// left behind.
	time.Sleep(2 * time.Second)
	for _, c := range conns {
		c.Close()
	}
	readers.Wait()
	time.Sleep(3 * time.Second)
	close(stop)
	sampler.Wait()
	after := sample()
	samples = append(samples, after)

	peak := before
	for _, s := range samples {
		if s.rssKB > peak.rssKB {
			peak.rssKB = s.rssKB
		}
		if s.heapMB > peak.heapMB {
			peak.heapMB = s.heapMB
		}
		if s.goroutines > peak.goroutines {
			peak.goroutines = s.goroutines
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n## Flood: junk without credentials, %d/s for %s (edgewise %s, UDP)\n\n", rate, length, addr)
	fmt.Fprintf(&b, "Sent %d requests in %s (%.0f/s): %d INVITEs without credentials, %d BYEs for unknown dialogs, %d garbage datagrams.\n",
		sent.Load(), elapsed.Round(time.Millisecond), float64(sent.Load())/elapsed.Seconds(), kinds[0].Load(), kinds[1].Load(), kinds[2].Load())
	fmt.Fprintf(&b, "Answers: %d (%.2f per INVITE/BYE sent), %d bytes back for %d bytes sent (amplification %.2f×).\n\n",
		received.Load(), float64(received.Load())/float64(kinds[0].Load()+kinds[1].Load()),
		bytesIn.Load(), bytesOut.Load(), float64(bytesIn.Load())/float64(bytesOut.Load()))
	b.WriteString("| | RSS | heap in use | goroutines |\n| --- | --- | --- | --- |\n")
	row := func(name string, s floodSample) {
		fmt.Fprintf(&b, "| %s | %.1f MB | %.1f MB | %d |\n", name, float64(s.rssKB)/1024, s.heapMB, s.goroutines)
	}
	row("before", before)
	row("peak during the flood", peak)
	row("5 s after", after)
	return b.String(), nil
}

type floodSample struct {
	at         time.Time
	rssKB      int64
	heapMB     float64
	goroutines int
}

// floodRequest is one junk request, unique by worker and sequence so
// nothing can be mistaken for a retransmission.
func floodRequest(method, server, me string, w, i int, toTag string) string {
	to := "<sip:+15550100@edgewise>"
	if toTag != "" {
		to += ";tag=" + toTag
	}
	return fmt.Sprintf("%s sip:+15550100@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bKf%d-%d;rport\r\nMax-Forwards: 70\r\n"+
		"From: <sip:alice@edgewise>;tag=f%d\r\nTo: %s\r\nCall-ID: flood-%d-%d@bench\r\nCSeq: 1 %s\r\n"+
		"Contact: <sip:alice@%s>\r\nContent-Length: 0\r\n\r\n", method, server, me, w, i, i, to, w, i, method, me)
}

// rssKB reads a process's resident set size from /proc.
func rssKB(pid int) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	return 0
}

// scrapeValues reads untyped values of the named metrics (no labels) from a
// Prometheus text endpoint.
func scrapeValues(url string, names ...string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, n := range names {
			if v, ok := strings.CutPrefix(line, n+" "); ok {
				f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
				if err == nil {
					out[n] = f
				}
			}
		}
	}
	return out, sc.Err()
}
