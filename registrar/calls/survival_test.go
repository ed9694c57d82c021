package calls

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	pion "github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// survivalEnv is an env where bob has extension 201 and alice 200, every
// Twilio edge is down unless up, and a Twilio edge (host 2) would answer.
func survivalEnv(t *testing.T, up bool, tune func(*Settings)) (*env, *twilioEdge) {
	t.Helper()
	e := newEnv(t, func(c *envConfig) {
		// Leg B's SDP carries this for Twilio; a local callee must get
		// edgewise's local address instead.
		c.mediaPublic = netip.MustParseAddr("192.0.2.1")
		c.tune = func(s *Settings) {
			s.Extensions = map[string]string{"200": "alice", "201": "bob"}
			if tune != nil {
				tune(s)
			}
		}
	})
	tw := newTwilioEdge(e, 2, "answer")
	e.edges.setPlan(twilioTarget("ashburn", tw.addr))
	e.edges.down.Store(!up)
	return e, tw
}

// fallbackTarget is a fallback target at ap.
func fallbackTarget(ap netip.AddrPort, priority, weight int) Target {
	return Target{URI: fmt.Sprintf("sip:%s:%d", ap.Addr(), ap.Port()), Priority: priority, Weight: weight}
}

// blackHole is a UDP socket that reads and answers nothing: a fallback
// target that is down (a SIP stack would say 100 Trying).
func blackHole(e *env, host int) (netip.AddrPort, *atomic.Int32) {
	e.t.Helper()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(e.n.IP(host), 0)))
	if err != nil {
		e.t.Fatal(err)
	}
	var got atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, _, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if strings.HasPrefix(string(buf[:n]), "INVITE ") {
				got.Add(1)
			}
		}
	}()
	e.atEnd(func() {
		conn.Close()
		<-done
	})
	return conn.LocalAddr().(*net.UDPAddr).AddrPort(), &got
}

// TestLocalCallWhenTwilioDown: with every edge down, alice dials bob's
// extension; both of bob's phones ring, the first to answer wins and the
// other is cancelled, media flows both ways through the relay (the callee
// sees edgewise's local address, not the public one Twilio would), Twilio
// never sees the call, and status and metrics say survival mode carried it.
func TestLocalCallWhenTwilioDown(t *testing.T) {
	e, tw := survivalEnv(t, false, nil)
	loser := newPhone(e, 4, "ring", nil)
	winner := newPhone(e, 3, "answer", loser.rang)
	e.binds.set("bob", e.bindingFor("bob", winner.peer), e.bindingFor("bob", loser.peer))
	alice := newPeer(e, "alice", 5)
	media := newRTP(e, 5, false)
	ctx := testCtx(t)

	if st := e.b.Survival(); !st.Active || st.Since == nil || st.Calls != 0 {
		t.Fatalf("survival before the call = %+v, want active since now, no calls", st)
	}
	sess, err := e.dialOut(ctx, alice, "201", offer(media.addr, "sendrecv"), nil)
	if err != nil {
		t.Fatalf("local call failed: %v", err)
	}
	kit.WaitFor(t, 5*time.Second, "the losing phone's CANCEL", func() bool { return loser.cancels.Load() == 1 })
	if r := loser.reason.Load(); r == nil || !strings.Contains(*r, "completed elsewhere") {
		t.Errorf("CANCEL Reason = %v, want Call completed elsewhere", r)
	}
	winner.waitRequest(sip.ACK, 1)
	inv := winner.requests(sip.INVITE)[0]
	if u := inv.From().Address.User; u != "200" {
		t.Errorf("bob's phone sees the caller as %q, want alice's extension 200", u)
	}
	if u := inv.To().Address.User; u != "bob" {
		t.Errorf("To = %q, want bob", u)
	}
	calleeSide, _ := mediaOf(t, inv.Body())
	callerSide, _ := mediaOf(t, sess.InviteResponse.Body())
	if calleeSide.Addr() != e.ip || callerSide.Addr() != e.ip || calleeSide == callerSide {
		t.Fatalf("SDP: callee sees %s, caller sees %s; want edgewise's local address %s on two ports", calleeSide, callerSide, e.ip)
	}
	if n := len(tw.requests(sip.INVITE)); n != 0 {
		t.Fatalf("Twilio got %d INVITEs for a local call in survival mode", n)
	}
	st := e.onlyCall()
	if st.Direction != "local" || st.Route != "local" || st.To != "bob" || st.State != "answered" || st.Phone == nil || st.Callee == nil || st.TwilioLeg != nil {
		t.Errorf("status = %+v", st)
	}

	// alice → relay → bob's phone (echo) → relay → alice.
	media.send(t, callerSide, 20)
	kit.WaitFor(t, 5*time.Second, "bob's echo back at alice", func() bool { return media.got.Load() >= 20 })
	if got := winner.media.got.Load(); got < 20 {
		t.Errorf("bob's phone got %d packets", got)
	}

	if sv := e.b.Survival(); !sv.Active || sv.Calls != 1 || sv.Local != LocalWhenTwilioDown {
		t.Errorf("survival = %+v, want active with 1 call", sv)
	}
	if got := testutil.ToFloat64(e.b.metrics.survivalCalls.WithLabelValues("local")); got != 1 {
		t.Errorf("survival_calls_total{local} = %v", got)
	}
	if got := testutil.ToFloat64(e.b.metrics.setups.WithLabelValues("local", outAnswered)); got != 1 {
		t.Errorf("call_setups_total{local,answered} = %v", got)
	}
	if got := testutil.ToFloat64(e.b.metrics.survival); got != 1 {
		t.Errorf("survival_mode = %v", got)
	}
	if err := sess.Bye(ctx); err != nil {
		t.Fatalf("BYE: %v", err)
	}
	winner.waitRequest(sip.BYE, 1)

	// Twilio is back: survival mode ends, the count stays with the period.
	e.edges.down.Store(false)
	if sv := e.b.Survival(); sv.Active || sv.Ended == nil || sv.Calls != 1 {
		t.Errorf("survival after Twilio came back = %+v", sv)
	}
	if got := testutil.ToFloat64(e.b.metrics.survival); got != 0 {
		t.Errorf("survival_mode = %v after Twilio came back", got)
	}
}

