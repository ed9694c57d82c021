package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// secPhoneSDP is a G.711 offer from ip.
func secPhoneSDP(ip string, port int) string {
	return fmt.Sprintf("v=0\r\no=- 1 1 IN IP4 %[1]s\r\ns=-\r\nc=IN IP4 %[1]s\r\nt=0 0\r\nm=audio %[2]d RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n", ip, port)
}

// secAuthInvite authenticates one INVITE from phone as alice to number: it
// sends the INVITE, answers the 407 and returns the authenticated request
// as sent and the final response to it.
func secAuthInvite(t *testing.T, phone *rawSIP, d *daemon, number string) (sipRequest, *sip.Response) {
	t.Helper()
	uri := "sip:" + number + "@" + d.ip
	req := sipRequest{
		Method: "INVITE", URI: uri, Transport: strings.ToUpper(phone.network),
		ViaHost: phone.ip, ViaPort: phone.port(), Branch: randHex(8),
		From: "sip:alice@" + d.ip, FromTag: randHex(4), To: uri,
		CallID: randHex(10), CSeq: 1,
		Contact: fmt.Sprintf("sip:alice@%s:%d", phone.ip, phone.port()),
		Body:    secPhoneSDP(phone.ip, 40000),
	}
	phone.send(req.String())
	chal := phone.expectFinal(req, 407, "INVITE without credentials")
	phone.send(secACKForError(req, chal))
	req.CSeq, req.Branch = 2, randHex(8)
	req.Auth = answerChallenge(t, chal, "INVITE", uri, "alice", "alice-secret", 1)
	phone.send(req.String())
	if phone.network == "udp" {
		// A retransmission, as a phone sends when it hears nothing within
		// T1: the transaction layer must absorb it, not dial twice.
		phone.send(req.String())
	}
	res := phone.final(req, 10*time.Second)
	if res != nil && res.StatusCode == 200 {
		phone.send(secInDialog(req, res, "ACK", req.CSeq))
	}
	return req, res
}

// secInDialog is an ACK or BYE in the dialog that ok established.
func secInDialog(req sipRequest, ok *sip.Response, method string, cseq int) string {
	m := req
	m.Method, m.Auth, m.Body, m.Branch, m.CSeq = method, "", "", randHex(8), cseq
	if c := ok.Contact(); c != nil {
		m.URI = c.Address.String()
	}
	return strings.Replace(m.String(), "To: <"+req.To+">\r\n", "To: "+ok.To().Value()+"\r\n", 1)
}

// secACKForError is the ACK of a non-2xx final response (RFC 3261 §17.1.1.3):
// same branch, the response's To.
func secACKForError(req sipRequest, res *sip.Response) string {
	ack := req
	ack.Method, ack.Auth, ack.Body = "ACK", "", ""
	s := ack.String()
	return strings.Replace(s, "To: <"+req.To+">\r\n", "To: "+res.To().Value()+"\r\n", 1)
}

// secEndCall hangs up the call that ok answered.
func secEndCall(t *testing.T, phone *rawSIP, req sipRequest, ok *sip.Response) {
	t.Helper()
	bye := secInDialog(req, ok, "BYE", req.CSeq+1)
	phone.send(bye)
	msg, err := sip.ParseMessage([]byte(bye))
	if err != nil {
		t.Fatal(err)
	}
	b := req
	b.Method, b.CSeq = "BYE", req.CSeq+1
	b.Branch = strings.TrimPrefix(msg.Via().Params.GetOr("branch", ""), "z9hG4bK")
	phone.expectFinal(b, 200, "BYE")
}

