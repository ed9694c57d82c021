package edge

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestResolverTTLAndOrder(t *testing.T) {
	d := startDNS(t)
	const fqdn = "example.sip.ashburn.twilio.com"
	tests := []struct {
		name    string
		ttl     uint32
		records []string
		wantTTL time.Duration
	}{
		{"twilio-like", 600, []string{"54.172.60.3", "54.172.60.0", "54.172.60.2", "54.172.60.1"}, 10 * time.Minute},
		{"zero ttl clamped up", 0, []string{"10.0.0.2", "10.0.0.1"}, minTTL},
		{"huge ttl clamped down", 86400, []string{"10.0.0.1"}, maxTTL},
		{"duplicates dropped", 30, []string{"10.0.0.1", "10.0.0.1"}, 30 * time.Second},
	}
	r := newResolver(d.addr)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d.set(fqdn, tc.ttl, tc.records...)
			addrs, ttl, err := r.lookupA(context.Background(), fqdn)
			if err != nil {
				t.Fatal(err)
			}
			want := make([]netip.Addr, 0, len(tc.records))
			for _, s := range tc.records {
				want = append(want, netip.MustParseAddr(s))
			}
			want = sortAddrs(want)
			if !slices.Equal(addrs, want) || ttl != tc.wantTTL {
				t.Fatalf("lookup = %v ttl %s, want %v ttl %s", addrs, ttl, want, tc.wantTTL)
			}
		})
	}
}

func TestResolverErrors(t *testing.T) {
	d := startDNS(t)
	r := newResolver(d.addr)
	_, _, err := r.lookupA(context.Background(), "example.sip.nowhere.twilio.com")
	var final *finalError
	if err == nil || !errors.As(err, &final) || !strings.Contains(err.Error(), "NXDOMAIN") {
		t.Fatalf("err = %v, want NXDOMAIN", err)
	}
	d.set("x.example", 60, "10.0.0.1")
	d.setFail(true)
	if _, _, err := r.lookupA(context.Background(), "x.example"); err == nil || !strings.Contains(err.Error(), "SERVFAIL") {
		t.Fatalf("err = %v, want SERVFAIL", err)
	}
}

// Without a usable resolv.conf the system resolver falls back to
// net.Resolver (which also reads /etc/hosts) with a fixed TTL.
func TestSystemResolverFallback(t *testing.T) {
	old := resolvConf
	resolvConf = filepath.Join(t.TempDir(), "missing-resolv.conf")
	t.Cleanup(func() { resolvConf = old })

	addrs, ttl, err := newResolver("").lookupA(context.Background(), "localhost")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(addrs, netip.MustParseAddr("127.0.0.1")) || ttl != fallbackTTL {
		t.Fatalf("lookup = %v %s, want 127.0.0.1 and %s", addrs, ttl, fallbackTTL)
	}
}
