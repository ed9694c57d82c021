package cluster

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/edgewise-sip/edgewise/registrar/location"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// node is one edgewise node's bindings: its table over a shared Store.
type node struct {
	name  string
	st    *Store
	table *location.Table
	stop  func()
}

func startNode(t *testing.T, endpoints []string, name string) *node {
	t.Helper()
	return startNodeAt(t, endpoints, name, "127.0.0.1:5060")
}

func startNodeAt(t *testing.T, endpoints []string, name, advertise string) *node {
	t.Helper()
	st, state, rev, err := Open(t.Context(), Settings{Endpoints: endpoints, Node: name, Advertise: advertise, Prefix: "/test/"}, kit.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	table := location.NewShared(kit.Logger(t), location.Settings{}, st, state)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = st.Run(ctx, table, rev)
	}()
	n := &node{name: name, st: st, table: table}
	n.stop = func() {
		cancel()
		<-done
		table.Close()
		st.Close()
	}
	t.Cleanup(n.stop)
	return n
}

func binding(contact string, ttl time.Duration) location.Binding {
	now := time.Now()
	return location.Binding{
		Contact: contact, Transport: "udp", Source: netip.MustParseAddrPort("192.0.2.10:5060"),
		CallID: contact, CSeq: 1, Expires: now.Add(ttl), Updated: now,
	}
}

func register(t *testing.T, n *node, user string, b location.Binding) {
	t.Helper()
	_, err := n.table.Update(user, func(cur []location.Binding) ([]location.Binding, error) {
		if i := indexOf(cur, b.Contact); i >= 0 {
			cur[i] = b
			return cur, nil
		}
		return append(cur, b), nil
	})
	if err != nil {
		t.Fatalf("%s: register %s: %v", n.name, b.Contact, err)
	}
}

func contacts(n *node, user string) map[string]string {
	out := map[string]string{}
	for _, b := range n.table.Lookup(user) {
		out[b.Contact] = b.Node
	}
	return out
}

// TestSharedBindings: a REGISTER at one node is in etcd before Update
// returns and reaches the other node's table within a second, naming the
// node it came through; a removal travels the same way; a node that starts
// later loads what is there.
func TestSharedBindings(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) }) // runs after the nodes stop
	e := kit.StartEtcd(t, kit.NewNet(t), 3)
	a, b := startNode(t, e.Endpoints(), "a"), startNode(t, e.Endpoints(), "b")

	register(t, a, "alice", binding("sip:alice@192.0.2.10:5060", time.Hour))
	cli := a.st.cli
	res, err := cli.Get(t.Context(), "/test/bindings/alice/", clientv3.WithPrefix())
	if err != nil || len(res.Kvs) != 1 {
		t.Fatalf("etcd after Update: %v %v", err, res)
	}
	kit.WaitFor(t, time.Second, "node b to see alice's binding from a", func() bool {
		return contacts(b, "alice")["sip:alice@192.0.2.10:5060"] == "a"
	})

	register(t, b, "alice", binding("sip:alice@192.0.2.11:5060", time.Hour))
	kit.WaitFor(t, time.Second, "node a to see both of alice's bindings", func() bool {
		c := contacts(a, "alice")
		return len(c) == 2 && c["sip:alice@192.0.2.11:5060"] == "b"
	})

	// The phone on a moves to b: b's REGISTER overwrites the same key.
	register(t, b, "alice", binding("sip:alice@192.0.2.10:5060", time.Hour))
	kit.WaitFor(t, time.Second, "node a to see the moved binding", func() bool {
		return contacts(a, "alice")["sip:alice@192.0.2.10:5060"] == "b"
	})

	// Unregister through a.
	if _, err := a.table.Update("alice", func(cur []location.Binding) ([]location.Binding, error) {
		return cur[:0], nil
	}); err != nil {
		t.Fatal(err)
	}
	kit.WaitFor(t, time.Second, "node b to see alice unregistered", func() bool { return len(contacts(b, "alice")) == 0 })

	register(t, a, "bob", binding("sip:bob@192.0.2.20:5060", time.Hour))
	c := startNode(t, e.Endpoints(), "c")
	if got := contacts(c, "bob"); got["sip:bob@192.0.2.20:5060"] != "a" {
		t.Fatalf("node c loaded %v", got)
	}
	if st := a.st.Stats(); st.Txns == 0 || st.Failures != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestBindingLeases: every key lapses in etcd a little after its binding
