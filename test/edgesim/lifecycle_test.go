package edgesim

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/miekg/dns"
	"go.uber.org/goleak"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// TestRunStopsEverything exercises every part, stops the simulator while a
// slow-mode request is waiting, and checks that Run returns promptly and
// leaves no goroutine behind. It is not parallel: it counts goroutines, and
// parallel tests wait until sequential ones are done.
func TestRunStopsEverything(t *testing.T) {
	n := kit.NewNet(t)
	baseline := goleak.IgnoreCurrent()

	sim, err := New(testConfig(n), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx) }()
	<-sim.Ready()

	ua, err := sipgo.NewUA(sipgo.WithUserAgentHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"), sipgo.WithClientConnectionAddr("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	c := &sipClient{client}
	addr, _ := sim.SIPAddr(n.Addr(1))
	for _, tr := range transports {
		expectStatus(t, c.register(t, reg{edge: "ashburn", addr: addr, transport: tr, user: "alice", pass: alicePass, contact: "sip:alice@127.0.0.1:5000", expires: 600}), 200)
	}
	if err := sim.SetIPMode(n.Addr(1), ModeSetting{Mode: ModeRefuse}); err != nil {
		t.Fatal(err)
	}
	if err := sim.SetIPMode(n.Addr(1), ModeSetting{Mode: ModeInherit}); err != nil {
		t.Fatal(err)
	}
	for _, netw := range []string{"udp", "tcp"} {
		dc := &dns.Client{Net: netw, Timeout: 2 * time.Second}
		m := new(dns.Msg)
		m.SetQuestion("demo.sip.ashburn.twilio.com.", dns.TypeA)
		if _, _, err := dc.Exchange(m, sim.DNSAddr()); err != nil {
			t.Fatalf("dns over %s: %v", netw, err)
		}
	}
	hc := &http.Client{}
	res, err := hc.Get("http://" + sim.ControlAddr() + "/v1/edges")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	hc.CloseIdleConnections()

	// A request parked in a long slow-mode wait must not hold up shutdown.
	slowIP := n.Addr(2)
	if err := sim.SetIPMode(slowIP, ModeSetting{Mode: ModeSlow, Delay: time.Minute}); err != nil {
		t.Fatal(err)
	}
	slowAddr, _ := sim.SIPAddr(slowIP)
	reqCtx, reqCancel := context.WithCancel(context.Background())
	reqDone := make(chan struct{})
	go func() {
		defer close(reqDone)
		_, _ = c.Do(reqCtx, newRequest("OPTIONS", "ashburn", slowAddr, "tcp"))
	}()
	kit.WaitFor(t, 5*time.Second, "the slow OPTIONS to arrive", func() bool { return optionsCount(sim, slowIP) > 0 })

	stopAt := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	if took := time.Since(stopAt); took > 5*time.Second {
		t.Errorf("Run took %s to stop", took)
	}
	reqCancel()
	<-reqDone
	_ = ua.Close()
	goleak.VerifyNone(t, baseline)
}

// TestStopHangsUpCalls stops the simulator with an answered received call,
// a ringing received call and a ringing placed call: each is hung up the
// way it should be (BYE, 480, CANCEL), Run returns promptly, and no
// goroutine is left once the test's peers are closed. Not parallel: it
// counts goroutines.
func TestStopHangsUpCalls(t *testing.T) {
	n := kit.NewNet(t)
	baseline := goleak.IgnoreCurrent()
	t.Run("calls", func(t *testing.T) {
		sim, err := New(testConfig(n), testLogger())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan error, 1)
		go func() { done <- sim.Run(ctx) }()
		<-sim.Ready()
		callCtx, callCancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer callCancel()

		gw := newTestGateway(t, n.Addr(200), "udp")
		addr, _ := sim.SIPAddr(n.Addr(1))
		oc, err := gw.invite(callCtx, t, inviteOpts{user: "alice", pass: alicePass, dialled: "+15551230009", addr: addr})
		if err != nil {
			t.Fatal(err)
		}
		oc.rtp.echo(t, oc.answer.addr, 2)

		ringing := make(chan error, 1)
		go func() {
			_, err := gw.invite(callCtx, t, inviteOpts{user: "alice", pass: alicePass, dialled: "noanswer", addr: addr})
			ringing <- err
		}()

		c := newSIPClient(t)
		ph := newTestPhone(t, "ph", n.Addr(201), 0)
		registerPhone(t, sim, c, ph, "bob", bobPass, "umatilla", n.Addr(12))
		placed, err := sim.PlaceCall(callCtx, CallRequest{To: "bob"})
		if err != nil {
			t.Fatal(err)
		}
		recv(t, ph.invites, "INVITE at the phone")
		waitCall(t, sim, placed, "placed call ringing", inState(CallRinging))
		kit.WaitFor(t, 5*time.Second, "the received call ringing", func() bool {
			for _, st := range sim.Calls() {
				if st.To == "noanswer" && st.State == CallRinging {
					return true
				}
			}
			return false
		})

		stopAt := time.Now()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Run did not return")
		}
		if took := time.Since(stopAt); took > 3*time.Second {
			t.Errorf("Run took %s to stop", took)
		}
		recv(t, gw.byes, "BYE for the answered call")
		recv(t, ph.cancelled, "CANCEL for the placed call")
		var dr *sipgo.ErrDialogResponse
		if err := recv(t, ringing, "the ringing call's answer"); !errors.As(err, &dr) || dr.Res.StatusCode != sip.StatusTemporarilyUnavailable {
			t.Errorf("ringing received call got %v, want 480", err)
		}
		for _, st := range sim.Calls() {
			if !st.IsOver() || st.EndedBy != endedByEdgesim {
				t.Errorf("after stop: %+v", st)
			}
		}
		if _, err := sim.PlaceCall(context.Background(), CallRequest{To: "bob"}); !errors.Is(err, ErrNotRunning) {
			t.Errorf("PlaceCall after stop: %v", err)
		}
	})
	goleak.VerifyNone(t, baseline)
}
