package integration

import (
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/registrar/calls"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// drainConfig is upstreamConfig with a shutdown section.
func drainConfig(s *sim, drain, retryAfter string) func(ip, dir string) string {
	return func(ip, dir string) string {
		return upstreamConfig(s, "")(ip, dir) + "shutdown:\n  drain_timeout: " + drain + "\n  retry_after: " + retryAfter + "\n"
	}
}

// callUp starts a SIPp phone call with RTP that waits for the far end's BYE
// and returns once edgesim has answered it and edgewise relays its media.
func callUp(t *testing.T, s *sim, d *daemon, number string) (<-chan sippResult, simCall) {
	t.Helper()
	res := sippAsync(t, "call_rtp_farbye.xml", nextIP(t), d.ip+":5060", dialRow("alice", number))
	checkRTPFlow(t, d)
	c := s.onlyCall(t, "edgesim to see the call answered", func(c simCall) bool { return c.State == "answered" })
	return res, c
}

func readyz(t *testing.T, d *daemon) int {
	t.Helper()
	resp, err := http.Get(d.adminURL + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestGracefulStopDrains: SIGTERM with a call up. edgewise stops being
// ready, answers new REGISTERs and calls with 503 + Retry-After, leaves the
// call alone until its parties hang up, then exits at once (long before
// the drain deadline) with its bindings still in the store.
func TestGracefulStopDrains(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, drainConfig(s, "60s", "7s"))
	phoneIP := nextIP(t)
	if code, out := sippRun(t, "register.xml", phoneIP, d.ip+":5060", [][]string{authRow("bob", "bob-secret", 3600)}, 1); code != 0 {
		t.Fatalf("register: sipp exited %d:\n%s", code, out)
	}
	res, c := callUp(t, s, d, "15550003333")

	d.signal(syscall.SIGTERM)
	kit.WaitFor(t, 5*time.Second, "/readyz to say 503 while draining", func() bool { return readyz(t, d) == http.StatusServiceUnavailable })
	row := append(authRow("carol", "carol-secret", 3600), "7")
	if code, out := sippRun(t, "register_refused.xml", nextIP(t), d.ip+":5060", [][]string{row}, 1); code != 0 {
		t.Fatalf("REGISTER while draining: sipp exited %d:\n%s", code, out)
	}
	if code, out := sippRun(t, "call_refused.xml", nextIP(t), d.ip+":5060", dialRow("bob", "15550004444"), 1); code != 0 {
		t.Fatalf("new call while draining: sipp exited %d:\n%s", code, out)
	}

	// The call in progress keeps flowing: its counters still move.
	before := relayedPackets(d.calls())
	kit.WaitFor(t, 5*time.Second, "the call's media to keep flowing while draining", func() bool {
		return relayedPackets(d.calls()) > before
	})
	select {
	case <-d.done:
		t.Fatalf("edgewise exited with a call up:\n%s", d.out.String())
	default:
	}

	s.hangUp(t, c.ID)
	waitSipp(t, res, "the call ended by the far end")
	if code := d.wait(10 * time.Second); code != 0 {
		t.Fatalf("edgewise exited %d after draining:\n%s", code, d.out.String())
	}
	if out := d.out.String(); !strings.Contains(out, "drained: every call ended by itself") {
		t.Errorf("no drained log line:\n%s", out)
	}

	// Nothing persisted was lost: bob's binding is back after a restart.
	d.start(t)
	if got := d.contacts(t, "bob"); len(got) != 1 {
		t.Fatalf("bob's contacts after restart: %v", got)
	}
}

// TestStopHangsUpCallsLeft: calls still up when the drain deadline passes
// (SIGTERM) or at once (SIGINT) are ended with BYE on both legs, and the
// daemon exits cleanly.
func TestStopHangsUpCallsLeft(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sig    syscall.Signal
		drain  string
		within time.Duration // from the signal to the exit
	}{
		{"sigterm after the drain deadline", syscall.SIGTERM, "1s", 10 * time.Second},
		{"sigint at once", syscall.SIGINT, "60s", 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startSim(t)
			d := startDaemon(t, drainConfig(s, tc.drain, "30s"))
			res, _ := callUp(t, s, d, "15550005555")
			d.signal(tc.sig)
			if code := d.wait(tc.within); code != 0 {
				t.Fatalf("edgewise exited %d:\n%s", code, d.out.String())
			}
			// The phone got a BYE (the scenario waits for one) and so did
			// Twilio's side.
			waitSipp(t, res, "the phone's call ended by edgewise")
			s.onlyCall(t, "edgesim to see the call ended by the gateway", func(c simCall) bool {
				return c.State == "ended" && c.EndedBy == "gateway"
			})
		})
	}
}

// relayedPackets sums the packets every leg of every call received.
func relayedPackets(list []calls.CallStatus) uint64 {
	var n uint64
	for _, c := range list {
		if c.Media == nil {
			continue
		}
		for _, l := range c.Media.Legs {
			n += l.RX.Packets
		}
	}
	return n
}