// TestLocalCallFailures: a local callee who is busy, does not answer in
// time, is cancelled by the caller, or has no phone, gives the caller the
// right answer, and nothing is left ringing.
func TestLocalCallFailures(t *testing.T) {
	for _, tt := range []struct {
		name   string
		script string // bob's phone; "" = none registered
		cancel bool
		code   int
	}{
		{"busy", "busy", false, 486},
		{"no answer", "ring", false, 480},
		{"caller cancels", "ring", true, 487},
		{"no phone", "", false, 480},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e, tw := survivalEnv(t, false, func(s *Settings) { s.SetupTimeout = 1500 * time.Millisecond })
			var bob *phoneUAS
			if tt.script != "" {
				bob = newPhone(e, 3, tt.script, nil)
				e.binds.set("bob", e.bindingFor("bob", bob.peer))
			}
			alice := newPeer(e, "alice", 5)
			media := newRTP(e, 5, false)
			ctx, cancel := context.WithCancel(testCtx(t))
			defer cancel()
			sess, err := e.dialOut(ctx, alice, "bob", offer(media.addr, "sendrecv"), func(res *sip.Response) error {
				if tt.cancel && res.StatusCode == 180 {
					cancel() // alice hangs up while bob's phone rings
				}
				return nil
			})
			got := statusCode(err)
			if tt.cancel && sess != nil && sess.InviteResponse != nil {
				got = sess.InviteResponse.StatusCode
			}
			if got != tt.code {
				t.Fatalf("got %d (%v), want %d", got, err, tt.code)
			}
			if bob != nil && tt.script == "ring" {
				kit.WaitFor(t, 5*time.Second, "bob's phone cancelled", func() bool { return bob.cancels.Load() == 1 })
			}
			if n := len(tw.requests(sip.INVITE)); n != 0 {
				t.Errorf("Twilio got %d INVITEs", n)
			}
		})
	}
}

