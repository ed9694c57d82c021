package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// clusterConfig is daemonConfig for node name of a cluster on etcd.
func clusterConfig(endpoints []string, name string) func(ip, dir string) string {
	return func(ip, dir string) string {
		cfg := daemonConfig(ip, dir, "")
		old := fmt.Sprintf("store:\n  path: %s/edgewise.db\n", dir)
		if !strings.Contains(cfg, old) {
			panic("daemonConfig changed its store section")
		}
		list, _ := json.Marshal(endpoints) // a JSON array is a YAML flow sequence
		return strings.Replace(cfg, old, fmt.Sprintf("%s  backend: etcd\n  etcd:\n    endpoints: %s\ncluster:\n  node_name: %s\n",
			old, list, name), 1)
	}
}

// contactNode returns the node each of user's contacts registered through,
// as d's /v1/status shows them.
func contactNodes(t *testing.T, d *daemon, user string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, u := range d.status(t).Users {
		if u.User == user {
			for _, c := range u.Contacts {
				out[c.URI] = c.Node
			}
		}
	}
	return out
}

// TestClusterSharesBindings: two edgewise nodes on one etcd cluster (three
// real members). SIPp registers alice at node a; node b shows the binding,
// registered through a, within a second; SIPp's unregister at a empties
// b's view too; a node started afterwards loads what is there.
func TestClusterSharesBindings(t *testing.T) {
	e := kit.StartEtcd(t, kit.NewNet(t), 3)
	a := startDaemon(t, clusterConfig(e.Endpoints(), "node-a"))
	b := startDaemon(t, clusterConfig(e.Endpoints(), "node-b"))
	if st := b.status(t).Store; st == nil || st.Backend != "etcd" || st.Node != "node-b" || st.DegradedSince != nil {
		t.Fatalf("node b store status %+v", st)
	}

	phone := nextIP(t)
	if code, out := sippRun(t, "register.xml", phone, a.ip+":5060", [][]string{authRow("alice", "alice-secret", 3600)}, 1, "-p", "5060"); code != 0 {
		t.Fatalf("register at node a: sipp exited %d:\n%s", code, out)
	}
	kit.WaitFor(t, time.Second, "node b to show alice's binding through node a", func() bool {
		for uri, node := range contactNodes(t, b, "alice") {
			if strings.Contains(uri, phone) && node == "node-a" {
				return true
			}
		}
		return false
	})

	c := startDaemon(t, clusterConfig(e.Endpoints(), "node-c"))
	if got := contactNodes(t, c, "alice"); len(got) != 1 {
		t.Fatalf("node c started with alice's contacts %v", got)
	}

	// One etcd member down changes nothing, once the other two have a
	// leader: when the killed member led, writes wait for the election
	// (about a second), and node b rightly serves from memory meanwhile.
	e.Kill(0)
	e.WaitLeader()
	bobPhone := nextIP(t)
	if code, out := sippRun(t, "register.xml", bobPhone, b.ip+":5060", [][]string{authRow("bob", "bob-secret", 3600)}, 1, "-p", "5060"); code != 0 {
		t.Fatalf("register bob at node b with an etcd member down: sipp exited %d:\n%s", code, out)
	}
	kit.WaitFor(t, time.Second, "node a to show bob's binding through node b", func() bool {
		return len(contactNodes(t, a, "bob")) == 1
	})
	if st := b.status(t).Store; st.DegradedSince != nil {
		t.Errorf("node b degraded with two of three etcd members up: %+v", st)
	}

	if code, out := sippRun(t, "register.xml", phone, a.ip+":5060", [][]string{authRow("alice", "alice-secret", 0)}, 1, "-p", "5060"); code != 0 {
		t.Fatalf("unregister at node a: sipp exited %d:\n%s", code, out)
	}
	kit.WaitFor(t, time.Second, "node b to see alice unregistered", func() bool { return len(contactNodes(t, b, "alice")) == 0 })
}