// TestSecurityReplayedInviteNotDialled plays the toll fraudster: a phone's
// authenticated INVITE is captured and sent again within the nonce's
// lifetime, pointed at a premium number, with a new From tag, Via and
// Call-ID, from the phone's own (forged) address and from another. Every
// replay is refused and Twilio sees only the phone's one real call, which a
// real retransmission of its INVITE does not dial twice.
func TestSecurityReplayedInviteNotDialled(t *testing.T) {
	s := startSim(t)
	d := startDaemon(t, strangerConfig(s, ""))
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			phoneIP := nextIP(t)
			phone := dialRawSIP(t, network, phoneIP, d.ip+":5060")
			before := len(s.mustCalls(t))
			req, ok := secAuthInvite(t, phone, d, "15550001111")
			if ok == nil || ok.StatusCode != 200 {
				t.Fatalf("the phone's own authenticated INVITE: %v", ok)
			}
			kit.WaitFor(t, 5*time.Second, "edgesim to see the phone's call", func() bool { return len(s.mustCalls(t)) == before+1 })

			premium := "sip:+19005550100@" + d.ip
			replays := []struct {
				name   string
				from   string // source address; "" = the phone's (forged over UDP, same host over TCP)
				change func(r *sipRequest)
				want   int
				stale  bool
			}{
				// The capture's branch, Call-ID and CSeq kept (so it passes
				// for a retransmission by those), the destination, the
				// From tag and the Via sent-by changed.
				{"another Request-URI, new tag and Via sent-by", "", func(r *sipRequest) {
					r.Branch, r.CallID = req.Branch, req.CallID
					r.URI, r.To = premium, premium
				}, 403, false},
				{"another Request-URI, new tag, Via and Call-ID", "", func(r *sipRequest) {
					r.URI, r.To = premium, premium
				}, 403, false},
				{"same destination, same branch and Call-ID, new tag and Via sent-by", "", func(r *sipRequest) {
					r.Branch, r.CallID = req.Branch, req.CallID
				}, 407, true},
				{"another Request-URI with the digest uri changed to match", "", func(r *sipRequest) {
					r.URI, r.To = premium, premium
					r.Auth = strings.Replace(r.Auth, `uri="sip:15550001111@`, `uri="sip:+19005550100@`, 1)
				}, 403, false},
				{"same destination, nonce-count spent by another request", "", func(r *sipRequest) {}, 407, true},
				{"same request from another address", nextIP(t), func(r *sipRequest) {}, 407, true},
			}
			for _, rp := range replays {
				r := req
				r.FromTag, r.Branch, r.CallID = randHex(4), randHex(8), randHex(10)
				rp.change(&r)
				src := phone
				if rp.from != "" {
					src = dialRawSIP(t, network, rp.from, d.ip+":5060")
				}
				r.ViaHost, r.ViaPort = src.ip, src.port()
				if r.Branch == req.Branch {
					// A sent-by of the attacker's choosing (a loopback
					// address nobody uses); rport brings the answer back.
					r.ViaHost = nextIP(t)
				}
				src.send(r.String())
				res := src.final(r, 5*time.Second)
				if res == nil || res.StatusCode != rp.want || isStale(res) != rp.stale {
					t.Fatalf("replay %q: got %v, want %d (stale %v)", rp.name, res, rp.want, rp.stale)
				}
				src.send(secACKForError(r, res))
			}
			secEndCall(t, phone, req, ok)
			calls := s.mustCalls(t)
			if len(calls) != before+1 {
				t.Fatalf("edgesim saw %d calls, want only the phone's one", len(calls)-before)
			}
			for _, c := range calls {
				if strings.Contains(c.To, "1900") {
					t.Fatalf("a replay was dialled: %+v", c)
				}
			}
		})
	}
	if out := d.out.String(); !strings.Contains(out, "digest uri does not match the Request-URI") {
		t.Error("edgewise did not log why the replay with another Request-URI was refused")
	}
}

// TestSecurityReplayedRegisterRefused: a captured REGISTER sent again with
// the attacker's Contact is refused (stale) and changes no binding, from the
// phone's address or from another; the phone's own retransmission of it is
// answered 200 again; digest credentials for another Request-URI are refused.
func TestSecurityReplayedRegisterRefused(t *testing.T) {
	d := startDaemon(t, defaultConfig)
	for _, network := range []string{"udp", "tcp"} {
		t.Run(network, func(t *testing.T) {
			phone := dialRawSIP(t, network, nextIP(t), d.ip+":5060")
			user := map[string]string{"udp": "alice", "tcp": "bob"}[network]
			uri := "sip:" + d.ip
			contact := fmt.Sprintf("sip:%s@%s:%d;transport=%s", user, phone.ip, phone.port(), network)
			req := sipRequest{
				Method: "REGISTER", URI: uri, Transport: strings.ToUpper(network),
				ViaHost: phone.ip, ViaPort: phone.port(), Branch: randHex(8),
				From: "sip:" + user + "@edgewise.test", FromTag: randHex(4), To: "sip:" + user + "@edgewise.test",
				CallID: randHex(10), CSeq: 1, Contact: contact, Extra: []string{"Expires: 600"},
			}
			phone.send(req.String())
			chal := phone.expectFinal(req, 401, "REGISTER without credentials")
			req.CSeq, req.Branch = 2, randHex(8)
			req.Auth = answerChallenge(t, chal, "REGISTER", uri, user, user+"-secret", 1)
			phone.send(req.String())
			phone.expectFinal(req, 200, "authenticated REGISTER")
			// The phone's retransmission, byte for byte: 200 again.
			phone.send(req.String())
			phone.expectFinal(req, 200, "retransmitted REGISTER")

			evil := nextIP(t)
			attackerContact := fmt.Sprintf("sip:%s@%s:5060", user, evil)
			for _, rp := range []struct {
				name  string
				from  string
				r     sipRequest
				want  int
				stale bool
			}{
				{"another Contact", "", withContact(req, attackerContact), 401, true},
				{"another Contact and Call-ID", "", withCallID(withContact(req, attackerContact)), 401, true},
				{"the same request from another address", evil, req, 401, true},
				{"credentials for another Request-URI", "", withURI(req, "sip:evil.example"), 403, false},
			} {
				src := phone
				if rp.from != "" {
					src = dialRawSIP(t, network, rp.from, d.ip+":5060")
				}
				r := rp.r
				r.Branch, r.ViaHost, r.ViaPort = randHex(8), src.ip, src.port()
				src.send(r.String())
				res := src.expectFinal(r, rp.want, rp.name)
				if isStale(res) != rp.stale {
					t.Fatalf("%s: stale=%v, want %v", rp.name, isStale(res), rp.stale)
				}
			}
			if got := d.contacts(t, user); len(got) != 1 || !strings.Contains(got[0], phone.ip) {
				t.Fatalf("%s's contacts after the replays: %v, want only the phone's", user, got)
			}
		})
	}
}

func withContact(r sipRequest, c string) sipRequest { r.Contact = c; return r }
func withCallID(r sipRequest) sipRequest            { r.CallID = randHex(10); return r }
func withURI(r sipRequest, u string) sipRequest     { r.URI = u; return r }