// TestLocalModes: calls.local decides whether a call between local users
// leaves the building: when_twilio_down sends it through Twilio while an
// edge is usable, always never does, never always does.
func TestLocalModes(t *testing.T) {
	for _, tt := range []struct {
		mode      LocalMode
		up        bool
		viaTwilio bool
	}{
		{LocalWhenTwilioDown, true, true},
		{LocalWhenTwilioDown, false, false},
		{LocalAlways, true, false},
		{LocalNever, false, true},
	} {
		t.Run(fmt.Sprintf("%s up=%v", tt.mode, tt.up), func(t *testing.T) {
			e, tw := survivalEnv(t, tt.up, func(s *Settings) { s.Local = tt.mode })
			bob := newPhone(e, 3, "answer", nil)
			e.binds.set("bob", e.bindingFor("bob", bob.peer))
			alice := newPeer(e, "alice", 5)
			media := newRTP(e, 5, false)
			ctx := testCtx(t)
			sess, err := e.dialOut(ctx, alice, "201", offer(media.addr, "sendrecv"), nil)
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			viaTwilio, rang := len(tw.requests(sip.INVITE)) > 0, len(bob.requests(sip.INVITE)) > 0
			if viaTwilio != tt.viaTwilio || rang == tt.viaTwilio {
				t.Errorf("Twilio got the call: %v, bob's phone rang: %v; want through Twilio: %v", viaTwilio, rang, tt.viaTwilio)
			}
			if tt.viaTwilio {
				if u := tw.requests(sip.INVITE)[0].Recipient.User; u != "201" {
					t.Errorf("Twilio was asked for %q, want the number dialled", u)
				}
				if st := e.onlyCall(); st.Route != "twilio" || st.Direction != "outbound" {
					t.Errorf("status = %+v", st)
				}
			}
			if err := sess.Bye(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestFallbackTargetsInOrder: with every edge down, a call to a number goes
// to the fallback targets: the first by priority stays silent, the next is
// tried after Timeout and answers; each gets the number dialled as the
// Request-URI's user; Twilio never sees the call.
func TestFallbackTargetsInOrder(t *testing.T) {
	e, tw := survivalEnv(t, false, nil)
	down, tried := blackHole(e, 6)
	gw := newPhone(e, 7, "answer", nil)
	e.setFallback(fallbackTarget(gw.addr, 2, 10), fallbackTarget(down, 1, 10))
	alice := newPeer(e, "alice", 5)
	media := newRTP(e, 5, false)
	ctx := testCtx(t)

	sess, err := e.dialOut(ctx, alice, "15551234567", offer(media.addr, "sendrecv"), nil)
	if err != nil {
		t.Fatalf("call to the fallback targets: %v", err)
	}
	if inv := gw.waitRequest(sip.INVITE, 1); inv.Recipient.User != "15551234567" {
		t.Errorf("Request-URI = %s, want the number dialled as user", inv.Recipient.String())
	}
	if tried.Load() == 0 {
		t.Error("the first target by priority was never tried")
	}
	if n := len(tw.requests(sip.INVITE)); n != 0 {
		t.Errorf("Twilio got %d INVITEs", n)
	}
	st := e.onlyCall()
	if st.Route != "fallback" || st.Direction != "outbound" || st.Target != gw.addr.String() || st.Callee == nil {
		t.Errorf("status = %+v", st)
	}
	callerSide, _ := mediaOf(t, sess.InviteResponse.Body())
	media.send(t, callerSide, 10)
	kit.WaitFor(t, 5*time.Second, "the gateway's echo", func() bool { return media.got.Load() >= 10 })
	if got := testutil.ToFloat64(e.b.metrics.survivalCalls.WithLabelValues("fallback")); got != 1 {
		t.Errorf("survival_calls_total{fallback} = %v", got)
	}
	if err := sess.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	gw.waitRequest(sip.BYE, 1)
}

// TestEmergencyNumbers: at the call limits (per user and in total), an
// emergency number still gets through, to the fallback target when Twilio
// is down, and through Twilio when it is up; with Twilio up but silent at
// every address, it reaches the fallback target after the timeout.
func TestEmergencyNumbers(t *testing.T) {
	for _, tt := range []struct {
		name        string
		up          bool
		twilio      string // the Twilio edge's script
		viaFallback bool
	}{
		{"twilio down", false, "answer", true},
		{"twilio up", true, "answer", false},
		{"twilio silent", true, "silent", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *envConfig) {
				c.tune = func(s *Settings) { s.MaxCalls, s.MaxCallsPerUser, s.EmergencyNumbers = 1, 1, []string{"911"} }
			})
			tw := newTwilioEdge(e, 2, tt.twilio)
			e.edges.setPlan(twilioTarget("ashburn", tw.addr))
			if tt.twilio == "silent" {
				hole, _ := blackHole(e, 3) // not even 100 Trying
				e.edges.setPlan(twilioTarget("ashburn", hole))
			}
			gw := newPhone(e, 7, "answer", nil)
			e.setFallback(fallbackTarget(gw.addr, 1, 1))
			ctx := testCtx(t)
			alice := newPeer(e, "alice", 5)
			media := newRTP(e, 5, false)

			// alice's one allowed call, through Twilio while it is up.
			first, err := e.dialOut(ctx, alice, "15550001111", offer(media.addr, "sendrecv"), nil)
			if err != nil {
				t.Fatalf("first call: %v", err)
			}
			e.edges.down.Store(!tt.up)
			if _, err := e.dialOut(ctx, alice, "15550002222", offer(media.addr, "sendrecv"), nil); statusCode(err) != 503 {
				t.Fatalf("second call: %v, want 503 at the call limit", err)
			}
			emergency, err := e.dialOut(ctx, alice, "911", offer(media.addr, "sendrecv"), nil)
			if err != nil {
				t.Fatalf("emergency call at the call limit: %v", err)
			}
			var st CallStatus
			for _, c := range e.b.Calls() {
				if c.To == "911" {
					st = c
				}
			}
			wantRoute := "twilio"
			if tt.viaFallback {
				wantRoute = "fallback"
			}
			if !st.Emergency || st.Route != wantRoute || st.State != "answered" {
				t.Errorf("emergency call status = %+v, want route %s", st, wantRoute)
			}
			gotFallback := false
			for _, inv := range gw.requests(sip.INVITE) {
				gotFallback = gotFallback || inv.Recipient.User == "911"
			}
			if gotFallback != tt.viaFallback {
				t.Errorf("the fallback target got the emergency call: %v, want %v", gotFallback, tt.viaFallback)
			}
			for _, sess := range []interface{ Bye(context.Context) error }{emergency, first} {
				if err := sess.Bye(ctx); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestSurvivalOnlyForAuthenticatedPhones plays the stranger while every
// edge is down: an INVITE to an extension or to a number the fallback
// target would take, without credentials (from anywhere, Twilio's address
// included), gets 407 and rings nobody; with a wrong password, 403. alice,
// authenticated, reaches both.
func TestSurvivalOnlyForAuthenticatedPhones(t *testing.T) {
	e, tw := survivalEnv(t, false, nil)
	bob := newPhone(e, 3, "answer", nil)
	e.binds.set("bob", e.bindingFor("bob", bob.peer))
	gw := newPhone(e, 7, "answer", nil)
	e.setFallback(fallbackTarget(gw.addr, 1, 1))
	ctx := testCtx(t)
	stranger := newPeer(e, "stranger", 9)
	for _, p := range []*peer{stranger, tw.peer} { // tw: from Twilio's signalling range
		for _, dialled := range []string{"201", "bob", "15551234567", "201~ashburn"} {
			if p == stranger && strings.Contains(dialled, "~") {
				continue // a Contact form from outside Twilio's ranges: silence over UDP
			}
			ruri := sip.Uri{Scheme: "sip", User: dialled, Host: e.ip.String(), Port: int(e.udp().Port())}
			res, err := p.cl.Do(ctx, p.newInvite(ruri, "mallory", e.udp(), offer(p.addr, "sendrecv")))
			if err != nil {
				t.Fatalf("%s → %s: %v", p.name, dialled, err)
			}
			want := 407
			if strings.Contains(dialled, "~") {
				want = 404 // a Contact form: Twilio's way in, and 201 has no Twilio identity
			}
			if res.StatusCode != want {
				t.Errorf("%s → %s: %d %s, want %d", p.name, dialled, res.StatusCode, res.Reason, want)
			}
		}
	}
	// A wrong password.
	ruri := sip.Uri{Scheme: "sip", User: "201", Host: e.ip.String(), Port: int(e.udp().Port())}
	sess, err := stranger.dialogUA("alice").WriteInvite(ctx, stranger.newInvite(ruri, "alice", e.udp(), offer(stranger.addr, "sendrecv")))
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.WaitAnswer(ctx, sipgoAnswer("alice", "guessed")); statusCode(err) != 403 {
		t.Errorf("wrong password: %v, want 403", err)
	}
	if n, m := len(bob.requests(sip.INVITE)), len(gw.requests(sip.INVITE)); n+m != 0 {
		t.Fatalf("strangers rang bob %d times and the fallback target %d times", n, m)
	}

	alice := newPeer(e, "alice", 5)
	media := newRTP(e, 5, false)
	for _, dialled := range []string{"201", "15551234567"} {
		sess, err := e.dialOut(ctx, alice, dialled, offer(media.addr, "sendrecv"), nil)
		if err != nil {
			t.Fatalf("alice → %s: %v", dialled, err)
		}
		if err := sess.Bye(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if len(bob.requests(sip.INVITE)) != 1 || len(gw.requests(sip.INVITE)) != 1 {
		t.Errorf("alice's calls: bob rang %d times, the target %d", len(bob.requests(sip.INVITE)), len(gw.requests(sip.INVITE)))
	}
}

// setFallback makes ts the fallback targets, as a reload would.
func (e *env) setFallback(ts ...Target) {
	e.t.Helper()
	commit, err := e.b.Prepare(func() Settings {
		s := e.b.Settings()
		s.FallbackTargets = ts
		return s
	}(), e.b.state.Load().phones, e.b.state.Load().twilio)
	if err != nil {
		e.t.Fatal(err)
	}
	commit()
}

// TestBrowserCallsLocalPhoneInSurvival: a browser softphone (WebRTC) calls
// a desk phone's extension while Twilio is down: the browser's leg is
// bridged on side A, the desk phone rings on side B at edgewise's local
// address, and the phone's echo reaches the browser over SRTP.
func TestBrowserCallsLocalPhoneInSurvival(t *testing.T) {
	e := newEnv(t, func(c *envConfig) {
		c.browsers = true
		c.mediaPublic = netip.MustParseAddr("192.0.2.1")
		c.tune = func(s *Settings) { s.Extensions = map[string]string{"201": "bob"} }
	})
	e.edges.down.Store(true)
	bob := newPhone(e, 3, "answer", nil)
	e.binds.set("bob", e.bindingFor("bob", bob.peer))
	signalling := newPeer(e, "browser-signalling", 4)
	br := newTestBrowser(t)
	ctx := testCtx(t)

	sess, err := e.dialOutTCP(ctx, signalling, "201", br.offer(t))
	if err != nil {
		t.Fatalf("call failed: %v", err)
	}
	inv := bob.waitRequest(sip.INVITE, 1)
	if plain := string(inv.Body()); !strings.Contains(plain, "RTP/AVP") || strings.Contains(plain, "fingerprint") {
		t.Errorf("the desk phone's offer is not plain RTP/AVP:\n%s", plain)
	}
	if at, _ := mediaOf(t, inv.Body()); at.Addr() != e.ip {
		t.Errorf("the desk phone is told to send media to %s, want edgewise's local address %s", at, e.ip)
	}
	if err := br.pc.SetRemoteDescription(pion.SessionDescription{Type: pion.SDPTypeAnswer, SDP: string(sess.InviteResponse.Body())}); err != nil {
		t.Fatal(err)
	}
	br.speak(ctx, 25)
	if br.got.Load() < 25 {
		t.Fatalf("the browser heard %d packets of the desk phone's echo", br.got.Load())
	}
	if st := e.onlyCall(); st.Route != "local" || st.Browser == nil {
		t.Errorf("status = %+v", st)
	}
	if err := sess.Bye(ctx); err != nil {
		t.Fatal(err)
	}
	bob.waitRequest(sip.BYE, 1)
}
