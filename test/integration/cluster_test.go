package integration

import (
	"encoding/json"
	"fmt"
	"strings"
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

	if code, out := sippRun(t, "register.xml", phone, a.ip+":5060", [][]string{authRow("alice", "alice-secret", 0)}, 1, "-p", "5060"); code != 0 {
		t.Fatalf("unregister at node a: sipp exited %d:\n%s", code, out)
	}
	kit.WaitFor(t, time.Second, "node b to see alice unregistered", func() bool { return len(contactNodes(t, b, "alice")) == 0 })
}
