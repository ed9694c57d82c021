package edgesim

import (
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgewise-sip/edgewise/test/kit"
)

func query(sim *Sim, netw, name string, qtype uint16, timeout time.Duration) (*dns.Msg, error) {
	c := &dns.Client{Net: netw, Timeout: timeout}
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	r, _, err := c.Exchange(m, sim.DNSAddr())
	return r, err
}

func aRecords(t *testing.T, r *dns.Msg, ttl uint32) []string {
	t.Helper()
	var out []string
	for _, rr := range r.Answer {
		a, ok := rr.(*dns.A)
		if !ok {
			t.Fatalf("answer %v is not A", rr)
		}
		if a.Hdr.Ttl != ttl {
			t.Errorf("%v: ttl %d, want %d", rr, a.Hdr.Ttl, ttl)
		}
		out = append(out, a.A.String())
	}
	slices.Sort(out)
	return out
}

func TestDNSAnswersEdgeFQDNs(t *testing.T) {
	t.Parallel()
	n := kit.NewNet(t)
	cfg := testConfig(n)
	cfg.DNS.TTL = 0 // default 600
	sim := startSim(t, cfg)
	ashburn := []string{n.Addr(1), n.Addr(2), n.Addr(3)}
	umatilla := []string{n.Addr(11), n.Addr(12), n.Addr(13)}

	for _, tc := range []struct {
		name string
		want []string
	}{
		{"demo.sip.ashburn.twilio.com", ashburn},
		{"DEMO.SIP.Umatilla.twilio.com", umatilla},
		{"sip.umatilla.twilio.com", umatilla},
		{"demo.sip.twilio.com", ashburn}, // no edge: Ashburn (README "Twilio facts" 1)
	} {
		for _, netw := range []string{"udp", "tcp"} {
			r, err := query(sim, netw, tc.name, dns.TypeA, 2*time.Second)
			if err != nil {
				t.Fatalf("%s over %s: %v", tc.name, netw, err)
			}
			if r.Rcode != dns.RcodeSuccess {
				t.Fatalf("%s: rcode %s", tc.name, dns.RcodeToString[r.Rcode])
			}
			if got := aRecords(t, r, 600); !slices.Equal(got, tc.want) {
				t.Errorf("%s over %s: %v, want %v", tc.name, netw, got, tc.want)
			}
		}
	}

	r, err := query(sim, "udp", "other.sip.ashburn.twilio.com", dns.TypeA, 2*time.Second)
	if err != nil || r.Rcode != dns.RcodeNameError {
		t.Errorf("unknown name: %v %v, want NXDOMAIN", r, err)
	}
	r, err = query(sim, "udp", "demo.sip.ashburn.twilio.com", dns.TypeAAAA, 2*time.Second)
	if err != nil || r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("AAAA: %v %v, want NOERROR without answers", r, err)
	}

	// Down: queries are read and dropped, so resolvers time out.
	if code := api(t, sim, "PUT", "/v1/dns", `{"mode":"down"}`, nil); code != 200 {
		t.Fatalf("PUT /v1/dns: %d", code)
	}
	before := sim.DNS().Queries
	for _, netw := range []string{"udp", "tcp"} {
		if r, err := query(sim, netw, "demo.sip.ashburn.twilio.com", dns.TypeA, silenceAfter); err == nil {
			t.Errorf("dns down over %s answered %v", netw, r)
		}
	}
	if got := sim.DNS().Queries; got < before+2 {
		t.Errorf("queries counted while down: %d, want at least %d", got, before+2)
	}
	var st DNSStatus
	if code := api(t, sim, "POST", "/v1/dns", `{"mode":"up"}`, &st); code != 200 || st.Mode != "up" {
		t.Fatalf("POST /v1/dns up: %d %+v", code, st)
	}
	r, err = query(sim, "udp", "demo.sip.ashburn.twilio.com", dns.TypeA, 2*time.Second)
	if err != nil || len(r.Answer) != 3 {
		t.Errorf("after up: %v %v", r, err)
	}
}
