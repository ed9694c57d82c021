package webrtc

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgewise-sip/edgewise/media/sdp"
	"github.com/edgewise-sip/edgewise/test/kit"
)

var g711 = []sdp.Codec{pcmu, event101}

// TestHold: hold and resume by re-offer, from the browser and from the far
// end, on the same bridge; directions are carried across both ways and
// media flows again after resume.
func TestHold(t *testing.T) {
	h := newTestHub(t, nil)
	br := newBrowser(t, chromeCodecs)
	f := newFar(t)
	b, _, web := connectOutbound(t, h, br, f, g711)
	ufrag := regexp.MustCompile(`a=ice-ufrag:\S+`).FindString(string(web))

	version := 2
	browserReoffer := func(dir, answerDir sdp.Direction) {
		t.Helper()
		plain, err := b.FromBrowser(br.offer(dir))
		if err != nil {
			t.Fatal(err)
		}
		contains(t, plain, "a="+dir.String(), "RTP/AVP 0 126")
		f.learn(plain)
		web, err := b.ToBrowser(f.sdp(version, g711, answerDir))
		version++
		if err != nil {
			t.Fatal(err)
		}
		contains(t, web, "a="+answerDir.String(), ufrag)
		br.applyAnswer(web)
	}
	farReoffer := func(dir, answerDir sdp.Direction) {
		t.Helper()
		web, err := b.ToBrowser(f.sdp(version, g711, dir))
		version++
		if err != nil {
			t.Fatal(err)
		}
		contains(t, web, "a="+dir.String(), ufrag, "a=ice-lite")
		plain, err := b.FromBrowser(br.answer(web, answerDir))
		if err != nil {
			t.Fatal(err)
		}
		contains(t, plain, "a="+answerDir.String())
		f.learn(plain)
	}
	media := func(what string) {
		t.Helper()
		flow(t, what+": browser → far", func(s uint16) bool { return br.send(0, s) }, func() uint64 { return f.got(0) }, 20)
		flow(t, what+": far → browser", func(s uint16) bool { return f.send(0, s) }, func() uint64 { return br.got(0) }, 20)
	}

	browserReoffer(sdp.SendOnly, sdp.RecvOnly)
	if d := b.Stats().Direction; d != sdp.RecvOnly {
		t.Errorf("direction after hold = %s", d)
	}
	browserReoffer(sdp.SendRecv, sdp.SendRecv)
	media("resumed by the browser")

	farReoffer(sdp.SendOnly, sdp.RecvOnly)
	farReoffer(sdp.Inactive, sdp.Inactive)
	farReoffer(sdp.SendRecv, sdp.SendRecv)
	media("resumed by the far end")
	if b.Err() != nil {
		t.Errorf("bridge failed: %v", b.Err())
	}
}

// waitFailure waits for the bridge to report a failure.
func waitFailure(t *testing.T, b *Bridge, within time.Duration) error {
	t.Helper()
	got := make(chan error, 1)
	b.OnFailure(func(err error) { got <- err })
	select {
	case err := <-got:
		if b.Err() != err {
			t.Errorf("Err() = %v, callback got %v", b.Err(), err)
		}
		select {
		case <-b.Failed():
		default:
			t.Error("Failed() not closed")
		}
		return err
	case <-time.After(within):
		t.Fatalf("no failure within %s (stats %+v)", within, b.Stats())
		return nil
	}
}

