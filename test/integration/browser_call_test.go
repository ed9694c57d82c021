package integration

import (
	"fmt"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/registrar/calls"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// Calls with a browser softphone: headless Chromium runs SIP.js
// (test/browser/phone.html) with its fake microphone; edgewise terminates
// the browser's WebRTC media (ICE-lite, DTLS-SRTP) and bridges it to plain
// RTP toward edgesim, which echoes it.

// browserCallConfig is browserDaemonConfig with WebRTC media on the
// daemon's address.
func browserCallConfig(s *sim) func(ip, dir string) string {
	return func(ip, dir string) string {
		cfg := browserDaemonConfig(s)(ip, dir)
		const old = "media:\n  rtp_ports: 30000-30999\n"
		if !strings.Contains(cfg, old) {
			panic("daemonConfig changed its media section")
		}
		return strings.Replace(cfg, old, old+fmt.Sprintf("  webrtc: {listen: \"%s:3479\"}\n", ip), 1)
	}
}

// phoneURL is phone.html for user in mode ("call" with to, or "answer").
func (p *browserPage) phoneURL(d *daemon, user, password, mode, to string) string {
	q := url.Values{
		"ws":       {"ws://" + d.ip + ":8080"},
		"user":     {user},
		"password": {password},
		"domain":   {"edgewise.test"},
		"mode":     {mode},
		"to":       {to},
	}
	return p.srv.URL + "/phone.html?" + q.Encode()
}

// waitRTP waits until the page's getStats() counts at least n audio
// packets sent and received.
func (p *browserPage) waitRTP(t *testing.T, b *browserProc, n int) (sent, received int) {
	t.Helper()
	p.waitUntil(t, b, 20*time.Second, fmt.Sprintf("%d RTP packets each way in getStats()", n), func(ev browserEvent) bool {
		if ev.Event != "rtp" {
			return false
		}
		if _, err := fmt.Sscanf(ev.Detail, "sent=%d received=%d", &sent, &received); err != nil {
			return false
		}
		return sent >= n && received >= n
	})
	return sent, received
}

// checkBridged asserts that edgewise's one call counts SRTP in and out
// toward the browser and plain RTP in and out on the relay's legs.
func checkBridged(t *testing.T, d *daemon) {
	t.Helper()
	var c calls.CallStatus
	kit.WaitFor(t, 10*time.Second, "edgewise's call counting SRTP and RTP both ways", func() bool {
		cs := d.status(t).Calls
		if len(cs) != 1 || cs[0].Browser == nil || cs[0].Media == nil {
			return false
		}
		c = cs[0]
		br := c.Browser
		if br.SRTP.Rx.Packets == 0 || br.SRTP.Tx.Packets == 0 || br.RTP.Rx.Packets == 0 || br.RTP.Tx.Packets == 0 {
			return false
		}
		// Chromium takes the DTLS client role both ways, so the bridge's
		// own SRTP path carries the media, not pion's.
		if br.Path != "bridge" {
			return false
		}
		for _, l := range c.Media.Legs {
			if l.RX.Packets == 0 || l.TX.Packets == 0 {
				return false
			}
		}
		return true
	})
	if c.Browser.DTLS != "connected" {
		t.Errorf("browser leg DTLS %q, want connected", c.Browser.DTLS)
	}
	t.Logf("browser leg (path %s): SRTP in %d out %d, RTP toward the relay in %d out %d", c.Browser.Path,
		c.Browser.SRTP.Rx.Packets, c.Browser.SRTP.Tx.Packets, c.Browser.RTP.Rx.Packets, c.Browser.RTP.Tx.Packets)
}

// TestBrowserCallsOut: SIP.js in Chromium calls a number; edgesim answers
// and echoes. The page's getStats() counts audio both ways, edgewise counts
// SRTP on the browser's side and RTP on the relay, edgesim's hang-up ends
// the browser's session and frees the bridge.
func TestBrowserCallsOut(t *testing.T) {
	chromium := browserDeps(t)
	s := startSim(t)
	d := startDaemon(t, browserCallConfig(s))
	page := browserServePage(t)
	b := browserLaunch(t, chromium, page.phoneURL(d, "alice", "alice-secret", "call", "15550001111"))

	page.waitFor(t, b, 30*time.Second, "call", "Established")
	sent, received := page.waitRTP(t, b, 50)
	t.Logf("browser getStats(): %d audio packets sent, %d received", sent, received)
	checkBridged(t, d)
	c := s.onlyCall(t, "edgesim to see the call answered", func(c simCall) bool { return c.State == "answered" })
	kit.WaitFor(t, 5*time.Second, "edgesim echoing the browser's audio", func() bool {
		m := s.call(t, c.ID).Media
		return m != nil && m.PacketsReceived > 0 && m.PacketsEchoed > 0
	})

	s.hangUp(t, c.ID)
	page.waitFor(t, b, 10*time.Second, "call", "Terminated")
	noCallsLeft(t, d)
}

// TestBrowserAnswersForkedCall: Twilio (edgesim) calls bob, registered
// from a browser and from a SIPp phone. Both ring; the browser answers; the
// SIPp phone is cancelled; media flows between the browser and edgesim's
// echo.
func TestBrowserAnswersForkedCall(t *testing.T) {
	chromium := browserDeps(t)
	s := startSim(t)
	d := startDaemon(t, browserCallConfig(s))
	ringIP := nextIP(t)
	if code, out := sippRun(t, "register.xml", ringIP, d.ip+":5060",
		[][]string{authRow("bob", "bob-secret", 3600)}, 1, "-p", "5060"); code != 0 {
		t.Fatalf("register bob from %s: sipp exited %d:\n%s", ringIP, code, out)
	}
	ringing := sippUAS(t, "uas_ring_cancel.xml", ringIP)
	page := browserServePage(t)
	b := browserLaunch(t, chromium, page.phoneURL(d, "bob", "bob-secret", "answer", ""))
	page.waitFor(t, b, 30*time.Second, "response", "200")
	kit.WaitFor(t, 10*time.Second, "bob's two bindings", func() bool { return len(d.contacts(t, "bob")) == 2 })
	kit.WaitFor(t, 10*time.Second, "bob registered upstream", func() bool { return len(s.edgesOf(t, "bob")) > 0 })

	placed := s.placeCall(t, "bob")
	page.waitUntil(t, b, 10*time.Second, "the browser ringing", func(ev browserEvent) bool { return ev.Event == "invite" })
	page.waitFor(t, b, 15*time.Second, "call", "Established")
	kit.WaitFor(t, 10*time.Second, "the placed call answered", func() bool { return s.call(t, placed.ID).State == "answered" })
	waitSipp(t, ringing, "the SIPp phone cancelled")
	page.waitRTP(t, b, 50)
	checkBridged(t, d)

	s.hangUp(t, placed.ID)
	page.waitFor(t, b, 10*time.Second, "call", "Terminated")
	noCallsLeft(t, d)
}

// TestBrowserICETimeoutEndsCall: edgewise gives the browser an ICE
// candidate where nothing listens (another loopback address), so the
// browser's connectivity checks never arrive. After
// media.webrtc.connect_timeout the call ends on both legs, and the BYE the
// browser gets says why.
func TestBrowserICETimeoutEndsCall(t *testing.T) {
	chromium := browserDeps(t)
	s := startSim(t)
	nowhere := nextIP(t)
	d := startDaemon(t, func(ip, dir string) string {
		cfg := browserCallConfig(s)(ip, dir)
		old := fmt.Sprintf("  webrtc: {listen: \"%s:3479\"}\n", ip)
		return strings.Replace(cfg, old, fmt.Sprintf("  webrtc: {listen: \"%s:3479\", advertise: [%s], connect_timeout: 2s}\n", ip, nowhere), 1)
	})
	page := browserServePage(t)
	b := browserLaunch(t, chromium, page.phoneURL(d, "alice", "alice-secret", "call", "15550001111"))

	page.waitFor(t, b, 30*time.Second, "call", "Established")
	bye := page.waitUntil(t, b, 15*time.Second, "the BYE", func(ev browserEvent) bool { return ev.Event == "bye" })
	if !strings.Contains(bye.Detail, "ice failed") {
		t.Errorf("BYE to the browser has Reason %q, want it to say ice failed", bye.Detail)
	}
	page.waitFor(t, b, 10*time.Second, "call", "Terminated")
	s.onlyCall(t, "edgesim to see the call ended by the gateway", func(c simCall) bool {
		return c.State == "ended" && c.EndedBy == "gateway"
	})
	noCallsLeft(t, d)
	if !strings.Contains(d.out.String(), "browser media failed") {
		t.Error("edgewise did not log the failure")
	}
}

// TestBrowserHoldAndDTMF: during a browser's call the page sends RFC 4733
// DTMF (RTCDTMFSender), holds (re-INVITE sendonly) and resumes. The digits
// cross the bridge and the relay as telephone-event packets and reach
// edgesim; both re-INVITEs reach edgesim through the bridge; audio comes
// back after the resume.
func TestBrowserHoldAndDTMF(t *testing.T) {
	chromium := browserDeps(t)
	s := startSim(t)
	d := startDaemon(t, browserCallConfig(s))
	page := browserServePage(t)
	b := browserLaunch(t, chromium, page.phoneURL(d, "alice", "alice-secret", "call", "15550001111")+"&actions=dtmf,hold,unhold")

	page.waitFor(t, b, 30*time.Second, "call", "Established")
	c := s.onlyCall(t, "edgesim to see the call answered", func(c simCall) bool { return c.State == "answered" })
	for _, want := range []string{"dtmf sent", "hold accepted", "unhold accepted"} {
		page.waitUntil(t, b, 20*time.Second, want, func(ev browserEvent) bool {
			if ev.Event == "action" && ev.Detail != want {
				t.Fatalf("page action %q, want %q", ev.Detail, want)
			}
			return ev.Event == "action"
		})
	}
	var got simCall
	kit.WaitFor(t, 10*time.Second, "edgesim to count the re-INVITEs and the digits", func() bool {
		got = s.call(t, c.ID)
		return got.Reinvites == 2 && got.Media != nil && dtmfPackets(got) > 0
	})
	if got.Media.Direction != "sendrecv" {
		t.Errorf("edgesim's direction after the resume %q, want sendrecv", got.Media.Direction)
	}
	t.Logf("edgesim received by payload type: %v", got.Media.PayloadTypes)
	// Audio comes back after the resume.
	_, before := page.waitRTP(t, b, 1)
	page.waitRTP(t, b, before+25)

	s.hangUp(t, c.ID)
	page.waitFor(t, b, 10*time.Second, "call", "Terminated")
	noCallsLeft(t, d)
}

// dtmfPackets counts what edgesim received that is neither PCMU nor PCMA:
// the telephone-event packets, whatever payload type the SDP gave them.
func dtmfPackets(c simCall) uint64 {
	var n uint64
	for pt, k := range c.Media.PayloadTypes {
		if pt != "0" && pt != "8" {
			n += k
		}
	}
	return n
}

// TestBrowserConsentLostHangsUp: the browser freezes mid-call (SIGSTOP on
// its process group: no media, no ICE consent checks, but its WebSocket
// stays open). With the default timeouts edgewise notices the lost consent
// (RFC 7675) and ends the call within 30 s.
func TestBrowserConsentLostHangsUp(t *testing.T) {
	chromium := browserDeps(t)
	s := startSim(t)
	d := startDaemon(t, browserCallConfig(s))
	page := browserServePage(t)
	b := browserLaunch(t, chromium, page.phoneURL(d, "alice", "alice-secret", "call", "15550001111"))
	page.waitFor(t, b, 30*time.Second, "call", "Established")
	page.waitRTP(t, b, 25)
	c := s.onlyCall(t, "edgesim to see the call answered", func(c simCall) bool { return c.State == "answered" })

	b.Signal(syscall.SIGSTOP)
	frozen := time.Now()
	kit.WaitFor(t, 35*time.Second, "edgewise to end the call", func() bool {
		got := s.call(t, c.ID)
		return got.State == "ended" && got.EndedBy == "gateway"
	})
	took := time.Since(frozen)
	t.Logf("call ended %v after the browser froze", took.Round(100*time.Millisecond))
	if took > 30*time.Second {
		t.Errorf("ended after %v, want within 30 s", took)
	}
	if !strings.Contains(d.out.String(), "consent lost") {
		t.Error("edgewise did not log the lost consent")
	}
	noCallsLeft(t, d)
}
