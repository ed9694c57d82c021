package relaytest

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Suite is the side-by-side relay benchmark of issue 4: (a) the most 50 pps
// G.711 streams relayed cleanly, (b) one stream at the highest clean rate,
// (c) one-way latency at LatencyCalls concurrent calls. Steps run in order
// and a target's series stops at its first unclean step (past the knee
// every relay collapses). Every step is bounded by Warmup+Step plus setup
// and drain.
type Suite struct {
	Calls        []int // (a) calls per step, two 50 pps streams each
	SingleRates  []int // (b) packets/s of the single stream
	LatencyCalls int   // (c)
	Step         time.Duration
	Warmup       time.Duration
	// Before each step, wait up to QuietWait for the machine to be idle
	// (under QuietBelow cores busy over half a second): on a shared box
	// other work would otherwise be measured as the relay's weakness.
	QuietBelow float64
	QuietWait  time.Duration
	// Retries is how many times a failed step is run again before its
	// series stops: another process's burst on a shared machine can fail
	// one step by chance, and a relay's knee is where it fails every try.
	// A try that failed while other processes were busy (Disturbed) is
	// run again up to maxDisturbed more times. The table shows the failed
	// tries.
	Retries int
	// RelayCPU, when ≥ 0, pins every relay under test (all its threads) to
	// that one CPU and the generator (this process) to all the others, so
	// that a step measures one core of relay, not a machine the relay
	// shares with the generator. -1: nothing pinned.
	RelayCPU int
	Log      io.Writer // progress lines; nil = none
}

// DefaultSuite spans 50,000–475,000 pps for (a): on a quiet 2-CPU machine
// both relays have relayed 275,000–300,000 cleanly unpinned, and one core
// of edgewise's relay more than that, so the steps go past it to find the
// knees. 4,750 calls stays below the 5,000 that Relayd's and rtpengine's
// default ports hold (a pair another socket holds is skipped, and running
// out of ports would end the suite, not fail the step).
func DefaultSuite() Suite {
	return Suite{
		Calls:        []int{500, 1000, 1250, 1500, 1750, 2000, 2250, 2500, 2750, 3000, 3250, 3500, 3750, 4000, 4250, 4500, 4750},
		SingleRates:  []int{10000, 15000, 20000, 30000, 45000, 60000, 80000, 100000, 130000, 160000, 200000},
		LatencyCalls: 1000,
		Step:         10 * time.Second,
		Warmup:       time.Second,
		QuietBelow:   0.3,
		QuietWait:    2 * time.Minute,
		Retries:      1,
		RelayCPU:     -1,
	}
}

// TargetReport is one relay's figures.
type TargetReport struct {
	Name    string
	Streams []Result
	Single  []Result
	Latency *Result
}

// BestStreams is the clean step with the most relayed packets per second.
func (t TargetReport) BestStreams() (Result, bool) { return best(t.Streams) }

// BestSingle is the clean single-stream step with the highest rate.
func (t TargetReport) BestSingle() (Result, bool) { return best(t.Single) }

func best(rs []Result) (Result, bool) {
	var b Result
	ok := false
	for _, r := range rs {
		if r.Clean() && r.RelayedPPS() > b.RelayedPPS() {
			b, ok = r, true
		}
	}
	return b, ok
}

// Report is a whole suite run.
type Report struct {
	Suite   Suite
	Started time.Time
	// RelayCPUs and GenCPUs are where a pinned run put the relays and the
	// generator (empty: not pinned).
	RelayCPUs, GenCPUs string
	Baseline           *Result // (c) without a relay: generator to generator
	Targets            []TargetReport
}

func (s Suite) logf(format string, args ...any) {
	if s.Log != nil {
		fmt.Fprintf(s.Log, format+"\n", args...)
	}
}

// maxDisturbed bounds the tries of a step that failed while other
// processes were busy (Result.Disturbed), on top of Suite.Retries.
const maxDisturbed = 3

// pinner is a Target that can be pinned to CPUs before it starts.
type pinner interface{ Pin(unix.CPUSet) }

