package integration

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// TestSecurityTLSMITMGetsNoCredentials: a man in the middle answers on one
// of ashburn's addresses (the first edgewise tries) with a self-signed
// certificate for the right name, itest.sip.ashburn.twilio.com. edgewise
// refuses the handshake, so no REGISTER and no INVITE (and so no digest
// response) ever reaches it, through registration, keepalives and a call;
// the address is down with the reason; the legitimate user registers on
// the next address and calls out as usual.
func TestSecurityTLSMITMGetsNoCredentials(t *testing.T) {
	s := tlsTwStartSim(t)
	// edgewise tries an edge's addresses in address order: the impostor
	// takes the first.
	ash := slices.SortedFunc(slices.Values(s.ips["ashburn"]), func(a, b string) int {
		return netip.MustParseAddr(a).Compare(netip.MustParseAddr(b))
	})
	mitm := ash[0]
	s.setMode(t, "ips/"+mitm, "self-signed-cert")
	d := startDaemon(t, tlsTwConfig(t, s, s.caFile))

	tlsTwRegisterPhone(t, d)
	if code, out := sippRun(t, "call.xml", nextIP(t), d.ip+":5060", dialRow("alice", "15550009999"), 1); code != 0 {
		t.Fatalf("alice's call: sipp exited %d:\n%s", code, out)
	}
	// Registration, keepalives and the call have all had their chance to
	// go to the impostor.
	kit.WaitFor(t, 15*time.Second, "edgewise to contact the impostor three times", func() bool {
		st := tlsTwIPStatus(t, s, mitm)
		n := st.TLS.Failed
		for _, c := range st.Requests {
			n += c
		}
		return n >= 3
	})

	st := tlsTwIPStatus(t, s, mitm)
	if st.Authorized != 0 || st.Requests["REGISTER"] != 0 || st.Requests["INVITE"] != 0 || st.TLS.Handshakes != 0 {
		t.Fatalf("the impostor got %d requests with credentials (REGISTER %d, INVITE %d) over %d completed handshakes; want none",
			st.Authorized, st.Requests["REGISTER"], st.Requests["INVITE"], st.TLS.Handshakes)
	}
	is := tlsTwEdgeIP(t, d, "ashburn", mitm)
	if is.State != edge.StateDown || !strings.Contains(is.LastError, `unknown authority (issuer "itest.sip.ashburn.twilio.com")`) {
		t.Fatalf("impostor in edgewise's status: %s %q, want down for an unknown authority", is.State, is.LastError)
	}
	// The legitimate user is unaffected: registered on a real address,
	// which got the credentials.
	b := tlsTwRegisteredAt(t, s, d, 15*time.Second)
	if b.IP == mitm || b.Edge != "ashburn" {
		t.Fatalf("registered at %s %s, want ashburn past the impostor %s", b.Edge, b.IP, mitm)
	}
	if real := tlsTwIPStatus(t, s, b.IP); real.Authorized == 0 {
		t.Fatalf("the real edge IP %s got no request with credentials", b.IP)
	}
	t.Logf("impostor refused %d times; real edge %s got %d requests with credentials", st.TLS.Failed, b.IP, tlsTwIPStatus(t, s, b.IP).Authorized)
}
