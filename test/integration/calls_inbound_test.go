package integration

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// TestInboundCallForked: alice is registered from two SIPp UASes (and
// baresip, which rings without answering). edgesim, as Twilio, calls alice:
// edgewise forks to every binding, the answering UAS wins, the ringing one
// is CANCELled, and the Twilio-side call is answered; edgesim's hang-up
// reaches the phone that answered.
func TestInboundCallForked(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, upstreamConfig(s, ""))
	answerIP, ringIP := nextIP(t), nextIP(t)
	for _, ip := range []string{answerIP, ringIP} {
		if code, out := sippRun(t, "register.xml", ip, d.ip+":5060",
			[][]string{authRow("alice", "alice-secret", 3600)}, 1, "-p", "5060"); code != 0 {
			t.Fatalf("register alice from %s: sipp exited %d:\n%s", ip, code, out)
		}
	}
	answered := sippUAS(t, "uas_answer.xml", answerIP)
	ringing := sippUAS(t, "uas_ring_cancel.xml", ringIP)
	kit.WaitFor(t, 10*time.Second, "alice registered upstream", func() bool { return len(s.edgesOf(t, "alice")) > 0 })

	placed := s.placeCall(t, "alice")
	kit.WaitFor(t, 10*time.Second, "the placed call answered", func() bool { return s.call(t, placed.ID).State == "answered" })
	waitSipp(t, ringing, "ringing phone cancelled")
	kit.WaitFor(t, 5*time.Second, "edgewise's call answered with no fork left", func() bool {
		cs := d.calls()
		return len(cs) == 1 && cs[0].State == "answered"
	})
	s.hangUp(t, placed.ID)
	waitSipp(t, answered, "answering phone hung up by Twilio")
	c := s.onlyCall(t, "edgesim to see the call ended", func(c simCall) bool { return c.State == "ended" && c.Code == 200 })
	if c.EndedBy != "edgesim" {
		t.Fatalf("call ended by %q, want edgesim", c.EndedBy)
	}
	noCallsLeft(t, d)
}

// TestInboundCallNoBinding: Twilio calls a Contact edgewise registered for
// alice a moment ago, while no phone of alice is registered any more (the
// phone unregistered and edgewise removed the Contact, but Twilio had
// already routed the call; the binding is planted at edgesim as edgewise
// would register it): edgewise answers 480 so Twilio's fallback runs.
func TestInboundCallNoBinding(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, upstreamConfig(s, ""))
	phoneIP := nextIP(t)
	if code, out := sippRun(t, "register.xml", phoneIP, d.ip+":5060", [][]string{authRow("alice", "alice-secret", 3600)}, 1); code != 0 {
		t.Fatalf("register alice: sipp exited %d:\n%s", code, out)
	}
	kit.WaitFor(t, 10*time.Second, "alice registered upstream", func() bool { return onlyOn(s.edgesOf(t, "alice"), "ashburn") })
	if code, out := sippRun(t, "unregister.xml", phoneIP, d.ip+":5060", [][]string{authRow("alice", "alice-secret", 3600)}, 1); code != 0 {
		t.Fatalf("unregister alice: sipp exited %d:\n%s", code, out)
	}
	kit.WaitFor(t, 10*time.Second, "alice unregistered upstream", func() bool { return len(s.edgesOf(t, "alice")) == 0 })
	contact := fmt.Sprintf("sip:alice~ashburn@%s:5060;transport=udp", d.ip)
	row := []string{"alice", "[authentication username=alice password=AliceTwilio123]", "3600", contact}
	if code, out := sippRun(t, "call_twilio_binding.xml", nextIP(t), s.ips["ashburn"][0]+":5060", [][]string{row}, 1); code != 0 {
		t.Fatalf("planting alice's Twilio binding: sipp exited %d:\n%s", code, out)
	}
	if len(d.contacts(t, "alice")) != 0 {
		t.Fatal("alice has local contacts")
	}
	placed := s.placeCall(t, "alice")
	kit.WaitFor(t, 10*time.Second, "the placed call failed 480", func() bool {
		c := s.call(t, placed.ID)
		return c.State == "failed" && c.Code == 480
	})
	c := s.call(t, placed.ID)
	if len(c.Forks) != 1 || c.Forks[0].Code != 480 {
		t.Fatalf("forks %+v, want the one fork to edgewise failed 480", c.Forks)
	}
	if !strings.Contains(d.out.String(), `reason="no binding"`) {
		t.Fatal("edgewise's log does not show the 480 for want of a binding")
	}
	noCallsLeft(t, d)
}

// startBaresipAnswering is startBaresip with the menu module loaded and the
// account set to answer every call at once (baresip 1.0: answermode=auto,
// acted on by menu), with G.711 A-law (what call_rtp*.xml offers) and μ-law.
func startBaresipAnswering(t *testing.T, d *daemon, user, password string) string {
	t.Helper()
	client, _ := startBaresipMenu(t, d, user, password, "auto")
	return client
}

