package media

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// TestRestrictSourcesReplacesAllowB: leg B of a call edgewise connects
// without Twilio faces a local phone, never in Twilio's media ranges. Named
// with RestrictSources, that phone's media is relayed; a stranger's is still
// dropped.
func TestRestrictSourcesReplacesAllowB(t *testing.T) {
	r := startRelay(t, func(s *Settings, r *Relay) {
		s.AllowB = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")} // Twilio's, far from loopback
	})
	s, err := r.NewSession("local")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	caller := newPeerOn(t, "127.0.0.1")
	callee := newPeerOn(t, "127.0.0.1")
	stranger := newPeerOn(t, "127.0.0.3")
	s.Leg(A).SetRemote(caller.addr(), netip.AddrPort{})
	s.Leg(B).SetRemote(callee.addr(), netip.AddrPort{})
	s.Leg(A).RestrictSources(caller.addr().Addr())
	s.Leg(B).RestrictSources(callee.addr().Addr())
	lb := local(s.Leg(B))

	stranger.send(lb, rtpPacket(t, 1, 0, 0xBAD, 0, []byte("intruder")))
	kit.WaitFor(t, 5*time.Second, "the stranger's packet dropped", func() bool {
		return s.Stats().Legs[B].RX.Dropped["stranger"] == 1
	})
	p := rtpPacket(t, 1, 160, 0xB0B, 0, []byte("callee"))
	callee.send(lb, p)
	if got, _ := caller.recv(); !bytes.Equal(got, p) {
		t.Fatal("the callee's audio on leg B was not relayed")
	}
	if n := s.Stats().Legs[B].RX.Dropped["not_allowed"]; n != 0 {
		t.Fatalf("%d packets dropped as not_allowed after RestrictSources", n)
	}
}