// simContactHosts lists the hosts of user's Contacts registered at
// edgesim (Twilio): one per edgewise node that registered the user.
func (s *sim) contactHosts(t *testing.T, user string) map[string]bool {
	t.Helper()
	resp, err := http.Get(s.control + "/v1/bindings?user=" + user)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Bindings []struct {
			Contact string `json:"contact"`
		} `json:"bindings"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, b := range body.Bindings {
		host := b.Contact
		if i := strings.Index(host, "@"); i >= 0 {
			host = host[i+1:]
		}
		host, _, _ = strings.Cut(host, ":")
		host, _, _ = strings.Cut(host, ";")
		out[host] = true
	}
	return out
}

// TestClusterOneOwnerUpstream: alice registers at node a of two; only node
// a registers her at Twilio (edgesim). Node a is killed: node b takes her
// over and registers her upstream within the lease TTL + 2 s.
func TestClusterOneOwnerUpstream(t *testing.T) {
	s := startSim(t)
	e := kit.StartEtcd(t, kit.NewNet(t), 3)
	a := startDaemon(t, clusterUpstreamConfig(s, e, "node-a"))
	b := startDaemon(t, clusterUpstreamConfig(s, e, "node-b"))

	phone := nextIP(t)
	if code, out := sippRun(t, "register.xml", phone, a.ip+":5060", [][]string{authRow("alice", "alice-secret", 3600)}, 1, "-p", "5060"); code != 0 {
		t.Fatalf("register at node a: sipp exited %d:\n%s", code, out)
	}
	kit.WaitFor(t, 5*time.Second, "alice registered at Twilio by node a", func() bool { return s.contactHosts(t, "alice")[a.ip] })
	kit.WaitFor(t, time.Second, "node b to know alice", func() bool { return len(contactNodes(t, b, "alice")) == 1 })
	if hosts := s.contactHosts(t, "alice"); hosts[b.ip] || len(hosts) != 1 {
		t.Fatalf("Twilio holds alice's Contacts at %v, want node a's only", hosts)
	}
	if st := a.status(t).Store; st.Owned != 1 || len(st.Nodes) != 2 {
		t.Errorf("node a store status %+v", st)
	}

	killed := time.Now()
	a.proc.signal(syscall.SIGKILL)
	kit.WaitFor(t, 2*time.Second+2*time.Second+2*time.Second, "node b to register alice at Twilio", func() bool {
		return s.contactHosts(t, "alice")[b.ip]
	})
	t.Logf("node b registered alice upstream %s after node a died (lease_ttl 2s)", time.Since(killed).Round(10*time.Millisecond))

	// A new call to alice works through the survivor: node a is gone, so
	// node b rings her phone directly.
	answering := sippUAS(t, "uas_answer_rtp.xml", phone)
	placed := s.placeCall(t, "alice")
	kit.WaitFor(t, 15*time.Second, "the call to alice answered through node b", func() bool {
		c := s.call(t, placed.ID)
		return c.State == "answered" && c.Media != nil && c.Media.PacketsEchoed > 10
	})
	s.hangUp(t, placed.ID)
	waitSipp(t, answering, "alice's phone")
	noCallsLeft(t, b)
}

// clusterUpstreamConfig is upstreamConfig (edgesim as Twilio) for node name
// of a cluster on e, with a 2 s lease.
func clusterUpstreamConfig(s *sim, e *kit.Etcd, name string) func(ip, dir string) string {
	return func(ip, dir string) string {
		up := upstreamConfig(s, "")(ip, dir)
		old := fmt.Sprintf("store:\n  path: %s/edgewise.db\n", dir)
		list, _ := json.Marshal(e.Endpoints())
		return strings.Replace(up, old, fmt.Sprintf("%s  backend: etcd\n  etcd:\n    endpoints: %s\ncluster:\n  node_name: %s\n  lease_ttl: 2s\n",
			old, list, name), 1)
	}
}

// TestClusterForksThroughPeer: alice has a phone registered through node a
// (which owns her at Twilio) and one through node b. A call from Twilio
// reaches node a, which rings its own phone directly and the other through
// node b, signed: b rings the phone from its own socket (where the phone's
// NAT pinhole would be). b's phone answers, a's is cancelled, media flows;
// a stranger's INVITE that copies the peer header gets nowhere.
func TestClusterForksThroughPeer(t *testing.T) {
	s := startSim(t)
	e := kit.StartEtcd(t, kit.NewNet(t), 1)
	a := startDaemon(t, clusterUpstreamConfig(s, e, "node-a"))
	ringIP := nextIP(t)
	if code, out := sippRun(t, "register.xml", ringIP, a.ip+":5060", [][]string{authRow("alice", "alice-secret", 3600)}, 1, "-p", "5060"); code != 0 {
		t.Fatalf("register at node a: sipp exited %d:\n%s", code, out)
	}
	kit.WaitFor(t, 5*time.Second, "alice registered at Twilio by node a", func() bool { return s.contactHosts(t, "alice")[a.ip] })
	b := startDaemon(t, clusterUpstreamConfig(s, e, "node-b"))
	answerIP := nextIP(t)
	if code, out := sippRun(t, "register.xml", answerIP, b.ip+":5060", [][]string{authRow("alice", "alice-secret", 3600)}, 1, "-p", "5060"); code != 0 {
		t.Fatalf("register at node b: sipp exited %d:\n%s", code, out)
	}
	kit.WaitFor(t, 2*time.Second, "node a to see alice's phone on node b", func() bool {
		for uri, node := range contactNodes(t, a, "alice") {
			if strings.Contains(uri, answerIP) && node == "node-b" {
				return true
			}
		}
		return false
	})
	ringing := sippUAS(t, "uas_ring_cancel.xml", ringIP)
	answering := sippUAS(t, "uas_answer_rtp.xml", answerIP)

	placed := s.placeCall(t, "alice")
	kit.WaitFor(t, 15*time.Second, "the call answered through node b", func() bool { return s.call(t, placed.ID).State == "answered" })
	waitSipp(t, ringing, "node a's own phone cancelled")
	kit.WaitFor(t, 5*time.Second, "media through both nodes", func() bool {
		m := s.call(t, placed.ID).Media
		return m != nil && m.PacketsReceived > 10 && m.PacketsEchoed > 10
	})
	var viaPeer bool
	for _, c := range b.calls() {
		viaPeer = viaPeer || c.Route == "peer"
	}
	if !viaPeer {
		t.Fatalf("node b's calls %+v, want one through the cluster (route peer)", b.calls())
	}
	s.hangUp(t, placed.ID)
	waitSipp(t, answering, "the phone on node b")
	noCallsLeft(t, a)
	noCallsLeft(t, b)

	// Calls out work from any node, through its own relay.
	res := sippAsync(t, "call_rtp.xml", nextIP(t), b.ip+":5060", dialRow("alice", "15550001111"))
	checkRTPFlow(t, b)
	waitSipp(t, res, "a call out through node b")
	noCallsLeft(t, b)

	// A stranger copies the header: refused before any phone rings.
	stranger := nextIP(t)
	forged := "INVITE sip:alice@" + b.ip + ":5060 SIP/2.0\r\n" +
		"Via: SIP/2.0/TCP " + stranger + ":5099;branch=z9hG4bKforged1\r\n" +
		"Max-Forwards: 70\r\nFrom: <sip:mallory@" + stranger + ">;tag=m1\r\nTo: <sip:alice@" + b.ip + ">\r\n" +
		"Call-ID: forged-peer\r\nCSeq: 1 INVITE\r\nContact: <sip:mallory@" + stranger + ":5099;transport=tcp>\r\n" +
		"X-Edgewise-Peer: node=node-a;ts=" + fmt.Sprint(time.Now().Unix()) + ";sig=00\r\nContent-Length: 0\r\n\r\n"
	if res := clusterRawTCP(t, stranger, b.ip+":5060", forged); !strings.HasPrefix(res, "SIP/2.0 403") {
		t.Fatalf("forged peer INVITE answered %q, want 403", res)
	}
}

// clusterRawTCP sends msg from ip over TCP to addr and returns the first
// response line.
func clusterRawTCP(t *testing.T, ip, addr, msg string) string {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 3 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	return strings.TrimSpace(line)
}
