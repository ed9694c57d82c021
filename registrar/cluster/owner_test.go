package cluster

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// owning is a node with its Owners running, recording what the upstream
// manager would hear.
type owning struct {
	*node
	o    *Owners
	mu   sync.Mutex
	live map[string]int
	stop func()
}

func startOwning(t *testing.T, endpoints []string, name string) *owning {
	t.Helper()
	return startOwningAt(t, endpoints, name, "127.0.0.1:5060")
}

func startOwningAt(t *testing.T, endpoints []string, name, advertise string) *owning {
	t.Helper()
	n := startNodeAt(t, endpoints, name, advertise)
	w := &owning{node: n, o: NewOwners(n.st, n.table, OwnerSettings{LeaseTTL: 2 * time.Second}), live: map[string]int{}}
	w.o.Subscribe(func(user string, live int) {
		w.mu.Lock()
		w.live[user] = live
		w.mu.Unlock()
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.o.Run(ctx) }()
	w.stop = sync.OnceFunc(func() { cancel(); <-done })
	t.Cleanup(w.stop) // before the node's own cleanup, which runs later
	return w
}

// upstream is the live count the node's upstream manager was last told.
func (w *owning) upstream(user string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.live[user]
}

// TestOwnership: each user is registered upstream by exactly one node, the
// one its phone registered through; when that node dies the other takes
// the user within the lease TTL + 2 s; a node that stops cleanly hands its
// users over at once.
func TestOwnership(t *testing.T) {
	e := kit.StartEtcd(t, kit.NewNet(t), 1)
	a, b := startOwning(t, e.Endpoints(), "a"), startOwning(t, e.Endpoints(), "b")
	register(t, a.node, "alice", binding("sip:alice@192.0.2.10:5060", time.Hour))
	register(t, b.node, "bob", binding("sip:bob@192.0.2.20:5060", time.Hour))

	kit.WaitFor(t, 3*time.Second, "a to own alice and b bob", func() bool {
		return a.upstream("alice") == 1 && b.upstream("bob") == 1
	})
	// The other node saw the bindings (it has them in its table) but was
	// never told to register them: the owner claimed first.
	kit.WaitFor(t, time.Second, "b to see alice", func() bool { return len(b.table.Lookup("alice")) == 1 })
	if b.upstream("alice") != 0 || a.upstream("bob") != 0 || b.o.Lookup("alice") != nil {
		t.Fatalf("non-owner told to register: b alice %d, a bob %d", b.upstream("alice"), a.upstream("bob"))
	}
	if got := b.o.Nodes(); len(got) != 2 {
		t.Errorf("nodes %v", got)
	}

	// Node a loses etcd for good (its client closes): its lease lapses and
	// b takes alice.
	lost := time.Now()
	a.st.cli.Close()
	kit.WaitFor(t, 2*time.Second+2*time.Second+time.Second, "b to take alice", func() bool { return b.upstream("alice") == 1 })
	t.Logf("takeover after %s (lease TTL 2 s)", time.Since(lost).Round(10*time.Millisecond))
	if b.o.Owned() != 2 {
		t.Errorf("b owns %d users, want 2", b.o.Owned())
	}

	// A third node that stops cleanly hands over at once.
	c := startOwning(t, e.Endpoints(), "c")
	register(t, c.node, "carol", binding("sip:carol@192.0.2.30:5060", time.Hour))
	kit.WaitFor(t, 3*time.Second, "c to own carol", func() bool { return c.upstream("carol") == 1 })
	c.stop()
	kit.WaitFor(t, claimDefer+time.Second, "b to take carol from the stopped node", func() bool { return b.upstream("carol") == 1 })
}

// TestOwnershipMovesWithPhones: a node that took a user over keeps it when
// the first node comes back, until the user's phone registers through the
// first node again.
func TestOwnershipMovesWithPhones(t *testing.T) {
	e := kit.StartEtcd(t, kit.NewNet(t), 1)
	b := startOwning(t, e.Endpoints(), "b")
	c := startOwning(t, e.Endpoints(), "c")
	register(t, c.node, "alice", binding("sip:alice@192.0.2.10:5060", time.Hour))
	kit.WaitFor(t, 3*time.Second, "c to own alice", func() bool { return c.upstream("alice") == 1 })
	c.stop() // clean: its lease is revoked
	kit.WaitFor(t, 3*time.Second, "b to take alice", func() bool { return b.upstream("alice") == 1 })

	c2 := startOwning(t, e.Endpoints(), "c")
	kit.WaitFor(t, time.Second, "c back, seeing alice", func() bool { return len(c2.table.Lookup("alice")) == 1 })
	// Over a whole review period (and more) nothing moves.
	deadline := time.Now().Add(reviewEvery + time.Second)
	for time.Now().Before(deadline) {
		if c2.upstream("alice") != 0 || b.upstream("alice") != 1 {
			t.Fatalf("alice moved back without her phone moving: b %d c %d", b.upstream("alice"), c2.upstream("alice"))
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-t.Context().Done():
		}
	}
	b2 := binding("sip:alice@192.0.2.10:5060", time.Hour)
	b2.CSeq = 2
	register(t, c2.node, "alice", b2)
	kit.WaitFor(t, reviewEvery+3*time.Second, "alice back on c after her phone re-registered there", func() bool {
		return c2.upstream("alice") == 1 && b.upstream("alice") == 0
	})
}

// TestPeerSignatures: a node's fork to another verifies there; a forged,
// altered, replayed-late or misdirected one does not.
func TestPeerSignatures(t *testing.T) {
	e := kit.StartEtcd(t, kit.NewNet(t), 1)
	a := startOwningAt(t, e.Endpoints(), "a", "127.0.0.1:5060")
	b := startOwningAt(t, e.Endpoints(), "b", "127.0.0.2:5060")
	kit.WaitFor(t, 3*time.Second, "each node to know the other", func() bool {
		_, ab := a.o.PeerAddr("b")
		_, ba := b.o.PeerAddr("a")
		return ab && ba
	})
	if addr, _ := a.o.PeerAddr("b"); addr.String() != "127.0.0.2:5060" {
		t.Fatalf("b's address as a sees it: %s", addr)
	}
	if _, ok := a.o.PeerAddr("a"); ok {
		t.Error("a node is its own peer")
	}
	sig := a.o.Sign("call-1", "1", "alice")
	aIP := netip.MustParseAddr("127.0.0.1")
	if node, err := b.o.Verify(sig, aIP, "call-1", "1", "alice"); err != nil || node != "a" {
		t.Fatalf("a's fork at b: %q %v", node, err)
	}
	for _, tc := range []struct {
		name   string
		value  string
		src    string
		fields []string
	}{
		{"altered", sig, "127.0.0.1", []string{"call-1", "1", "bob"}},
		{"from elsewhere", sig, "192.0.2.66", []string{"call-1", "1", "alice"}},
		{"unknown node", strings.Replace(sig, "node=a", "node=z", 1), "127.0.0.1", []string{"call-1", "1", "alice"}},
		{"stale", "node=a;ts=1000;sig=00", "127.0.0.1", []string{"call-1", "1", "alice"}},
		{"garbage", "hello", "127.0.0.1", nil},
	} {
		if node, err := b.o.Verify(tc.value, netip.MustParseAddr(tc.src), tc.fields...); err == nil {
			t.Errorf("%s: verified as %q", tc.name, node)
		}
	}
}

// TestOwnershipSurvivesEtcdOutage: with etcd gone for longer than the
// lease, the owner keeps its users registered upstream (it is never told
// to drop them), and claims them again once etcd is back.
func TestOwnershipSurvivesEtcdOutage(t *testing.T) {
	e := kit.StartEtcd(t, kit.NewNet(t), 1)
	a := startOwning(t, e.Endpoints(), "a")
	register(t, a.node, "alice", binding("sip:alice@192.0.2.10:5060", time.Hour))
	kit.WaitFor(t, 3*time.Second, "a to own alice", func() bool { return a.upstream("alice") == 1 })

	e.Kill(0)
	deadline := time.Now().Add(2*time.Second + 2*time.Second) // past the lease
	for time.Now().Before(deadline) {
		if a.upstream("alice") != 1 {
			t.Fatalf("alice dropped upstream while etcd was away: %d", a.upstream("alice"))
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-t.Context().Done():
		}
	}
	e.Restart(0)
	kit.WaitFor(t, 10*time.Second, "a to hold alice's owner key again", func() bool {
		res, err := a.st.cli.Get(t.Context(), "/test/owners/alice")
		return err == nil && len(res.Kvs) == 1 && string(res.Kvs[0].Value) == "a"
	})
	if a.upstream("alice") != 1 {
		t.Fatalf("alice upstream %d after etcd came back", a.upstream("alice"))
	}
}