// startBaresipRinging is startBaresipAnswering for a phone that rings until
// told to answer: answer() types baresip's accept key ('a') on its UDP
// console (the cons module). A phone that answers at once sends its 180 and
// 200 back to back, and a B2BUA may then relay the 200 alone.
func startBaresipRinging(t *testing.T, d *daemon, user, password string) (client string, answer func()) {
	t.Helper()
	client, console := startBaresipMenu(t, d, user, password, "manual")
	return client, func() {
		c, err := net.Dial("udp", console)
		if err != nil {
			t.Fatalf("baresip console: %v", err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("a")); err != nil {
			t.Fatalf("baresip console: %v", err)
		}
	}
}

// startBaresipMenu runs baresip with the menu and console modules, the
// console on a loopback address of the test's own; answermode is baresip's.
func startBaresipMenu(t *testing.T, d *daemon, user, password, answermode string) (client, console string) {
	t.Helper()
	client, port := baresipListen(t)
	console = nextIP(t) + ":5555"
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "config"), fmt.Sprintf(`poll_method epoll
sip_listen %s:%d
audio_player aufile,/dev/null
audio_source ausine,440
ausrc_srate 48000
ausrc_channels 2
auplay_srate 48000
cons_listen %s
module_path /usr/lib/baresip/modules
module g711.so
module ausine.so
module aufile.so
module menu.so
module cons.so
module_tmp uuid.so
module_tmp account.so
`, client, port, console))
	writeFile(t, filepath.Join(dir, "accounts"),
		fmt.Sprintf("<sip:%s@%s:5060;transport=udp>;auth_pass=%s;regint=600;answermode=%s;audio_codecs=PCMA,PCMU\n", user, d.ip, password, answermode))
	startProc(t, requireTool(t, "baresip"), "-f", dir)
	return client, console
}

// TestInboundCallForkedBaresipAnswers: alice is registered from baresip
// (answering automatically) and from a SIPp UAS that only rings. edgesim
// calls alice: baresip answers, SIPp is CANCELled, RTP flows between
// baresip and edgesim's echo through the relay, and edgesim's hang-up ends
// both legs.
func TestInboundCallForkedBaresipAnswers(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, upstreamConfig(s, ""))
	ringIP := nextIP(t)
	if code, out := sippRun(t, "register.xml", ringIP, d.ip+":5060",
		[][]string{authRow("alice", "alice-secret", 3600)}, 1, "-p", "5060"); code != 0 {
		t.Fatalf("register alice from %s: sipp exited %d:\n%s", ringIP, code, out)
	}
	ringing := sippUAS(t, "uas_ring_cancel.xml", ringIP)
	bare := startBaresipAnswering(t, d, "alice", "alice-secret")
	kit.WaitFor(t, 10*time.Second, "baresip registered", func() bool { return containsHost(d.contacts(t, "alice"), bare) })
	kit.WaitFor(t, 10*time.Second, "alice registered upstream", func() bool { return len(s.edgesOf(t, "alice")) > 0 })

	placed := s.placeCall(t, "alice")
	kit.WaitFor(t, 10*time.Second, "the placed call answered", func() bool { return s.call(t, placed.ID).State == "answered" })
	waitSipp(t, ringing, "ringing SIPp phone cancelled")
	checkRTPFlow(t, d)
	kit.WaitFor(t, 5*time.Second, "edgesim echoing baresip's RTP", func() bool {
		m := s.call(t, placed.ID).Media
		return m != nil && m.PacketsReceived > 0 && m.PacketsEchoed > 0
	})
	s.hangUp(t, placed.ID)
	s.onlyCall(t, "edgesim to see the call ended", func(c simCall) bool { return c.State == "ended" && c.EndedBy == "edgesim" })
	noCallsLeft(t, d)
}

// registerUAS registers alice from ip:5060 (the port a SIPp UAS then
// listens on) and starts scenario there.
func registerUAS(t *testing.T, d *daemon, scenario string) <-chan sippResult {
	t.Helper()
	ip := nextIP(t)
	if code, out := sippRun(t, "register.xml", ip, d.ip+":5060",
		[][]string{authRow("alice", "alice-secret", 3600)}, 1, "-p", "5060"); code != 0 {
		t.Fatalf("register alice from %s: sipp exited %d:\n%s", ip, code, out)
	}
	return sippUAS(t, scenario, ip)
}

// TestInboundCallPhoneBusy: alice's only phone answers 486; Twilio's call
// fails 486 (busy is passed on, not turned into 480).
func TestInboundCallPhoneBusy(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, upstreamConfig(s, ""))
	busy := registerUAS(t, d, "uas_busy.xml")
	kit.WaitFor(t, 10*time.Second, "alice registered upstream", func() bool { return len(s.edgesOf(t, "alice")) > 0 })
	placed := s.placeCall(t, "alice")
	waitSipp(t, busy, "busy phone")
	kit.WaitFor(t, 10*time.Second, "the placed call failed 486", func() bool {
		c := s.call(t, placed.ID)
		return c.State == "failed" && c.Code == 486
	})
	noCallsLeft(t, d)
}

// TestInboundCallCancelledByTwilio: Twilio hangs up while alice's phone
// rings: the phone gets CANCEL (and answers 487), Twilio's call fails 487.
func TestInboundCallCancelledByTwilio(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, upstreamConfig(s, ""))
	ringing := registerUAS(t, d, "uas_ring_cancel.xml")
	kit.WaitFor(t, 10*time.Second, "alice registered upstream", func() bool { return len(s.edgesOf(t, "alice")) > 0 })
	placed := s.placeCall(t, "alice")
	kit.WaitFor(t, 10*time.Second, "the placed call ringing", func() bool { return s.call(t, placed.ID).State == "ringing" })
	s.hangUp(t, placed.ID)
	waitSipp(t, ringing, "ringing phone cancelled")
	kit.WaitFor(t, 10*time.Second, "the placed call failed 487", func() bool {
		c := s.call(t, placed.ID)
		return c.State == "failed" && c.Code == 487
	})
	noCallsLeft(t, d)
}
