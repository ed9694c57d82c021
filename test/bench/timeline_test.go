package main

import (
	"strings"
	"testing"
	"time"
)

// A SIPp 3.6 statistics file cut down to the columns the suite reads, plus
// one it does not, in SIPp's order.
const sippStatsSample = `StartTime;ElapsedTime(P);SuccessfulCall(P);SuccessfulCall(C);FailedCall(P);FailedCall(C);FailedMaxUDPRetrans(C);FailedUnexpectedMessage(C);DeadCallMsgs(C);Retransmissions(P);
2026-12-04	05:57:03.234769	1796363823.234769;00:00:00;0;0;0;0;0;0;0;0;
2026-12-04	05:57:03.234769	1796363823.234769;00:00:01;1000;1000;0;0;0;0;0;0;
2026-12-04	05:57:03.234769	1796363823.234769;00:00:01;1000;2000;0;0;0;0;0;0;
2026-12-04	05:57:03.234769	1796363823.234769;00:00:01;120;2120;30;30;0;30;0;900;
2026-12-04	05:57:03.234769	1796363823.234769;00:00:01;1880;4000;0;30;0;30;0;12;
2026-12-04	05:57:03.234769	1796363823.234769;00:00:01;400;4400;0;30;0;30;5;0;
`

func TestReadSIPpStats(t *testing.T) {
	tl, causes, err := readSIPpStats(strings.NewReader(sippStatsSample))
	if err != nil {
		t.Fatal(err)
	}
	want := []second{{ok: 1000}, {ok: 1000}, {ok: 120, failed: 30, retrans: 900}, {ok: 1880, retrans: 12}, {ok: 400}}
	if len(tl) != len(want) {
		t.Fatalf("%d seconds, want %d: %+v", len(tl), len(want), tl)
	}
	for i := range want {
		if tl[i] != want[i] {
			t.Errorf("second %d: %+v, want %+v", i, tl[i], want[i])
		}
	}
	if causes != "FailedUnexpectedMessage 30, DeadCallMsgs 5" {
		t.Errorf("causes %q", causes)
	}
	// The stall is the worst second, not the short last one.
	if w, ok := worst(tl, 5*time.Second); !ok || w != 2 {
		t.Errorf("worst = %d, %v; want 2", w, ok)
	}
	if got := sparkline(tl, 1000, 5*time.Second); got != "██!█▃" {
		t.Errorf("sparkline %q", got)
	}
}

func TestReadSIPpStatsMissingColumn(t *testing.T) {
	if _, _, err := readSIPpStats(strings.NewReader("StartTime;SuccessfulCall(P);\n")); err == nil {
		t.Fatal("no error for a file without FailedCall(P)")
	}
}

func TestParseProcAddr(t *testing.T) {
	ip, port, ok := parseProcAddr("0109007F:13D8")
	if !ok || ip != "127.0.9.1" || port != "5080" {
		t.Fatalf("got %s %s %v", ip, port, ok)
	}
	if _, _, ok := parseProcAddr("00000000000000000000000000000000:13D8"); ok {
		t.Fatal("an IPv6 address parsed as IPv4")
	}
}

func TestKnee(t *testing.T) {
	run := func(rate, failed int) step {
		ok := rate * 60
		return step{rate: rate, dur: time.Minute, ok: ok - failed, failed: failed, elapsed: time.Minute}
	}
	for _, tc := range []struct {
		name  string
		steps []step
		want  int // 0: none
	}{
		{"all clean", []step{run(8000, 0), run(12000, 0)}, 12000},
		{"fails above", []step{run(8000, 0), run(12000, 0), run(16000, 5000), run(14000, 0)}, 14000},
		// A stall that comes and goes: clean again above a failed rate
		// is not sustained.
		{"clean above a failure", []step{run(20000, 0), run(24000, 2000), run(28000, 0)}, 20000},
		{"first fails", []step{run(8000, 1000)}, 0},
	} {
		k, ok := result{steps: tc.steps}.knee()
		if got := map[bool]int{true: k.rate}[ok]; got != tc.want {
			t.Errorf("%s: knee %d, want %d", tc.name, got, tc.want)
		}
	}
}
