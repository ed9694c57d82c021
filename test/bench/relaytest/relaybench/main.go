// Command relaybench runs the relay benchmark of issue 4 — edgewise's relay
// and rtpengine (userspace) side by side, driven by the same generator over
// the same ng control protocol — and prints a Markdown table.
//
//	go run ./test/bench/relaytest/relaybench [-step 10s] [-relay-cpu 1] [-out bench-results]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/edgewise-sip/edgewise/test/bench/relaytest"
)

func main() {
	s := relaytest.DefaultSuite()
	var (
		out     = flag.String("out", "", "directory to write relay.md into (empty: stdout only)")
		step    = flag.Duration("step", s.Step, "duration of each measured step")
		calls   = flag.String("calls", ints(s.Calls), "(a) calls per step")
		rates   = flag.String("rates", ints(s.SingleRates), "(b) single-stream rates")
		latency = flag.Int("latency-calls", s.LatencyCalls, "(c) calls for the latency run (0: skip)")
		only    = flag.String("only", "", "run only this target (edgewise|rtpengine)")
		rtpe    = flag.String("rtpengine", "/usr/bin/rtpengine", "rtpengine binary")
		workers = flag.Int("workers", 0, "edgewise packet workers (0: GOMAXPROCS)")
		coal    = flag.Duration("coalesce", 0, "edgewise worker nap under load (0: off)")
		quiet   = flag.Duration("quiet-wait", s.QuietWait, "before each step, wait this long at most for an idle machine")
		pin     = flag.Int("relay-cpu", s.RelayCPU, "pin each relay, every thread, to this CPU and the generator to the others (-1: no pinning)")
		rtpeThr = flag.Int("rtpengine-threads", 0, "rtpengine --num-threads (0: one per CPU it may use: 1 when pinned)")
		retries = flag.Int("retries", s.Retries, "run a failed step this many times more before a series stops")
		relayd  = flag.String("relayd", "", "edgewise relayd binary (empty: build it from this tree)")
		also    = flag.String("also", "", "more relayd builds to measure after the others, label=binary,... (e.g. before=/tmp/relayd-old)")
	)
	flag.Parse()
	log.SetFlags(0)
	var err error
	if s.Calls, err = parseInts(*calls); err != nil {
		log.Fatal(err)
	}
	if s.SingleRates, err = parseInts(*rates); err != nil {
		log.Fatal(err)
	}
	s.Step, s.LatencyCalls, s.QuietWait, s.RelayCPU, s.Retries, s.Log = *step, *latency, *quiet, *pin, *retries, os.Stderr

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Hour)
	defer cancel()
	dir, err := os.MkdirTemp("", "relaybench")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bin := *relayd
	if bin == "" {
		if bin, err = relaytest.BuildRelayd(ctx, dir); err != nil {
			log.Fatal(err)
		}
	}
	var targets []relaytest.Target
	if *only == "" || *only == "edgewise" {
		targets = append(targets, &relaytest.Relayd{Bin: bin, Workers: *workers, Coalesce: *coal, Log: os.Stderr})
	}
	if *only == "" || *only == "rtpengine" {
		targets = append(targets, &relaytest.Rtpengine{Bin: *rtpe, Threads: *rtpeThr, Log: os.Stderr})
	}
	for i, lb := range strings.Split(*also, ",") {
		if lb == "" {
			continue
		}
		label, b, ok := strings.Cut(lb, "=")
		if !ok {
			log.Fatalf("-also %q: want label=binary", lb)
		}
		// Sessions bind their ports only while a step runs, so every
		// relayd can share the default range; each needs its own ng port.
		targets = append(targets, &relaytest.Relayd{Bin: b, Label: label, NGPort: 19224 + i, Workers: *workers, Coalesce: *coal, Log: os.Stderr})
	}
	rep, err := s.Run(ctx, targets...)
	table := rep.Table()
	fmt.Print(table)
	if *out != "" {
		if werr := os.MkdirAll(*out, 0o755); werr == nil {
			os.WriteFile(filepath.Join(*out, "relay.md"), []byte(table), 0o644)
		}
	}
	if err != nil {
		log.Fatal(err)
	}
}

func ints(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", f, err)
		}
		out = append(out, n)
	}
	return out, nil
}
