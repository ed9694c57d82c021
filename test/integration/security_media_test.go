package integration

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/media"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// mediaSecPhoneLeg returns the phone side of d's only call, once its media
// session exists.
func mediaSecPhoneLeg(t *testing.T, d *daemon) (media.LegStats, bool) {
	t.Helper()
	st, err := d.getStatus()
	if err != nil || len(st.Calls) != 1 || st.Calls[0].Media == nil {
		return media.LegStats{}, false
	}
	for _, l := range st.Calls[0].Media.Legs {
		if l.Side == media.A {
			return l, true
		}
	}
	return media.LegStats{}, false
}

// mediaSecStranger sends valid RTP to a phone leg's relay port every 20 ms
// from its own loopback address, as an attacker who guessed the port, and
// counts what the relay sends it. It stops by itself after limit.
type mediaSecStranger struct {
	conn     *net.UDPConn
	sent     atomic.Int64
	received atomic.Int64
	stop     chan struct{}
	wg       sync.WaitGroup
}

func mediaSecStartStranger(t *testing.T, ip string, to netip.AddrPort, limit time.Duration) *mediaSecStranger {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	s := &mediaSecStranger{conn: c, stop: make(chan struct{})}
	s.wg.Add(2)
	go func() { // the reader ends when the socket closes
		defer s.wg.Done()
		buf := make([]byte, 2048)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
			s.received.Add(1)
		}
	}()
	go func() {
		defer s.wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		deadline := time.After(limit)
		pkt := make([]byte, 12+160)
		pkt[0], pkt[1] = 0x80, 8 // RTP v2, PCMA
		binary.BigEndian.PutUint32(pkt[8:], 0xBAD5EED)
		for seq := uint16(1); ; seq++ {
			select {
			case <-s.stop:
				return
			case <-deadline:
				return
			case <-tick.C:
			}
			binary.BigEndian.PutUint16(pkt[2:], seq)
			binary.BigEndian.PutUint32(pkt[4:], uint32(seq)*160)
			if _, err := c.WriteToUDPAddrPort(pkt, to); err == nil {
				s.sent.Add(1)
			}
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *mediaSecStranger) close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.conn.Close()
	s.wg.Wait()
}

// mediaSecCheck stops the stranger and checks the outcome: it heard
// nothing, every packet of its that reached the relay was dropped as a
// stranger's, and the phone's audio went both ways through its leg.
func mediaSecCheck(t *testing.T, d *daemon, s *mediaSecStranger, leg media.LegStats, phoneIP string) {
	t.Helper()
	s.close()
	if n := s.received.Load(); n != 0 {
		t.Errorf("the stranger received %d packets of the call", n)
	}
	if dropped := leg.RX.Dropped["stranger"]; dropped < 50 || dropped > uint64(s.sent.Load()) {
		t.Errorf("stranger's packets dropped: %d of %d sent, want most of them", dropped, s.sent.Load())
	}
	if leg.RX.Packets == 0 || leg.TX.Packets == 0 {
		t.Errorf("the phone's leg relayed %d in, %d out: its audio did not go both ways", leg.RX.Packets, leg.TX.Packets)
	}
	if !leg.Latched || leg.Remote.Addr().String() != phoneIP {
		t.Errorf("phone leg latched %v to %v, want the phone at %s", leg.Latched, leg.Remote, phoneIP)
	}
}

// TestSecurityMediaStrangerOutbound: a stranger sprays RTP at the phone
// leg's relay port from the moment the call's media exists — while Twilio
// rings, right after the answer and for the rest of the call. On today's
// main its first packet latched the leg, so it heard Twilio's audio and the
// phone was cut off. Here it hears nothing, and the call is unaffected.
func TestSecurityMediaStrangerOutbound(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, strangerConfig(s, ""))
	phoneIP := nextIP(t)
	// edgesim rings "slowanswer" for 3 s, then answers and echoes; the
	// phone talks for 4 s after the answer.
	res := sippAsync(t, "call_rtp.xml", phoneIP, d.ip+":5060", dialRow("alice", "slowanswer"))
	var leg media.LegStats
	kit.WaitFor(t, 10*time.Second, "the call's media session", func() bool {
		var ok bool
		leg, ok = mediaSecPhoneLeg(t, d)
		return ok
	})
	stranger := mediaSecStartStranger(t, nextIP(t), leg.Local, 20*time.Second)
	kit.WaitFor(t, 15*time.Second, "the call answered and talking", func() bool {
		c := s.calls(t)
		return len(c) == 1 && c[0].State == "answered" && c[0].Media != nil && c[0].Media.PacketsEchoed > 50
	})
	leg, _ = mediaSecPhoneLeg(t, d)
	mediaSecCheck(t, d, stranger, leg, phoneIP)
	waitSipp(t, res, "the phone's call")
	if got := scrapeMetrics(t, d).value("edgewise_media_dropped_total", "reason", "stranger"); got < 50 {
		t.Errorf("edgewise_media_dropped_total{reason=stranger} = %v", got)
	}
}

// TestSecurityMediaStrangerInbound: the same stranger on a call from
// Twilio to a phone, from the fork's ringing (1.5 s) through the answer and
// the talk.
func TestSecurityMediaStrangerInbound(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, strangerConfig(s, ""))
	phoneIP := nextIP(t)
	if code, out := sippRun(t, "register.xml", phoneIP, d.ip+":5060",
		[][]string{authRow("alice", "alice-secret", 3600)}, 1, "-p", "5060"); code != 0 {
		t.Fatalf("register alice: sipp exited %d:\n%s", code, out)
	}
	phone := sippUAS(t, "uas_answer_rtp.xml", phoneIP)
	kit.WaitFor(t, 10*time.Second, "alice registered upstream", func() bool { return len(s.edgesOf(t, "alice")) > 0 })
	placed := s.placeCall(t, "alice")
	var leg media.LegStats
	kit.WaitFor(t, 10*time.Second, "the call's media session", func() bool {
		var ok bool
		leg, ok = mediaSecPhoneLeg(t, d)
		return ok
	})
	stranger := mediaSecStartStranger(t, nextIP(t), leg.Local, 20*time.Second)
	kit.WaitFor(t, 15*time.Second, "the call answered and talking", func() bool {
		c := s.call(t, placed.ID)
		return c.State == "answered" && c.Media != nil && c.Media.PacketsEchoed > 50
	})
	leg, _ = mediaSecPhoneLeg(t, d)
	mediaSecCheck(t, d, stranger, leg, phoneIP)
	s.hangUp(t, placed.ID)
	waitSipp(t, phone, "the phone that answered")
}
