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
