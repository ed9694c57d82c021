package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
)

// TestTableFailedPeer: a peer that did not start, or a step that could not
// run, is a row of the table and the comparison is still printed; make
// bench goes on.
func TestTableFailedPeer(t *testing.T) {
	ok := func(n int, cpu float64) row {
		return row{calls: n, sent: [2]uint64{1000, 1000}, bridgeCPU: cpu, bridgePPS: float64(100 * n), clean: true, setupCPU: 2 * time.Millisecond}
	}
	b := bench{steps: []int{100, 200, 400}, window: 10 * time.Second, conc: 8, maxLoss: 0.5}
	for _, tc := range []struct {
		name string
		res  []series
		want []string
	}{
		{
			name: "step failed",
			res: []series{
				{name: "edgewise", rows: []row{ok(100, 0.1), ok(200, 0.2), ok(400, 0.4)}},
				{name: "rtpengine", rows: []row{ok(100, 0.05), ok(200, 0.1), {calls: 400, err: "setup failed after 12 calls: browser did not connect within 20s"}}},
			},
			want: []string{
				"| 400 | rtpengine | setup failed after 12 calls: browser did not connect within 20s |",
				"best clean: edgewise **400 calls**; rtpengine **200 calls**; ratio edgewise/rtpengine = **2.00×**",
				"CPU per call at 200 calls (largest step both clean): edgewise 1000 µs/call-s, rtpengine 500 µs/call-s; rtpengine/edgewise = **0.50×**",
				"CPU per call rtpengine/edgewise at each step both clean: 100: 0.50×; 200: 0.50×;\n",
			},
		},
		{
			name: "peer not started",
			res: []series{
				{name: "edgewise", rows: []row{ok(100, 0.1)}},
				{name: "rtpengine", startErr: "exec: \"/usr/bin/rtpengine\": no such file\nor directory"},
			},
			want: []string{
				"| — | rtpengine | not started: exec: \"/usr/bin/rtpengine\": no such file or directory |",
				"best clean: edgewise **100 calls**; rtpengine none\n",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := table(tc.res, b)
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("table lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestDefaultCandidate: the browser's offer names its host candidate in
// m= and c=, as Chrome's does, instead of pion's 9 and 0.0.0.0 (which
// rtpengine takes for hold).
func TestDefaultCandidate(t *testing.T) {
	offer := "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n" +
		"m=audio 9 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtpmap:0 PCMU/8000\r\n" +
		"a=candidate:1 1 udp 2130706431 127.0.0.1 40123 typ host\r\na=sendrecv\r\n"
	out, err := defaultCandidate(offer)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"m=audio 40123 UDP/TLS/RTP/SAVPF 0\r\n", "c=IN IP4 127.0.0.1\r\n", "a=candidate:1 1 udp 2130706431 127.0.0.1 40123 typ host\r\n"} {
		if !strings.Contains(out, w) {
			t.Errorf("offer lacks %q:\n%s", w, out)
		}
	}
}

func TestParseSRTP(t *testing.T) {
	got, err := parseSRTP("aead_aes_128_gcm, SRTP_AES128_CM_HMAC_SHA1_80")
	if err != nil || len(got) != 2 || got[0] != dtls.SRTP_AEAD_AES_128_GCM || got[1] != dtls.SRTP_AES128_CM_HMAC_SHA1_80 {
		t.Fatalf("got %v, %v", got, err)
	}
	if _, err := parseSRTP("NULL_HMAC_SHA1_80"); err == nil {
		t.Fatal("an unknown profile was accepted")
	}
}

// TestMain lets the test binary be the bridge process too: the edgewise
// target starts os.Executable() with -serve.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "-serve" {
		if err := serve(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestBridgesCarryCalls runs two calls through each bridge for a second:
// the pion browsers connect (ICE + DTLS) and media arrives both ways
// without loss, through edgewise and through rtpengine when it is
// installed, with the same driver the benchmark uses.
func TestBridgesCarryCalls(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	targets := []target{&edgewiseTarget{}}
	if _, err := os.Stat("/usr/bin/rtpengine"); err == nil {
		targets = append(targets, &rtpengineTarget{bin: "/usr/bin/rtpengine"})
	} else {
		t.Log("rtpengine not installed: edgewise only")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b := bench{steps: []int{2}, window: time.Second, conc: 2, maxLoss: 0.5}
	for _, s := range b.run(ctx, targets) {
		if s.startErr != "" {
			t.Errorf("%s did not start: %s", s.name, s.startErr)
			continue
		}
		if len(s.rows) != 1 {
			t.Errorf("%s: %d rows", s.name, len(s.rows))
			continue
		}
		r := s.rows[0]
		if r.err != "" || !r.clean || r.sent[0] < 50 || r.sent[1] < 50 || r.lost != [2]uint64{} {
			t.Errorf("%s: %+v", s.name, r)
		}
		if !strings.HasPrefix(r.cipher, "SRTP_") {
			t.Errorf("%s: negotiated %q", s.name, r.cipher)
		}
	}
}
