package main

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// second is one second of a SIPp run: what SIPp counted in that period
// (its -trace_stat file with -fd 1), and what the kernel dropped for a full
// receive buffer over the same second, on the server's socket and on SIPp's.
type second struct {
	ok, failed, retrans int
	srvDrops, sippDrops int
	// CPU over the second in ms: the server's, SIPp's, everything else's
	// on the box (the background load), and time the hypervisor stole.
	srvCPU, sippCPU, otherCPU, steal int
	// upstream is how many upstream registration attempts edgewise saw
	// fail in the second (the bench has no Twilio to reach, so each user
	// keeps retrying with backoff); -1 when not known.
	upstream int
}

// failureCauses are SIPp's cumulative columns that say why calls failed, or
// that show late answers (a response to a call SIPp had finished).
var failureCauses = []string{"FailedMaxUDPRetrans", "FailedUnexpectedMessage", "FailedTimeoutOnRecv",
	"FailedCallRejected", "FailedCannotSendMessage", "OutOfCallMsgs", "DeadCallMsgs"}

// readSIPpStats reads the periodic columns of a SIPp statistics file, one
// row per -fd period (the first row, SIPp's start, is dropped), and the
// non-zero failureCauses of the last row.
func readSIPpStats(r io.Reader) ([]second, string, error) {
	cr := csv.NewReader(r)
	cr.Comma = ';'
	cr.FieldsPerRecord = -1
	cr.LazyQuotes = true
	header, err := cr.Read()
	if err != nil {
		return nil, "", fmt.Errorf("sipp stats: %w", err)
	}
	col := map[string]int{}
	for i, h := range header {
		col[h] = i
	}
	need := []string{"SuccessfulCall(P)", "FailedCall(P)", "Retransmissions(P)"}
	for _, n := range need {
		if _, ok := col[n]; !ok {
			return nil, "", fmt.Errorf("sipp stats: no column %s", n)
		}
	}
	var out []second
	var last []string
	get := func(rec []string, name string) int {
		i, ok := col[name]
		if !ok || i >= len(rec) {
			return 0
		}
		n, _ := strconv.Atoi(strings.TrimSpace(rec[i]))
		return n
	}
	for first := true; ; first = false {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return out, "", fmt.Errorf("sipp stats: %w", err)
		}
		last = rec
		if first {
			continue
		}
		out = append(out, second{ok: get(rec, "SuccessfulCall(P)"), failed: get(rec, "FailedCall(P)"), retrans: get(rec, "Retransmissions(P)")})
	}
	var causes []string
	for _, c := range failureCauses {
		if n := get(last, c+"(C)"); n > 0 {
			causes = append(causes, fmt.Sprintf("%s %d", c, n))
		}
	}
	return out, strings.Join(causes, ", "), nil
}

// udpDrops reads the kernel's per-socket drop counters (/proc/net/udp):
// the sum over sockets bound to server (an "ip:port") and over sockets bound
// to clientIP (SIPp's).
func udpDrops(server, clientIP string) (srv, client int) {
	b, err := os.ReadFile("/proc/net/udp")
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) < 13 {
			continue
		}
		ip, port, ok := parseProcAddr(f[1])
		if !ok {
			continue
		}
		drops, _ := strconv.Atoi(f[len(f)-1])
		switch {
		case ip+":"+port == server:
			srv += drops
		case ip == clientIP:
			client += drops
		}
	}
	return srv, client
}

// parseProcAddr decodes /proc/net/udp's "0109007F:13D8" (IPv4 in host byte
// order, which is little-endian on the machines this runs on).
func parseProcAddr(s string) (ip, port string, ok bool) {
	h, p, found := strings.Cut(s, ":")
	if !found || len(h) != 8 {
		return "", "", false
	}
	a, err1 := strconv.ParseUint(h, 16, 32)
	n, err2 := strconv.ParseUint(p, 16, 16)
	if err1 != nil || err2 != nil {
		return "", "", false
	}
	return fmt.Sprintf("%d.%d.%d.%d", a&0xff, a>>8&0xff, a>>16&0xff, a>>24), strconv.FormatUint(n, 10), true
}

// sample is one reading of what the timeline tracks per second.
type sample struct {
	srvDrops, sippDrops int
	srvCPU, sippCPU     time.Duration
	busy, steal         time.Duration // whole box, from /proc/stat
	upstream            int
}

func takeSample(server, clientIP string, srvPids func() []int, sippPid int, upstream func() int) sample {
	sm := sample{upstream: -1}
	if upstream != nil {
		sm.upstream = upstream()
	}
	sm.srvDrops, sm.sippDrops = udpDrops(server, clientIP)
	sm.srvCPU = cpuTime(srvPids())
	sm.sippCPU = cpuTime([]int{sippPid})
	sm.busy, sm.steal = regBoxCPU()
	return sm
}

