package relaytest

import (
	"context"
	"net"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/media"
)

func TestBencode(t *testing.T) {
	in := map[string]any{"command": "offer", "sdp": "v=0\r\n", "n": int64(-42),
		"flags": []any{"a", "bb"}, "nested": map[string]any{"x": ""}}
	b, err := bencode(in)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(b), "d7:command5:offer5:flagsl1:a2:bbe1:ni-42e6:nestedd1:x0:e3:sdp5:v=0\r\ne") {
		t.Errorf("encoding %q", b)
	}
	out, err := decodeDict(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip: %#v", out)
	}
	for _, bad := range []string{"", "d", "i12", "5:abc", "l", "di1e1:ae", "d1:ai1ee trailing"} {
		if _, err := decodeDict([]byte(bad)); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
}

// TestLoadThroughRelay drives an in-process relay over ng with a small
// load: every packet comes back, and the calls are gone afterwards.
func TestLoadThroughRelay(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	relay, err := media.NewRelay(media.Settings{Ports: media.PortRange{Min: 23000, Max: 23199}, LocalIP: lo, BindIP: lo}, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- relay.Run(ctx) }()
	go func() { done <- ServeNG(ctx, conn, relay, nil) }()
	defer func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Error(err)
			}
		}
	}()

	r, err := Run(context.Background(), Load{NG: conn.LocalAddr().String(), Calls: 20, Warmup: 200 * time.Millisecond, Duration: time.Second, LateAfter: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if r.Streams != 40 || r.Sent != 2000 || r.Received != r.Sent || !r.Clean() {
		t.Errorf("result %+v", r)
	}
	if n := len(relay.Sessions()); n != 0 {
		t.Errorf("%d sessions left after the load", n)
	}
	if st := relay.Pool(); st.InUse != 0 {
		t.Errorf("pool %+v", st)
	}
}

func TestDirectBaseline(t *testing.T) {
	r, err := Run(context.Background(), Load{Direct: true, Calls: 5, OneWay: true, PPS: 1000, Warmup: 100 * time.Millisecond, Duration: 500 * time.Millisecond, LateAfter: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// Straight over loopback the median can round to 0 µs: latency was
	// measured when the maximum is positive and the quantiles are ordered.
	if r.Sent != 2500 || r.Received != r.Sent || r.Max <= 0 || r.P50 < 0 || r.P99 < r.P50 || r.Max < r.P99 {
		t.Errorf("result %+v", r)
	}
}

// TestRtpengine checks the driver against the real rtpengine when it is
// installed (make bench installs it).
func TestRtpengine(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	if _, err := os.Stat("/usr/bin/rtpengine"); err != nil {
		t.Skip("rtpengine not installed")
	}
	rt := &Rtpengine{NGPort: 19232, PortMin: 50000, PortMax: 50999}
	if err := rt.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer rt.Stop()
	r, err := Run(context.Background(), Load{NG: rt.NG(), Calls: 10, Warmup: 200 * time.Millisecond, Duration: time.Second, PIDs: rt.PIDs(), LateAfter: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if r.Sent != 1000 || r.Loss > 0.01 {
		t.Errorf("result %+v", r)
	}
}

// TestCleanNeedsLatency: a step that loses little but delivers late is not
// clean (the 250,000 pps at 0.17 % loss and a 122 ms p50).
func TestCleanNeedsLatency(t *testing.T) {
	queue := Result{Sent: 1000, Loss: 0.0017, P99: 180 * time.Millisecond, SentPPS: 250000, Offered: 250000}
	relay := Result{Sent: 1000, Loss: 0.0017, P99: 3 * time.Millisecond, SentPPS: 250000, Offered: 250000}
	if queue.Clean() || !relay.Clean() {
		t.Fatalf("queue clean=%v, relay clean=%v", queue.Clean(), relay.Clean())
	}
}
