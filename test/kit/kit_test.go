package kit

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestNewNetIsExclusive(t *testing.T) {
	a, b := NewNet(t), NewNet(t)
	if a == b {
		t.Fatalf("two reservations got the same net %s", a)
	}
	if got := a.Addr(7); got != a.IP(7).String() || !a.Prefix().Contains(a.IP(254)) {
		t.Errorf("net %s: addr %s", a, got)
	}
	// Another holder (another open file description, as another process
	// would have) cannot take a reserved net.
	f, err := os.Open(filepath.Join(os.TempDir(), "edgewise-test-nets", fmt.Sprintf("127.%d.%d", a.a, a.b)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
		t.Errorf("net %s could be reserved twice", a)
	}
}

func TestNewNetReleasedAtCleanup(t *testing.T) {
	var held Net
	t.Run("holder", func(t *testing.T) { held = NewNet(t) })
	f, err := os.Open(filepath.Join(os.TempDir(), "edgewise-test-nets", fmt.Sprintf("127.%d.%d", held.a, held.b)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Errorf("net %s still held after its test ended: %v", held, err)
	}
}

func TestWaitFor(t *testing.T) {
	n := 0
	WaitFor(t, time.Second, "the third look", func() bool { n++; return n >= 3 })
	if n != 3 {
		t.Errorf("cond called %d times", n)
	}
}

func TestStartEtcd(t *testing.T) {
	e := StartEtcd(t, NewNet(t), 3)
	if len(e.Endpoints()) != 3 {
		t.Fatalf("endpoints %v", e.Endpoints())
	}
	e.Kill(0)
	if e.members[0].healthy() {
		t.Fatal("member 0 healthy after Kill")
	}
	// The others may need a new leader first (/health wants one).
	e.WaitLeader()
	if !e.members[1].healthy() || !e.members[2].healthy() {
		t.Fatal("WaitLeader returned with members 1 and 2 not healthy")
	}
}