// Run measures every target in turn (each started and stopped here). With
// RelayCPU ≥ 0 it pins this process to the other CPUs until it returns.
func (s Suite) Run(ctx context.Context, targets ...Target) (Report, error) {
	rep := Report{Suite: s, Started: time.Now()}
	var relaySet, genSet unix.CPUSet
	pinned := s.RelayCPU >= 0
	if pinned {
		var err error
		if relaySet, genSet, err = splitCPUs(s.RelayCPU); err != nil {
			return rep, err
		}
		for _, t := range targets {
			p, ok := t.(pinner)
			if !ok {
				return rep, fmt.Errorf("%s cannot be pinned to a CPU", t.Name())
			}
			p.Pin(relaySet)
		}
		restore, err := pinSelf(genSet)
		if err != nil {
			return rep, err
		}
		defer restore()
		rep.RelayCPUs, rep.GenCPUs = cpuList(relaySet), cpuList(genSet)
		s.logf("== pinned: relays on CPU %s, generator on CPU %s (GOMAXPROCS %d)", rep.RelayCPUs, rep.GenCPUs, runtime.GOMAXPROCS(0))
	}
	// The first look at a thread only notes its CPU time: a thread idle
	// since before the pinning still shows where it last ran then.
	watch := pinWatch{}
	if pinned {
		watch.check([]int{os.Getpid()}, genSet)
	}
	checkPins := func(r *Result, pids []int) {
		if !pinned {
			return
		}
		rc, gc := watch.check(pids, relaySet), watch.check([]int{os.Getpid()}, genSet)
		r.RelayPin, r.GenPin = &rc, &gc
	}
	if s.LatencyCalls > 0 {
		s.logf("== baseline: %d calls generator to generator", s.LatencyCalls)
		bg := s.waitQuiet(ctx)
		r, err := Run(ctx, Load{Direct: true, Calls: s.LatencyCalls, SendBatch: 1, Duration: s.Step, Warmup: s.Warmup})
		r.Background = bg
		checkPins(&r, nil)
		if err != nil {
			return rep, fmt.Errorf("baseline: %w", err)
		}
		rep.Baseline = &r
	}
	for _, t := range targets {
		rep.Targets = append(rep.Targets, TargetReport{Name: t.Name()})
		s.logf("== starting %s", t.Name())
		if err := t.Start(ctx); err != nil {
			return rep, fmt.Errorf("%s: %w", t.Name(), err)
		}
		defer t.Stop()
		if pinned {
			watch.check(t.PIDs(), relaySet)
		}
	}
	// Targets take turns at each step, so background load that comes and
	// goes on a shared machine hits them alike.
	step := func(t Target, l Load) (Result, error) {
		l.NG, l.PIDs, l.Duration, l.Warmup = t.NG(), t.PIDs(), s.Step, s.Warmup
		bg := s.waitQuiet(ctx)
		r, err := Run(ctx, l)
		r.Background = bg
		checkPins(&r, l.PIDs)
		s.logf("%-10s calls=%-5d streams=%-5d offered=%-7.0f sent=%-7.0f relayed=%-7.0f loss=%.3f%% (late %d, gen drops %d, udp drops %d) p50=%v p99=%v cpu=%.2f gen=%.2f box=%.2f cores=%s bg=%.2f setup=%v%s",
			t.Name(), r.Calls, r.Streams, r.Offered, r.SentPPS, r.RelayedPPS(), 100*r.Loss, r.Late, r.GenDrops, r.UDPDrops, r.P50, r.P99, r.RelayCPU, r.GenCPU, r.BoxCPU, coresText(r.CoreBusy), r.Background, r.Setup.Round(time.Millisecond), pinText(r))
		if err != nil {
			err = fmt.Errorf("%s: %w", t.Name(), err)
		}
		return r, err
	}
	series := func(loads []Load, pick func(*TargetReport) *[]Result) error {
		done := make([]bool, len(targets))
		for _, l := range loads {
			for i, t := range targets {
				if done[i] {
					continue
				}
				r, err := step(t, l)
				var failed []Result
				for tries, disturbed := 0, 0; err == nil && !r.Clean(); {
					if r.Disturbed() && disturbed < maxDisturbed {
						disturbed++
					} else if tries < s.Retries {
						tries++
					} else {
						break
					}
					failed = append(failed, r)
					s.logf("%-10s not clean (other processes used %.2f cores): the same step again", t.Name(), r.OtherCPU())
					r, err = step(t, l)
				}
				r.Failed = failed
				if err != nil {
					return err
				}
				list := pick(&rep.Targets[i])
				*list = append(*list, r)
				done[i] = !r.Clean()
			}
		}
		return nil
	}
	var a, b []Load
	for _, c := range s.Calls {
		a = append(a, Load{Calls: c, Tag: fmt.Sprintf("a%d", c)})
	}
	for _, rate := range s.SingleRates {
		b = append(b, Load{Calls: 1, OneWay: true, PPS: rate, Tag: fmt.Sprintf("b%d", rate)})
	}
	if err := series(a, func(t *TargetReport) *[]Result { return &t.Streams }); err != nil {
		return rep, err
	}
	if err := series(b, func(t *TargetReport) *[]Result { return &t.Single }); err != nil {
		return rep, err
	}
	if s.LatencyCalls > 0 {
		for i, t := range targets {
			r, err := step(t, Load{Calls: s.LatencyCalls, SendBatch: 1, Tag: "c"})
			if err != nil {
				return rep, err
			}
			rep.Targets[i].Latency = &r
		}
	}
	return rep, nil
}

