package calls

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// fakeContacts holds the Contacts edgewise registered at Twilio.
type fakeContacts map[string]bool

func (f fakeContacts) HasContact(user, edge string) bool { return f[user+"~"+edge] }

// TestInboundOnlyToHeldContacts: a call from Twilio's addresses is taken
// only for a Contact edgewise holds at Twilio; anything else is forged and
// gets 404 without a phone ringing.
func TestInboundOnlyToHeldContacts(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.contacts = fakeContacts{"alice~ashburn": true} })
	tc := newTwilioCaller(e, 2)
	phone := newPhone(e, 3, "answer", nil)
	e.binds.set("alice", e.bindingFor("alice", phone.peer))
	ctx := testCtx(t)
	for _, tt := range []struct {
		user, edge string
		want       int
	}{
		{"alice", "umatilla", 404}, // never registered there
		{"bob", "ashburn", 404},    // no Twilio identity
	} {
		req := tc.inviteReq(e, tt.user, tt.edge, "")
		res, err := tc.dialogUA("twilio").Client.Do(ctx, req)
		if err != nil {
			t.Fatalf("%s~%s: %v", tt.user, tt.edge, err)
		}
		if res.StatusCode != tt.want {
			t.Fatalf("%s~%s: got %d %s, want %d", tt.user, tt.edge, res.StatusCode, res.Reason, tt.want)
		}
	}
	if n := len(phone.requests(sip.INVITE)); n != 0 {
		t.Fatalf("the phone rang %d times for forged calls", n)
	}
	if got := testutil.ToFloat64(e.b.metrics.setups.WithLabelValues("inbound", outUnknownContact)); got != 1 {
		t.Errorf("unknown_contact setups = %v, want 1", got)
	}
	sess, err := tc.call(ctx, e, "alice", "", nil)
	if err != nil {
		t.Fatalf("the call to the held Contact: %v", err)
	}
	if err := sess.Bye(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestCallLimits: over calls.max_per_user a user's next call, made or
// received, gets 486; over calls.max_concurrent anyone's gets 503 with
// Retry-After; a call that ends gives its place back.
func TestCallLimits(t *testing.T) {
	for _, tt := range []struct {
		name          string
		total, user   int
		code          int
		outcome       string
		wantRetryHdrs bool
	}{
		{"per user", 0, 1, 486, outUserCallLimit, false},
		{"total", 1, 0, 503, outCallLimit, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *envConfig) {
				c.tune = func(s *Settings) { s.MaxCalls, s.MaxCallsPerUser = tt.total, tt.user }
			})
			twilio := newTwilioEdge(e, 4, "answer")
			e.edges.setPlan(twilioTarget("ashburn", twilio.addr))
			tc := newTwilioCaller(e, 2)
			phone := newPhone(e, 3, "answer", nil)
			e.binds.set("alice", e.bindingFor("alice", phone.peer))
			ctx := testCtx(t)

			first, err := tc.call(ctx, e, "alice", "CA1", nil)
			if err != nil {
				t.Fatalf("first call: %v", err)
			}
			// alice's own call out, then Twilio's second call to her.
			desk := newPeer(e, "alice-desk", 5)
			_, err = e.dialOut(ctx, desk, "15550001111", offer(newRTP(e, 5, false).addr, "sendrecv"), nil)
			if code := statusCode(err); code != tt.code {
				t.Fatalf("alice's call out: %v (status %d), want %d", err, code, tt.code)
			}
			res, err := tc.dialogUA("twilio").Client.Do(ctx, tc.inviteReq(e, "alice", "ashburn", "CA2"))
			if err != nil || res.StatusCode != tt.code || (res.GetHeader("Retry-After") != nil) != tt.wantRetryHdrs {
				t.Fatalf("second call to alice: %v %v, want %d", res, err, tt.code)
			}
			for _, dir := range []string{"inbound", "outbound"} {
				if got := testutil.ToFloat64(e.b.metrics.setups.WithLabelValues(dir, tt.outcome)); got != 1 {
					t.Errorf("%s %s = %v, want 1", dir, tt.outcome, got)
				}
			}
			if err := first.Bye(ctx); err != nil {
				t.Fatal(err)
			}
			kit.WaitFor(t, 5*time.Second, "the call to end", func() bool { return len(e.b.Calls()) == 0 })
			again, err := tc.call(ctx, e, "alice", "CA3", nil)
			if err != nil {
				t.Fatalf("a call after the first ended: %v", err)
			}
			if err := again.Bye(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestInboundTLSOnly: with the Contacts registered at Twilio over TLS,
// Twilio calls in over TLS only; an INVITE to such a Contact over TCP gets
// 403 and over UDP nothing (its source may be forged), even from Twilio's
// addresses and to a Contact edgewise holds, and no phone rings.
func TestInboundTLSOnly(t *testing.T) {
	e := newEnv(t, func(c *envConfig) {
		c.contacts = fakeContacts{"alice~ashburn": true}
		c.tune = func(s *Settings) { s.TwilioOverTLS = true }
	})
	phone := newPhone(e, 3, "answer", nil)
	e.binds.set("alice", e.bindingFor("alice", phone.peer))
	invite := func(transport, from string) string {
		return "INVITE sip:alice~ashburn@" + e.tcp().String() + " SIP/2.0\r\n" +
			"Via: SIP/2.0/" + transport + " " + from + ";branch=z9hG4bK" + strings.ToLower(transport) + "tls\r\n" +
			"Max-Forwards: 70\r\nFrom: <sip:+15550001111@example.sip.twilio.com>;tag=f1\r\n" +
			"To: <sip:alice~ashburn@" + e.ip.String() + ">\r\nCall-ID: tls-only-" + transport + "\r\nCSeq: 1 INVITE\r\n" +
			"Contact: <sip:+15550001111@" + from + ">\r\nContent-Length: 0\r\n\r\n"
	}

	tcp, err := net.DialTCP("tcp", &net.TCPAddr{IP: e.n.IP(2).AsSlice()}, net.TCPAddrFromAddrPort(e.tcp()))
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	if _, err := tcp.Write([]byte(invite("TCP", tcp.LocalAddr().String()))); err != nil {
		t.Fatal(err)
	}
	tcp.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := tcp.Read(buf)
	if err != nil {
		t.Fatalf("no answer over TCP: %v", err)
	}
	if got := string(buf[:n]); !strings.HasPrefix(got, "SIP/2.0 403 Forbidden - TLS Required\r\n") {
		t.Fatalf("over TCP: %q", got)
	}

	udp, err := net.DialUDP("udp", &net.UDPAddr{IP: e.n.IP(2).AsSlice()}, net.UDPAddrFromAddrPort(e.udp()))
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	if _, err := udp.Write([]byte(invite("UDP", udp.LocalAddr().String()))); err != nil {
		t.Fatal(err)
	}
	kit.WaitFor(t, 5*time.Second, "both refusals counted", func() bool {
		return testutil.ToFloat64(e.b.metrics.setups.WithLabelValues("inbound", outNotTLS)) == 2
	})
	udp.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := udp.Read(buf); err == nil && strings.HasPrefix(string(buf[:n]), "SIP/2.0 ") && !strings.HasPrefix(string(buf[:n]), "SIP/2.0 100") {
		t.Errorf("over UDP the forged INVITE was answered: %q", buf[:n])
	}
	if n := len(phone.requests(sip.INVITE)); n != 0 {
		t.Fatalf("the phone rang %d times", n)
	}
}
