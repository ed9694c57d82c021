package edgesim

import (
	"context"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/miekg/dns"
)

// TestRunStopsEverything exercises every part, stops the simulator while a
// slow-mode request is waiting, and checks that Run returns promptly and
// leaves no goroutine behind. It is not parallel: it counts goroutines, and
// parallel tests wait until sequential ones are done.
func TestRunStopsEverything(t *testing.T) {
	const n = 170
	baseline := runtime.NumGoroutine()

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
	addr, _ := sim.SIPAddr(testIP(n, 1))
	for _, tr := range transports {
		expectStatus(t, c.register(t, reg{edge: "ashburn", addr: addr, transport: tr, user: "alice", pass: alicePass, contact: "sip:alice@127.0.0.1:5000", expires: 600}), 200)
	}
	if err := sim.SetIPMode(testIP(n, 1), ModeSetting{Mode: ModeRefuse}); err != nil {
		t.Fatal(err)
	}
	if err := sim.SetIPMode(testIP(n, 1), ModeSetting{Mode: ModeInherit}); err != nil {
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
	slowIP := testIP(n, 2)
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
	eventually(t, "the slow OPTIONS to arrive", func() bool { return optionsCount(sim, slowIP) > 0 })

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

	var last int
	deadline := time.Now().Add(5 * time.Second)
	for {
		if last = runtime.NumGoroutine(); last <= baseline {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines left, %d before:\n%s", last, baseline, strings.TrimSpace(string(buf)))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