func coresText(c []float64) string {
	parts := make([]string, len(c))
	for i, x := range c {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(parts, "/")
}

func pinText(r Result) string {
	if r.RelayPin == nil {
		return ""
	}
	t := fmt.Sprintf(" pin: relay %d threads, generator %d", r.RelayPin.Threads, r.GenPin.Threads)
	if out := append(slices.Clone(r.RelayPin.Outside), r.GenPin.Outside...); len(out) > 0 {
		t += " OFF THEIR CPUS: " + strings.Join(out, "; ")
	}
	return t
}

// waitQuiet waits, at most QuietWait, until the machine is idle and returns
// the cores busy in the last half second before the step.
func (s Suite) waitQuiet(ctx context.Context) float64 {
	busy := WaitQuiet(ctx, s.QuietWait, s.QuietBelow)
	if busy >= s.QuietBelow {
		s.logf("machine still busy (%.2f cores) after %v; measuring anyway", busy, s.QuietWait)
	}
	return busy
}

// WaitQuiet waits, at most wait, until fewer than below cores of the
// machine are busy over half a second, and returns the cores busy in the
// last half second (0 when ctx ends). Benchmarks call it before a step so
// that another process's burst does not land in the measurement.
func WaitQuiet(ctx context.Context, wait time.Duration, below float64) float64 {
	deadline := time.Now().Add(wait)
	for {
		b0 := boxCPU()
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(500 * time.Millisecond):
		}
		busy := (boxCPU() - b0).Seconds() / 0.5
		if busy < below || time.Now().After(deadline) {
			return busy
		}
	}
}

func (r Report) target(name string) *TargetReport {
	for i := range r.Targets {
		if r.Targets[i].Name == name {
			return &r.Targets[i]
		}
	}
	return nil
}

// Table renders the report as Markdown: every step of every target, the
// best clean figures and the ratio of the first target to the second.
func (r Report) Table() string {
	var b strings.Builder
	s := r.Suite
	fmt.Fprintf(&b, "# RTP relay: %s\n\n", strings.Join(r.names(), " vs "))
	where := "generator in the same box, on the same CPUs"
	cpuNote := "cpu = cores the relay process used (in brackets: cores busy machine-wide, generator and kernel included); "
	if r.RelayCPUs != "" {
		where = fmt.Sprintf("every thread of each relay pinned to CPU %s (rtpengine with --num-threads one per pinned CPU), the generator pinned to CPU %s", r.RelayCPUs, r.GenCPUs)
		cpuNote = "cpu = cores the relay process used (in brackets: how busy the relay's CPU was, kernel and other processes included); "
	}
	fmt.Fprintf(&b, "%s, %d CPUs, loopback, %s. 172-byte G.711 packets; each step %v after %v warm-up. "+
		"Loss counts packets later than 100 ms as lost (a jitter buffer drops them). "+
		"Clean = loss < 0.5 %%, p99 one-way delay < %v (loopback alone adds well under 1 ms) and the generator sent ≥ 98 %% of the offered rate. "+
		cpuNote+
		"µs/pkt = relay CPU per relayed packet, the figure least disturbed by other load on the machine; "+
		"gen = cores the generator used / CPUs it may use, and datagrams dropped at its own full receive queues; "+
		"a failed step marked \"generator limit\" is where the generator, not the relay, ran out (it sent < 98 %%, half the loss was at its queues, or it used ≥ 95 %% of its CPUs); "+
		"bg = cores busy just before the step (other work on a shared machine; each step waits up to %v for < %.1f).\n\n",
		r.Started.Format("2006-01-02 15:04"), runtime.NumCPU(), where, s.Step, s.Warmup, MaxCleanP99, s.QuietWait, s.QuietBelow)

	b.WriteString("## (a) many 50 pps streams\n\n| calls | streams | offered pps |")
	for _, t := range r.Targets {
		fmt.Fprintf(&b, " %s relayed pps | loss | p99 | cpu | µs/pkt | gen | bg |", t.Name)
	}
	b.WriteString("\n|---|---|---|" + strings.Repeat("---|---|---|---|---|---|---|", len(r.Targets)) + "\n")
	var calls []int
	for _, t := range r.Targets {
		for _, x := range t.Streams {
			if !slices.Contains(calls, x.Calls) {
				calls = append(calls, x.Calls)
			}
		}
	}
	slices.Sort(calls)
	for _, c := range calls {
		fmt.Fprintf(&b, "| %d | %d | %.0f |", c, 2*c, float64(100*c))
		for _, t := range r.Targets {
			i := slices.IndexFunc(t.Streams, func(x Result) bool { return x.Calls == c })
			if i < 0 {
				b.WriteString(" — | | | | | | |")
				continue
			}
			x := t.Streams[i]
			fmt.Fprintf(&b, " %.0f | %s | %v | %s | %.1f | %.2f/%d, %d | %.2f |", x.RelayedPPS(), lossCell(x), x.P99.Round(100*time.Microsecond), r.cpuCell(x), x.CPUPerPacket(), x.GenCPU, x.GenCores, x.GenDrops, x.Background)
		}
		b.WriteString("\n")
	}
	r.bestLine(&b, "best clean", func(t TargetReport) []Result { return t.Streams })

	if len(s.SingleRates) > 0 {
		r.singleTable(&b)
	}
	if s.LatencyCalls > 0 {
		r.latencyTable(&b)
	}
	if r.RelayCPUs != "" {
		r.pinSection(&b)
	}
	return b.String()
}