// TestFailures: each way the browser's media can die ends in one report
// with a reason fit for a SIP Reason header.
func TestFailures(t *testing.T) {
	short := func(s *Settings) {
		s.DisconnectedTimeout = 300 * time.Millisecond
		s.FailedTimeout = 300 * time.Millisecond
		s.ConnectTimeout = 2 * time.Second
	}
	t.Run("fingerprint mismatch", func(t *testing.T) {
		h := newTestHub(t, short)
		br := newBrowser(t, chromeCodecs)
		f := newFar(t)
		offer := regexp.MustCompile(`(a=fingerprint:sha-256 )([0-9A-F]{2})`).ReplaceAllStringFunc(
			string(br.offer(sdp.SendRecv)), func(m string) string {
				if strings.HasSuffix(m, "00") {
					return m[:len(m)-2] + "01"
				}
				return m[:len(m)-2] + "00"
			})
		b, plain, err := h.NewFromOffer(context.Background(), []byte(offer))
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		f.learn(plain)
		web, err := b.ToBrowser(f.sdp(1, g711, sdp.SendRecv))
		if err != nil {
			t.Fatal(err)
		}
		br.applyAnswer(web)
		err = waitFailure(t, b, 10*time.Second)
		if !errors.Is(err, ErrDTLSFailed) || err.Error() != "dtls failed: fingerprint mismatch" {
			t.Errorf("failure = %q, want dtls failed: fingerprint mismatch", err)
		}
	})
	t.Run("no ice", func(t *testing.T) {
		h := newTestHub(t, short)
		br := newBrowser(t, chromeCodecs)
		f := newFar(t)
		b, plain, err := h.NewFromOffer(context.Background(), br.offer(sdp.SendRecv))
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		f.learn(plain)
		if _, err := b.ToBrowser(f.sdp(1, g711, sdp.SendRecv)); err != nil {
			t.Fatal(err)
		}
		// The answer never reaches the browser: no checks arrive.
		if err := waitFailure(t, b, 10*time.Second); !errors.Is(err, ErrICEFailed) {
			t.Errorf("failure = %v, want ice failed", err)
		}
	})
	t.Run("browser closes", func(t *testing.T) {
		h := newTestHub(t, short)
		br := newBrowser(t, chromeCodecs)
		b, _, _ := connectOutbound(t, h, br, newFar(t), g711)
		br.close()
		if err := waitFailure(t, b, 10*time.Second); !errors.Is(err, ErrPeerClosed) {
			t.Errorf("failure = %v, want %v", err, ErrPeerClosed)
		}
	})
	t.Run("browser vanishes", func(t *testing.T) {
		h := newTestHub(t, short)
		br := newBrowser(t, chromeCodecs)
		f := newFar(t)
		p := newProxy(t, h.Addr())
		b, plain, err := h.NewFromOffer(context.Background(), br.offer(sdp.SendRecv))
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		f.learn(plain)
		web, err := b.ToBrowser(f.sdp(1, g711, sdp.SendRecv))
		if err != nil {
			t.Fatal(err)
		}
		br.applyAnswer(p.route(web)) // the browser reaches the bridge only through p
		kit.WaitFor(t, 10*time.Second, "dtls connected", func() bool { return b.Stats().DTLS == "connected" })
		start := time.Now()
		p.cut.Store(true)
		err = waitFailure(t, b, 10*time.Second)
		if !errors.Is(err, ErrConsentLost) || err.Error() != "consent lost" {
			t.Errorf("failure = %v, want consent lost", err)
		}
		t.Logf("consent lost %s after the browser vanished (timeouts 300ms + 300ms)", time.Since(start).Round(time.Millisecond))
	})
}

// TestCloseFreesEverything: after a call with media, closing the bridge
// and the hub ends every goroutine and frees both sockets; Close twice is
// fine, and so is a context that ends the bridge.
func TestCloseFreesEverything(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	func() {
		h, err := NewHub(Settings{Listen: netip.AddrPortFrom(loopback, 0)}, testLogger())
		if err != nil {
			t.Fatal(err)
		}
		br := newBrowser(t, chromeCodecs)
		f := newFar(t)
		b, _, _ := connectOutbound(t, h, br, f, g711)
		flow(t, "browser → far", func(s uint16) bool { return br.send(0, s) }, func() uint64 { return f.got(0) }, 20)
		flow(t, "far → browser", func(s uint16) bool { return f.send(0, s) }, func() uint64 { return br.got(0) }, 20)

		ctx, cancel := context.WithCancel(context.Background())
		br2 := newBrowser(t, chromeCodecs)
		b2, _, err := h.NewFromOffer(ctx, br2.offer(sdp.SendRecv))
		if err != nil {
			t.Fatal(err)
		}
		plainAddr, muxAddr := b.PlainAddr(), h.Addr()
		if err := b.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := b.Close(); err != nil {
			t.Errorf("second close: %v", err)
		}
		if _, err := b.FromBrowser([]byte("v=0")); !errors.Is(err, ErrClosed) {
			t.Errorf("after close: %v", err)
		}
		cancel()
		kit.WaitFor(t, 5*time.Second, "context closes the bridge", func() bool { return len(h.Bridges()) == 0 })
		if _, err := b2.ToBrowser(nil); !errors.Is(err, ErrClosed) {
			t.Errorf("bridge not closed by its context: %v", err)
		}
		if err := h.Close(); err != nil {
			t.Errorf("hub close: %v", err)
		}
		for _, a := range []netip.AddrPort{plainAddr, muxAddr} {
			c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(a))
			if err != nil {
				t.Errorf("%s still bound: %v", a, err)
				continue
			}
			_ = c.Close()
		}
		br.close()
		br2.close()
		f.close()
	}()
	goleak.VerifyNone(t, leaks)
}
