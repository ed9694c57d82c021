package configs

import "testing"

func TestAdvertiseFor(t *testing.T) {
	udpFirst := []Listen{{"udp", "10.0.0.5", 5060}, {"tcp", "10.0.0.5", 5060}, {"tls", "10.0.0.5", 5061}}
	tlsFirst := []Listen{{"tls", "10.0.0.5", 5061}, {"udp", "10.0.0.5", 5060}}
	tests := []struct {
		name      string
		sip       SIP
		transport string
		host      string
		port      int
	}{
		{"udp is the first listener", SIP{Listen: udpFirst}, "udp", "10.0.0.5", 5060},
		{"tls after udp: its own port", SIP{Listen: udpFirst}, "tls", "10.0.0.5", 5061},
		{"tls after udp, public host: its own port", SIP{Listen: udpFirst, PublicAddress: "203.0.113.10"}, "tls", "203.0.113.10", 5061},
		{"public port belongs to the first listener", SIP{Listen: udpFirst, PublicAddress: "203.0.113.10:15060"}, "udp", "203.0.113.10", 15060},
		{"public port not given to a later listener", SIP{Listen: udpFirst, PublicAddress: "203.0.113.10:15060"}, "tls", "203.0.113.10", 5061},
		{"tls first takes the public port", SIP{Listen: tlsFirst, PublicAddress: "203.0.113.10:15061"}, "tls", "203.0.113.10", 15061},
		{"no such listener: Advertise", SIP{Listen: tlsFirst}, "tcp", "10.0.0.5", 5061},
	}
	for _, tc := range tests {
		host, port := tc.sip.AdvertiseFor(tc.transport)
		if host != tc.host || port != tc.port {
			t.Errorf("%s: %s:%d, want %s:%d", tc.name, host, port, tc.host, tc.port)
		}
	}
}

// TestInterconnectEdgeWithRanges: an -ix edge is accepted once the
// operator names its ranges.
func TestInterconnectEdgeWithRanges(t *testing.T) {
	cfg, err := Parse("c.yaml", []byte("twilio:\n  domain: example\n  edges: [ashburn-ix, umatilla]\n  signalling_cidrs: [10.20.0.0/24]\nstore: {path: /x}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Twilio.SignallingCIDRs) != 1 || cfg.Twilio.Edges[0] != "ashburn-ix" {
		t.Errorf("edges %v, signalling %v", cfg.Twilio.Edges, cfg.Twilio.SignallingCIDRs)
	}
}
