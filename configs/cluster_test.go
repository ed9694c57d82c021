package configs

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestClusterConfig(t *testing.T) {
	const head = "twilio:\n  domain: example\nstore:\n  path: /x\n"
	problems := []struct {
		name, yaml string
		want       []string
	}{
		{"unknown backend", head + "  backend: redis\n", []string{
			`c.yaml:5: store.backend: "redis" is not one of bbolt, etcd (hint: bbolt for one node, etcd for a cluster)`,
		}},
		{"etcd without endpoints or node", head + "  backend: etcd\n", []string{
			`c.yaml:5: store.etcd.endpoints: required with store.backend: etcd (hint: e.g. ["https://10.0.0.5:2379", "https://10.0.0.6:2379", "https://10.0.0.7:2379"])`,
			`c.yaml:5: cluster.node_name: required with store.backend: etcd (hint: node_name: ${EDGEWISE_NODE}, a name unique in the cluster)`,
		}},
		{"etcd fields", head + "  backend: etcd\n  etcd:\n    endpoints: [10.0.0.5:2379, \"https://10.0.0.6:2379/v3\"]\n    prefix: edgewise\n" +
			"    username: edgewise\n    cert_file: /nonexistent.pem\n    request_timeout: 30s\ncluster:\n  node_name: ${EDGEWISE_TEST_NODE_UNSET}\n  lease_ttl: 1500ms\n", []string{
			`c.yaml:6: store.etcd.password: required with username (hint: password: ${ETCD_PASSWORD} or password_file)`,
			`c.yaml:7: store.etcd.endpoints[0]: "10.0.0.5:2379" is not http(s)://host:port (hint: a client URL, e.g. "https://10.0.0.5:2379")`,
			`c.yaml:7: store.etcd.endpoints[1]: "https://10.0.0.6:2379/v3" is not http(s)://host:port (hint: a client URL, e.g. "https://10.0.0.5:2379")`,
			`c.yaml:8: store.etcd.prefix: "edgewise" must start and end with / (hint: e.g. "/edgewise/")`,
			`c.yaml:10: store.etcd.cert_file: a client certificate needs its key (hint: give both cert_file and key_file, or neither)`,
			`c.yaml:11: store.etcd.request_timeout: 30s is outside 50ms..10s (hint: short: a REGISTER waits at most this long for etcd before it is answered from memory)`,
			`c.yaml:13: cluster.node_name: environment variable EDGEWISE_TEST_NODE_UNSET is not set (hint: export it or use node_name_file)`,
			`c.yaml:14: cluster.lease_ttl: 1.5s is not whole seconds in 2s..1m (hint: whole seconds: a dead node's users move after about this long)`,
		}},
		{"advertise", head + "  backend: etcd\n  etcd: {endpoints: [\"http://10.0.0.5:2379\"]}\ncluster:\n  node_name: b\n  advertise: 0.0.0.0:5060\n", []string{
			`c.yaml:9: cluster.advertise: "0.0.0.0:5060" is not an IP address and port (hint: ip:port, e.g. "10.0.0.6:5060")`,
		}},
		{"advertise needed", head + "  backend: etcd\n  etcd: {endpoints: [\"http://10.0.0.5:2379\"]}\ncluster:\n  node_name: b\nsip:\n  listen: [\"tcp:10.0.0.6:5060\"]\n", []string{
			`c.yaml:5: cluster.advertise: required: sip.listen has no udp: address with a specific IP (hint: the node's SIP address on the cluster network, e.g. advertise: ${EDGEWISE_NODE_SIP} = "10.0.0.6:5060")`,
		}},
	}
	for _, tc := range problems {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(tc.yaml))
			got := problemsOf(t, err)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}

	t.Setenv("EDGEWISE_TEST_NODE", "node-b")
	cfg, err := Parse("c.yaml", []byte(head+"  backend: etcd\n  etcd:\n    endpoints: [\"http://10.0.0.5:2379\"]\ncluster:\n  node_name: ${EDGEWISE_TEST_NODE}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Etcd{Endpoints: []string{"http://10.0.0.5:2379"}, Prefix: "/edgewise/", RequestTimeout: 500 * time.Millisecond}
	if cfg.Store.Backend != "etcd" || !reflect.DeepEqual(cfg.Store.Etcd, want) || cfg.Cluster.NodeName != "node-b" || cfg.Cluster.LeaseTTL != 5*time.Second || cfg.Cluster.Advertise != "127.0.0.1:5060" {
		t.Errorf("store %+v cluster %+v", cfg.Store, cfg.Cluster)
	}
}
