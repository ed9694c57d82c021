package media

import (
	"bytes"
	"runtime"
	"testing"
	"time"
)

// TestIdleWorkersParkInNetpoller: an idle worker waits for its epoll set
// as a goroutine waits for a socket ("IO wait"), not in a blocking
// epoll_wait ("syscall"), which would hold a P and keep sysmon polling
// every 20 µs while the relay is busy (see worker.loop). A worker that
// still relays after parking shows the netpoller wakes it.
func TestIdleWorkersParkInNetpoller(t *testing.T) {
	r := startRelay(t, func(s *Settings, _ *Relay) { s.Workers = 2 })
	_, a, b := call(t, r, "park")
	relayOnce := func(seq uint16) {
		t.Helper()
		a.send(local(r.Session("park").Leg(A)), rtpPacket(t, seq, 0, 7, 0, make([]byte, 160)))
		if _, _, ok := b.tryRecv(2 * time.Second); !ok {
			t.Fatal("packet not relayed")
		}
	}
	relayOnce(1)

	var states []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		states = workerStates()
		parked := 0
		for _, st := range states {
			if st == "IO wait" {
				parked++
			}
		}
		if len(states) == 2 && parked == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker goroutines in states %q, want both in \"IO wait\"", states)
		}
		runtime.Gosched()
	}
	relayOnce(2)
}

// workerStates lists the scheduler state of every goroutine running
// worker.loop, from a dump of all stacks.
func workerStates() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if !bytes.Contains(g, []byte("media.(*worker).loop")) {
			continue
		}
		// "goroutine 7 [IO wait]:" or "goroutine 7 [syscall, 2 minutes]:"
		head, _, _ := bytes.Cut(g, []byte("\n"))
		i, j := bytes.IndexByte(head, '['), bytes.IndexAny(head, ",]")
		if i < 0 || j < i {
			continue
		}
		out = append(out, string(head[i+1:j]))
	}
	return out
}

// TestReadBatchRule: single reads for a socket seen now and then, batches
// for one ready in consecutive rounds, while a batch brings more than one,
// and for every socket while the worker is behind.
func TestReadBatchRule(t *testing.T) {
	for _, tc := range []struct {
		name  string
		e     entry
		round uint32
		busy  bool
		want  bool
	}{
		{"50 pps stream", entry{round: 10}, 40, false, false},
		{"ready again next round", entry{round: 39}, 40, false, true},
		{"last batch brought several", entry{round: 10, batch: true}, 40, false, true},
		{"worker behind", entry{round: 10}, 40, true, true},
	} {
		w := &worker{round: tc.round, busy: tc.busy}
		if got := w.readBatch(&tc.e); got != tc.want {
			t.Errorf("%s: batch %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestBurstRelayedWhole: a queue of packets on one socket (read in batches
// after the first) all come out, in order, and are counted once each.
func TestBurstRelayedWhole(t *testing.T) {
	r := startRelay(t, nil)
	s, a, b := call(t, r, "burst")
	b.conn.SetReadBuffer(4 << 20) // read only after the whole burst is sent
	const n = 200
	to := local(s.Leg(A))
	for i := range n {
		a.send(to, rtpPacket(t, uint16(i), uint32(i)*160, 9, 0, make([]byte, 160)))
	}
	for i := range n {
		got, _, ok := b.tryRecv(2 * time.Second)
		if !ok {
			t.Fatalf("packet %d of %d not relayed", i, n)
		}
		if seq := int(got[2])<<8 | int(got[3]); seq != i {
			t.Fatalf("packet %d has sequence %d", i, seq)
		}
	}
	st := s.Stats().Legs
	if st[A].RX.Packets != n || st[B].TX.Packets != n {
		t.Errorf("rx %d, tx %d, want %d", st[A].RX.Packets, st[B].TX.Packets, n)
	}
}