func (r Report) singleTable(b *strings.Builder) {
	b.WriteString("\n## (b) one stream at maximum rate\n\n| offered pps |")
	for _, t := range r.Targets {
		fmt.Fprintf(b, " %s relayed pps | loss | cpu | bg |", t.Name)
	}
	b.WriteString("\n|---|" + strings.Repeat("---|---|---|---|", len(r.Targets)) + "\n")
	var rates []float64
	for _, t := range r.Targets {
		for _, x := range t.Single {
			if !slices.Contains(rates, x.Offered) {
				rates = append(rates, x.Offered)
			}
		}
	}
	slices.Sort(rates)
	for _, rate := range rates {
		fmt.Fprintf(b, "| %.0f |", rate)
		for _, t := range r.Targets {
			i := slices.IndexFunc(t.Single, func(x Result) bool { return x.Offered == rate })
			if i < 0 {
				b.WriteString(" — | | | |")
				continue
			}
			x := t.Single[i]
			fmt.Fprintf(b, " %.0f | %s | %s | %.2f |", x.RelayedPPS(), lossCell(x), r.cpuCell(x), x.Background)
		}
		b.WriteString("\n")
	}
	r.bestLine(b, "best clean", func(t TargetReport) []Result { return t.Single })
}

func (r Report) latencyTable(b *strings.Builder) {
	s := r.Suite
	fmt.Fprintf(b, "\n## (c) one-way latency at %d calls (%d pps), send stamp to kernel receive stamp\n\n", s.LatencyCalls, 100*s.LatencyCalls)
	b.WriteString("| path | p50 | p99 | max | added p50 | added p99 | loss | bg |\n|---|---|---|---|---|---|---|---|\n")
	if r.Baseline != nil {
		fmt.Fprintf(b, "| direct (no relay) | %v | %v | %v | | | %s | %.2f |\n", r.Baseline.P50, r.Baseline.P99, r.Baseline.Max, lossCell(*r.Baseline), r.Baseline.Background)
	}
	for _, t := range r.Targets {
		if t.Latency == nil {
			continue
		}
		x := t.Latency
		a50, a99 := "", ""
		if r.Baseline != nil {
			a50, a99 = (x.P50 - r.Baseline.P50).String(), (x.P99 - r.Baseline.P99).String()
		}
		fmt.Fprintf(b, "| through %s | %v | %v | %v | %s | %s | %s | %.2f |\n", t.Name, x.P50, x.P99, x.Max, a50, a99, lossCell(*x), x.Background)
	}
}

