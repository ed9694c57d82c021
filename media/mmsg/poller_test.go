package mmsg

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPollerReadyAndWake: Wait reports a watched descriptor by its token
// once it is readable, a Wake from another goroutine unparks a waiter, and
// a removed descriptor is no longer reported.
func TestPollerReadyAndWake(t *testing.T) {
	p, err := NewPoller(8)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if err := p.Add(fds[0], 7); err != nil {
		t.Fatal(err)
	}
	tokens := func() map[int32]bool {
		t.Helper()
		got := make(chan map[int32]bool, 1)
		go func() {
			evs, err := p.Wait()
			m := map[int32]bool{}
			for _, ev := range evs {
				m[ev.Fd] = true
			}
			if err != nil {
				m[-100] = true
			}
			got <- m
		}()
		select {
		case m := <-got:
			return m
		case <-time.After(5 * time.Second):
			t.Fatal("Wait did not return")
			return nil
		}
	}

	unix.Write(fds[1], []byte{1})
	if m := tokens(); !m[7] || len(m) != 1 {
		t.Fatalf("readable pipe: tokens %v, want only 7", m)
	}
	var b [8]byte
	unix.Read(fds[0], b[:])

	if err := p.Wake(); err != nil {
		t.Fatal(err)
	}
	if m := tokens(); !m[WakeToken] || len(m) != 1 {
		t.Fatalf("after Wake: tokens %v, want only WakeToken", m)
	}
	// A removed descriptor is not reported, even while readable.
	if err := p.Remove(fds[0]); err != nil {
		t.Fatal(err)
	}
	unix.Write(fds[1], []byte{1})
	p.Wake()
	if m := tokens(); m[7] || !m[WakeToken] {
		t.Fatalf("removed pipe: tokens %v, want only WakeToken", m)
	}
}