// regBoxCPU reads the machine's busy (user, nice, system, irq, softirq) and
// stolen time from /proc/stat.
func regBoxCPU() (busy, steal time.Duration) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	tick := func(i int) time.Duration {
		n, _ := strconv.ParseInt(f[i], 10, 64)
		return time.Duration(n) * time.Second / 100 // USER_HZ
	}
	return tick(1) + tick(2) + tick(3) + tick(6) + tick(7), tick(8)
}

// sampleSeconds records, every second until ctx ends, the increase of the
// server's and SIPp's socket drops and of the CPU used by the server, by
// SIPp, by everything else, and stolen; it returns the series when ctx ends.
func sampleSeconds(ctx context.Context, server, clientIP string, srvPids func() []int, sippPid int, upstream func() int) <-chan []second {
	out := make(chan []second, 1)
	go func() {
		var series []second
		last := takeSample(server, clientIP, srvPids, sippPid, upstream)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				out <- series
				return
			case <-tick.C:
				now := takeSample(server, clientIP, srvPids, sippPid, upstream)
				ms := func(d time.Duration) int { return int(d.Milliseconds()) }
				srv, sipp := now.srvCPU-last.srvCPU, now.sippCPU-last.sippCPU
				series = append(series, second{
					// A socket that closed takes its count with it.
					srvDrops:  max(0, now.srvDrops-last.srvDrops),
					sippDrops: max(0, now.sippDrops-last.sippDrops),
					srvCPU:    ms(srv), sippCPU: ms(sipp),
					otherCPU: max(0, ms(now.busy-last.busy-srv-sipp)),
					steal:    ms(now.steal - last.steal),
					upstream: -1,
				})
				if now.upstream >= 0 && last.upstream >= 0 {
					series[len(series)-1].upstream = now.upstream - last.upstream
				}
				last = now
			}
		}
	}()
	return out
}

// worst returns the index of the second with the fewest completions among
// those the offered load covers (the first second ramps up, seconds after
// dur only drain), breaking ties by the most failures.
func worst(tl []second, dur time.Duration) (int, bool) {
	// The last second of dur is cut short when SIPp reaches -m.
	end := min(len(tl), int(dur.Seconds())-1)
	w, found := 0, false
	for i := 1; i < end; i++ {
		if !found || tl[i].ok < tl[w].ok || (tl[i].ok == tl[w].ok && tl[i].failed > tl[w].failed) {
			w, found = i, true
		}
	}
	return w, found
}

var sparks = []rune("▁▂▃▄▅▆▇█")

// sparkline draws achieved/s per second against the offered rate (full
// block = the offered rate or more); a second with a failure shows as "!".
func sparkline(tl []second, rate int, dur time.Duration) string {
	var b strings.Builder
	for i := 0; i < min(len(tl), int(dur.Seconds())); i++ {
		if tl[i].failed > 0 {
			b.WriteRune('!')
			continue
		}
		lvl := tl[i].ok * (len(sparks) - 1) / max(1, rate)
		b.WriteRune(sparks[min(max(lvl, 0), len(sparks)-1)])
	}
	return b.String()
}

// timelineLines summarises a run in 5 s buckets: the lowest and highest
// achieved/s, failures and kernel UDP buffer drops, then the worst second.
func timelineLines(tl []second, rate int, dur time.Duration) []string {
	var lines []string
	for start := 0; start < len(tl); start += 5 {
		end := min(start+5, len(tl))
		lo, hi, failed, retrans, srvDrops, sippDrops := -1, 0, 0, 0, 0, 0
		other, steal, upstream := 0, 0, -1
		for _, s := range tl[start:end] {
			if lo < 0 || s.ok < lo {
				lo = s.ok
			}
			hi = max(hi, s.ok)
			failed += s.failed
			retrans += s.retrans
			srvDrops += s.srvDrops
			sippDrops += s.sippDrops
			other = max(other, s.otherCPU)
			steal = max(steal, s.steal)
			upstream = max(upstream, s.upstream)
		}
		line := fmt.Sprintf("%3d-%3ds  ok/s %6d..%-6d failed %6d  retrans %6d  udp drops: server %6d sipp %6d  max/s: other cpu %4d ms, steal %3d ms",
			start, end, lo, hi, failed, retrans, srvDrops, sippDrops, other, steal)
		if upstream >= 0 {
			line += fmt.Sprintf(", upstream failures %5d", upstream)
		}
		lines = append(lines, line)
	}
	if w, ok := worst(tl, dur); ok {
		s := tl[w]
		lines = append(lines, fmt.Sprintf("worst second t=%ds: %d ok, %d failed, %d retrans (offered %d/s); cpu ms: server %d, sipp %d, other %d, steal %d; upstream failures %d",
			w, s.ok, s.failed, s.retrans, rate, s.srvCPU, s.sippCPU, s.otherCPU, s.steal, s.upstream))
	}
	return lines
}
