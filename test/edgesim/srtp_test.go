package edgesim

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// secureOffer is testOffer as RTP/SAVP with the gateway's key.
func secureOffer(ip string, port int, k sdesKey) []byte {
	body := strings.Replace(string(testOffer(ip, port, "")), "RTP/AVP", "RTP/SAVP", 1)
	return []byte(body + "a=crypto:" + k.attr() + "\r\n")
}

// TestSecureMedia: with Secure Media on, edgesim refuses a plain offer
// with 488, answers an SRTP offer with its own key under the offer's tag,
// decrypts what the gateway sends (counting it) and echoes it under its
// own key; a packet under another key is counted as failed, not echoed.
// With Secure Media off, an SRTP offer is refused.
func TestSecureMedia(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	cfg := testConfig(n)
	cfg.Calls.SecureMedia = true
	sim := startSim(t, cfg)
	addr, _ := sim.SIPAddr(n.Addr(1))

	gw := newTestGateway(t, n.Addr(200), "udp")
	_, err := gw.invite(callCtx(t), t, inviteOpts{user: "alice", pass: alicePass, dialled: "+15551230000", addr: addr})
	var dr *sipgo.ErrDialogResponse
	if !errors.As(err, &dr) || dr.Res.StatusCode != sip.StatusNotAcceptableHere ||
		!strings.Contains(dr.Res.GetHeader("Warning").Value(), "plain RTP/AVP refused") {
		t.Fatalf("plain offer: %v, want 488 with a Warning", err)
	}

	gwKey := newSDESKey(5, "AES_CM_128_HMAC_SHA1_32")
	gw2 := newTestGateway(t, n.Addr(201), "udp")
	rp := newRTPPeer(t, gw2.ip)
	oc, err := gw2.invite(callCtx(t), t, inviteOpts{user: "alice", pass: alicePass, dialled: "+15551230000", addr: addr,
		body: secureOffer(gw2.ip, rp.port(), gwKey)})
	if err != nil {
		t.Fatalf("SRTP offer: %v", err)
	}
	a := oc.answer
	if a.proto != "RTP/SAVP" || len(a.crypto) != 1 || a.crypto[0].tag != 5 || a.crypto[0].suite != "AES_CM_128_HMAC_SHA1_32" {
		t.Fatalf("answer = %s %+v\n%s", a.proto, a.crypto, oc.sess.InviteResponse.Body())
	}
	tx, _ := gwKey.context()
	rx, _ := a.crypto[0].context()
	buf := make([]byte, 2048)
	const packets = 10
	for range packets {
		plain := rp.packet(t)
		enc, err := tx.EncryptRTP(nil, plain, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := rp.conn.WriteToUDPAddrPort(enc, a.addr); err != nil {
			t.Fatal(err)
		}
		_ = rp.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, _, err := rp.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("no echo: %v", err)
		}
		dec, err := rx.DecryptRTP(nil, buf[:got], &rtp.Header{})
		if err != nil || string(dec) != string(plain) {
			t.Fatalf("echo does not decrypt to what was sent under edgesim's key: %v", err)
		}
	}
	other := newSDESKey(5, "AES_CM_128_HMAC_SHA1_32")
	otx, _ := other.context()
	forged, _ := otx.EncryptRTP(nil, rp.packet(t), nil)
	_, _ = rp.conn.WriteToUDPAddrPort(forged, a.addr)
	st := onlyCall(t, sim)
	kit.WaitFor(t, 5*time.Second, "srtp counters", func() bool {
		c, _ := sim.Call(st.ID)
		return c.Media != nil && c.Media.SRTP && c.Media.PacketsReceived == packets && c.Media.SRTPFailed == 1 && c.Media.PacketsEchoed == packets
	})

	// Secure Media off: RTP/SAVP is refused.
	cfg2 := testConfig(kit.NewNet(t))
	sim2 := startSim(t, cfg2)
	addr2, _ := sim2.SIPAddr(netip.MustParseAddr(cfg2.Edges[0].IPs[0]).String())
	gw3 := newTestGateway(t, n.Addr(202), "udp")
	rp3 := newRTPPeer(t, gw3.ip)
	_, err = gw3.invite(callCtx(t), t, inviteOpts{user: "alice", pass: alicePass, dialled: "x", addr: addr2, body: secureOffer(gw3.ip, rp3.port(), gwKey)})
	if !errors.As(err, &dr) || dr.Res.StatusCode != sip.StatusNotAcceptableHere {
		t.Fatalf("SRTP offer with Secure Media off: %v, want 488", err)
	}
}