// does, under a lease shared by bindings expiring close together.
func TestBindingLeases(t *testing.T) {
	e := kit.StartEtcd(t, kit.NewNet(t), 1)
	a := startNode(t, e.Endpoints(), "a")
	register(t, a, "alice", binding("sip:alice@192.0.2.10:5060", 40*time.Second))
	register(t, a, "bob", binding("sip:bob@192.0.2.20:5060", 40*time.Second))
	res, err := a.st.cli.Get(t.Context(), "/test/bindings/", clientv3.WithPrefix())
	if err != nil || len(res.Kvs) != 2 {
		t.Fatalf("keys: %v %v", err, res)
	}
	if res.Kvs[0].Lease == 0 || res.Kvs[0].Lease != res.Kvs[1].Lease {
		t.Fatalf("leases %x %x, want one shared lease", res.Kvs[0].Lease, res.Kvs[1].Lease)
	}
	ttl, err := a.st.cli.TimeToLive(t.Context(), clientv3.LeaseID(res.Kvs[0].Lease))
	if err != nil || ttl.TTL < 40 || ttl.TTL > 40+int64((leaseBucket+leaseGrace)/time.Second) {
		t.Fatalf("lease TTL %v (%v), want 40 s to 55 s", ttl.TTL, err)
	}
}

// TestEtcdOutage: with etcd down, REGISTERs are still acknowledged (from
// memory, quickly), the node says it is degraded, and once etcd is back the
// queued change is written and reaches the other node.
func TestEtcdOutage(t *testing.T) {
	e := kit.StartEtcd(t, kit.NewNet(t), 1)
	a, b := startNode(t, e.Endpoints(), "a"), startNode(t, e.Endpoints(), "b")
	register(t, a, "alice", binding("sip:alice@192.0.2.10:5060", time.Hour))
	kit.WaitFor(t, time.Second, "b sees alice", func() bool { return len(contacts(b, "alice")) == 1 })

	e.Kill(0)
	start := time.Now()
	register(t, a, "carol", binding("sip:carol@192.0.2.30:5060", time.Hour))
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("REGISTER during the outage took %s", took)
	}
	if deg, since := a.st.Degraded(); !deg || since.IsZero() {
		t.Fatal("node a not degraded with etcd down")
	}
	if err := testutil.CollectAndCompare(Collector(a.st, nil), strings.NewReader(`
# HELP edgewise_cluster_etcd_degraded 1 while etcd is unreachable: the node serves from memory and queues its changes.
# TYPE edgewise_cluster_etcd_degraded gauge
edgewise_cluster_etcd_degraded 1
`), "edgewise_cluster_etcd_degraded"); err != nil {
		t.Error(err)
	}
	register(t, a, "dave", binding("sip:dave@192.0.2.40:5060", time.Hour)) // acknowledged at once now

	e.Restart(0)
	kit.WaitFor(t, 15*time.Second, "a's queued bindings to reach b", func() bool {
		return len(contacts(b, "carol")) == 1 && len(contacts(b, "dave")) == 1
	})
	kit.WaitFor(t, 5*time.Second, "a no longer degraded", func() bool { deg, _ := a.st.Degraded(); return !deg })
	if got := contacts(b, "alice"); len(got) != 1 {
		t.Errorf("b lost alice across the outage: %v", got)
	}
}

// TestClaimCall: of two nodes that get Twilio's forks of one call, one
// rings; another call is claimed afresh.
func TestClaimCall(t *testing.T) {
	e := kit.StartEtcd(t, kit.NewNet(t), 1)
	a, b := startNode(t, e.Endpoints(), "a"), startNode(t, e.Endpoints(), "b")
	if !b.st.ClaimCall(t.Context(), "CA1") {
		t.Fatal("first claim refused")
	}
	if a.st.ClaimCall(t.Context(), "CA1") || b.st.ClaimCall(t.Context(), "CA1") {
		t.Fatal("a second fork of CA1 was claimed")
	}
	if !a.st.ClaimCall(t.Context(), "CA2") {
		t.Fatal("another call refused")
	}
}
