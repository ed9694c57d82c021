package webrtc

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/selfsign"
	"github.com/pion/rtcp"
	pion "github.com/pion/webrtc/v4"

	"github.com/edgewise-sip/edgewise/media/sdp"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// TestFastPathKeys: the keying material the bridge derives from pion's
// DTLS hooks is the one pion's own exporter gives, for a SHA-256 and a
// SHA-384 cipher suite and each SRTP profile browsers offer.
func TestFastPathKeys(t *testing.T) {
	for _, tc := range []struct {
		suite   dtls.CipherSuiteID
		profile dtls.SRTPProtectionProfile
	}{
		{dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, dtls.SRTP_AEAD_AES_256_GCM},
		{dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, dtls.SRTP_AEAD_AES_128_GCM},
		{dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, dtls.SRTP_AES128_CM_HMAC_SHA1_80},
	} {
		t.Run(dtls.CipherSuiteName(tc.suite), func(t *testing.T) {
			var sec dtlsSecrets
			server, client := fastPathDTLSPair(t, &sec, tc.suite, tc.profile)
			for _, c := range []*dtls.Conn{server, client} {
				st, ok := c.ConnectionState()
				if !ok {
					t.Fatal("no connection state")
				}
				want, err := st.ExportKeyingMaterial("EXTRACTOR-dtls_srtp", nil, 88)
				if err != nil {
					t.Fatal(err)
				}
				got, err := sec.ExportKeyingMaterial("EXTRACTOR-dtls_srtp", nil, 88)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("derived keying material differs from the DTLS connection's")
				}
			}
			if _, _, err := sec.contexts(); err != nil {
				t.Fatal(err)
			}
			if len(sec.master) != 0 {
				t.Error("master secret kept after the contexts were derived")
			}
		})
	}
}

// fastPathDTLSPair runs a DTLS handshake on loopback with sec hooked into
// the server as the bridge hooks it into pion.
func fastPathDTLSPair(t *testing.T, sec *dtlsSecrets, suite dtls.CipherSuiteID, profile dtls.SRTPProtectionProfile) (server, client *dtls.Conn) {
	t.Helper()
	cert, err := selfsign.GenerateSelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	if err != nil {
		t.Fatal(err)
	}
	common := func(c tls.Certificate) []dtls.Option {
		return []dtls.Option{dtls.WithCertificates(c), dtls.WithInsecureSkipVerify(true),
			dtls.WithCipherSuites(suite), dtls.WithSRTPProtectionProfiles(profile)}
	}
	srvOpts := []dtls.ServerOption{dtls.WithServerHelloMessageHook(sec.serverHello), dtls.WithKeyLogWriter(sec)}
	for _, o := range common(cert) {
		srvOpts = append(srvOpts, o)
	}
	var cliOpts []dtls.ClientOption
	for _, o := range common(cert) {
		cliOpts = append(cliOpts, o)
	}
	server, err = dtls.ServerWithOptions(sc, cc.LocalAddr(), srvOpts...)
	if err != nil {
		t.Fatal(err)
	}
	client, err = dtls.ClientWithOptions(cc, sc.LocalAddr(), cliOpts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Close(); _ = client.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, c := range []*dtls.Conn{server, client} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.HandshakeContext(ctx)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return server, client
}

// TestFastPathCarriesMedia: a browser that takes the DTLS client role (as
// browsers do against an a=setup:passive answer or an actpass offer)
// gets the bridge's own path both ways; one that makes the bridge the
// DTLS client gets pion's, and its media flows all the same.
func TestFastPathCarriesMedia(t *testing.T) {
	for _, tc := range []struct {
		name     string
		browser  []func(*pion.SettingEngine)
		wantPath string
	}{
		// Chrome and Firefox answer an actpass offer with active.
		{"browser dtls client", fastPathRole(t, pion.DTLSRoleClient), "bridge"},
		// pion's own answerer takes passive when it controls ICE.
		{"browser dtls server", fastPathRole(t, pion.DTLSRoleServer), "pion"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHub(t, nil)
			br := newBrowser(t, chromeCodecs, tc.browser...)
			f := newFar(t)
			b, web, err := h.NewOffer(context.Background(), f.sdp(1, g711, sdp.SendRecv))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = b.Close() })
			plain, err := b.FromBrowser(br.answer(web, sdp.SendRecv))
			if err != nil {
				t.Fatal(err)
			}
			f.learn(plain)
			kit.WaitFor(t, 10*time.Second, "dtls connected", func() bool { return b.Stats().DTLS == "connected" && br.connected() })
			flow(t, "browser → far", func(s uint16) bool { return br.send(0, s) }, func() uint64 { return f.got(0) }, 50)
			flow(t, "far → browser", func(s uint16) bool { return f.send(0, s) }, func() uint64 { return br.got(0) }, 50)
			// Sequence numbers go on from the speech flow's: the same
			// ones again would be replays.
			flow(t, "browser → far DTMF", func(s uint16) bool { return br.send(101, 2000+s) }, func() uint64 { return f.got(101) }, 10)
			if st := b.Stats(); st.Path != tc.wantPath || st.Dropped[dropNames[dropAuth]] != 0 {
				t.Errorf("path %q dropped %v, want path %q and no srtp_auth drops", st.Path, st.Dropped, tc.wantPath)
			}
		})
	}
}