// cpuCell is the relay's cores and, in brackets, the machine's (not
// pinned) or the relay CPU's (pinned) busy cores.
func (r Report) cpuCell(x Result) string {
	if r.RelayCPUs != "" && r.Suite.RelayCPU < len(x.CoreBusy) {
		return fmt.Sprintf("%.2f (%.2f)", x.RelayCPU, x.CoreBusy[r.Suite.RelayCPU])
	}
	return fmt.Sprintf("%.2f (%.2f)", x.RelayCPU, x.BoxCPU)
}

// pinSection says whether every thread stayed where it was pinned, as
// checked after every step.
func (r Report) pinSection(b *strings.Builder) {
	fmt.Fprintf(b, "\n## Pinning, checked after every step (each thread's allowed CPUs and the CPU it last ran on)\n\n")
	line := func(name, cpus string, rs []Result, pick func(Result) *PinCheck) {
		steps, most := 0, 0
		var outside []string
		for _, x := range rs {
			c := pick(x)
			if c == nil {
				continue
			}
			steps++
			most = max(most, c.Threads)
			outside = append(outside, c.Outside...)
		}
		if steps == 0 {
			return
		}
		if len(outside) == 0 {
			fmt.Fprintf(b, "- %s: up to %d threads, all on CPU %s at each of %d steps\n", name, most, cpus, steps)
			return
		}
		fmt.Fprintf(b, "- %s: **%d thread checks off CPU %s** over %d steps: %s\n", name, len(outside), cpus, steps, strings.Join(outside[:min(len(outside), 5)], "; "))
	}
	var all []Result
	if r.Baseline != nil {
		all = append(all, *r.Baseline)
	}
	for _, t := range r.Targets {
		rs := t.results()
		line(t.Name, r.RelayCPUs, rs, func(x Result) *PinCheck { return x.RelayPin })
		all = append(all, rs...)
	}
	line("generator", r.GenCPUs, all, func(x Result) *PinCheck { return x.GenPin })
}

func (t TargetReport) results() []Result {
	rs := append(slices.Clone(t.Streams), t.Single...)
	if t.Latency != nil {
		rs = append(rs, *t.Latency)
	}
	return rs
}

func (r Report) names() []string {
	var n []string
	for _, t := range r.Targets {
		n = append(n, t.Name)
	}
	return n
}

func lossCell(x Result) string {
	c := lossMark(x)
	for _, f := range x.Failed {
		d := ""
		if f.Disturbed() {
			d = fmt.Sprintf(", other processes %.2f cores", f.OtherCPU())
		}
		c += fmt.Sprintf(" (a try before: %s, p99 %v%s)", lossMark(f), f.P99.Round(time.Millisecond), d)
	}
	return c
}

func lossMark(x Result) string {
	c := fmt.Sprintf("%.2f %%", 100*x.Loss)
	if !x.Clean() {
		if x.GeneratorLimited() {
			c += " (generator limit)"
		} else {
			c += " ✗"
		}
	}
	return c
}

// bestLine gives each target's best clean step and the ratio of the first
// to the second. A series stops at its first unclean step; when that step
// was the generator's limit, or every step was clean, the relay's own knee
// lies higher and the figure is a lower bound.
func (r Report) bestLine(b *strings.Builder, label string, series func(TargetReport) []Result) {
	var vals []float64
	var open []bool
	fmt.Fprintf(b, "\n%s:", label)
	for _, t := range r.Targets {
		rs := series(t)
		x, ok := best(rs)
		var why string
		if n := len(rs); n > 0 {
			switch last := rs[n-1]; {
			case last.Clean():
				why = "every step was clean"
			case last.GeneratorLimited():
				why = "the next step was the generator's limit"
			}
		}
		open = append(open, why != "")
		if !ok {
			fmt.Fprintf(b, " %s none;", t.Name)
			vals = append(vals, 0)
			continue
		}
		if why != "" {
			fmt.Fprintf(b, " %s **≥ %.0f pps** (%s);", t.Name, x.RelayedPPS(), why)
		} else {
			fmt.Fprintf(b, " %s **%.0f pps**;", t.Name, x.RelayedPPS())
		}
		vals = append(vals, x.RelayedPPS())
	}
	if len(vals) >= 2 && vals[1] > 0 {
		rel := ""
		switch {
		case open[0] && open[1]:
			rel = "(both lower bounds) "
		case open[0]:
			rel = "≥ "
		case open[1]:
			rel = "≤ "
		}
		fmt.Fprintf(b, " ratio %s/%s = %s**%.2f×**", r.Targets[0].Name, r.Targets[1].Name, rel, vals[0]/vals[1])
	}
	b.WriteString("\n")
}