// TestRTCPBothWays: with the fast path carrying RTP, RTCP still goes
// through pion both ways: the far end's sender report reaches the browser
// under the SSRC it knows, the browser's reaches the far end.
func TestRTCPBothWays(t *testing.T) {
	h := newTestHub(t, nil)
	br := newBrowser(t, chromeCodecs)
	f := newFar(t)
	b, _, _ := connectOutbound(t, h, br, f, g711)
	flow(t, "browser → far", func(s uint16) bool { return br.send(0, s) }, func() uint64 { return f.got(0) }, 20)
	flow(t, "far → browser", func(s uint16) bool { return f.send(0, s) }, func() uint64 { return br.got(0) }, 20)
	if p := b.Stats().Path; p != "bridge" {
		t.Fatalf("path %q, want bridge", p)
	}
	farSR, err := (&rtcp.SenderReport{SSRC: 0xfa5e, PacketCount: 20}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	flow(t, "far → browser RTCP", func(uint16) bool {
		_, err := f.conn.WriteToUDPAddrPort(farSR, b.PlainAddr())
		return err == nil
	}, br.rtcp.Load, 3)
	flow(t, "browser → far RTCP", func(uint16) bool {
		bd := br.track.bound.Load()
		return bd != nil && br.pc.WriteRTCP([]rtcp.Packet{&rtcp.SenderReport{SSRC: bd.ssrc, PacketCount: 20}}) == nil
	}, f.rtcp.Load, 3)
	st := b.Stats()
	if st.SRTP.Tx.RTCPPackets == 0 || st.RTP.Tx.RTCPPackets == 0 {
		t.Errorf("RTCP counters: %+v", st)
	}
}

// TestFastPathRefusesReplayAndForgery plays the attacker on the path the
// bridge decrypts itself: from the browser's own address (the ICE pair
// the fast path trusts), a replayed SRTP packet and a tampered one reach
// nobody and are counted; the browser's real packets still flow.
func TestFastPathRefusesReplayAndForgery(t *testing.T) {
	h := newTestHub(t, nil)
	br := newBrowser(t, chromeCodecs)
	f := newFar(t)
	tp := newProxy(t, h.Addr())
	b, plain, err := h.NewFromOffer(context.Background(), br.offer(sdp.SendRecv))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	f.learn(plain)
	web, err := b.ToBrowser(f.sdp(1, g711, sdp.SendRecv))
	if err != nil {
		t.Fatal(err)
	}
	br.applyAnswer(tp.route(web)) // the browser reaches the bridge only through the tap
	kit.WaitFor(t, 10*time.Second, "dtls connected", func() bool { return b.Stats().DTLS == "connected" && br.connected() })
	flow(t, "browser → far", func(s uint16) bool { return br.send(0, s) }, func() uint64 { return f.got(0) }, 50)
	if st := b.Stats(); st.Path != "bridge" {
		t.Fatalf("path %q, want bridge", st.Path)
	}
	captured := tp.lastSRTP()
	if captured == nil {
		t.Fatal("tap saw no SRTP from the browser")
	}
	before, drops := f.got(0), b.Stats().Dropped[dropNames[dropAuth]]

	const attempts = 20
	for range attempts {
		tp.inject(captured) // replay
	}
	forged := append([]byte(nil), captured...)
	forged[len(forged)-1] ^= 0x55 // a flipped bit in the auth tag
	forged[3]++                   // and a sequence number not seen yet
	for range attempts {
		tp.inject(forged)
	}
	kit.WaitFor(t, 10*time.Second, "attacks counted", func() bool {
		return b.Stats().Dropped[dropNames[dropAuth]]-drops >= 2*attempts
	})
	if got := f.got(0) - before; got != 0 {
		t.Errorf("the far end got %d replayed or forged packets", got)
	}
	// The browser is unaffected.
	flow(t, "browser → far after the attack", func(s uint16) bool { return br.send(0, 1000+s) }, func() uint64 { return f.got(0) }, 50)
	flow(t, "far → browser after the attack", func(s uint16) bool { return f.send(0, s) }, func() uint64 { return br.got(0) }, 50)
	if st := b.Stats(); st.Failure != "" || st.Path != "bridge" {
		t.Errorf("after the attack: failure %q path %q", st.Failure, st.Path)
	}
}

func fastPathRole(t *testing.T, r pion.DTLSRole) []func(*pion.SettingEngine) {
	return []func(*pion.SettingEngine){func(se *pion.SettingEngine) {
		if err := se.SetAnsweringDTLSRole(r); err != nil {
			t.Fatal(err)
		}
	}}
}
