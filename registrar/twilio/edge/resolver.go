package edge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/miekg/dns"
)

// TTL bounds. The lower bound stops a zero TTL from turning into a query
// loop; the upper one makes sure a changed edge is noticed within the hour.
const (
	minTTL = time.Second
	maxTTL = time.Hour
	// fallbackTTL is used when the answer carries no TTL (net.Resolver).
	fallbackTTL = 60 * time.Second
)

// resolvConf is the system resolver configuration; a variable for tests.
var resolvConf = "/etc/resolv.conf"

// resolver looks up the A records of an edge FQDN with their TTL.
type resolver interface {
	lookupA(ctx context.Context, fqdn string) (addrs []netip.Addr, ttl time.Duration, err error)
}

// newResolver asks server (host[:port]) when given, else the servers in
// /etc/resolv.conf, both with miekg/dns so the TTL is known.
func newResolver(server string) resolver {
	if server == "" {
		return &systemResolver{}
	}
	if _, _, err := net.SplitHostPort(server); err != nil {
		server = net.JoinHostPort(server, "53")
	}
	return &dnsResolver{servers: []string{server}}
}

// dnsResolver queries a list of servers in order.
type dnsResolver struct {
	servers []string
}

func (r *dnsResolver) lookupA(ctx context.Context, fqdn string) ([]netip.Addr, time.Duration, error) {
	return queryA(ctx, r.servers, fqdn)
}

// systemResolver reads resolv.conf on each lookup (cheap at one query per TTL
// per edge) so a changed nameserver is picked up; without a usable file it
// falls back to net.Resolver and a fixed TTL.
type systemResolver struct{}

func (r *systemResolver) lookupA(ctx context.Context, fqdn string) ([]netip.Addr, time.Duration, error) {
	cfg, err := dns.ClientConfigFromFile(resolvConf)
	if err == nil && len(cfg.Servers) > 0 {
		servers := make([]string, 0, len(cfg.Servers))
		for _, s := range cfg.Servers {
			servers = append(servers, net.JoinHostPort(s, cfg.Port))
		}
		return queryA(ctx, servers, fqdn)
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", fqdn)
	if err != nil {
		return nil, 0, fmt.Errorf("lookup %s: %w", fqdn, err)
	}
	for i := range ips {
		ips[i] = ips[i].Unmap()
	}
	return sortAddrs(ips), fallbackTTL, nil
}

// queryA asks each server in turn. An NXDOMAIN or empty answer is final: the
// name does not exist there, asking a second resolver would not help.
func queryA(ctx context.Context, servers []string, fqdn string) ([]netip.Addr, time.Duration, error) {
	q := new(dns.Msg)
	q.SetQuestion(dns.Fqdn(fqdn), dns.TypeA)
	q.RecursionDesired = true

	var errs []error
	for _, server := range servers {
		if ctx.Err() != nil {
			break
		}
		addrs, ttl, err := exchangeA(ctx, q, server)
		if err == nil {
			return addrs, ttl, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", server, err))
		var final *finalError
		if errors.As(err, &final) {
			break
		}
	}
	if len(errs) == 0 {
		return nil, 0, fmt.Errorf("lookup %s: %w", fqdn, ctx.Err())
	}
	return nil, 0, fmt.Errorf("lookup %s: %w", fqdn, errors.Join(errs...))
}

// finalError marks an authoritative "no" that other servers would repeat.
type finalError struct{ msg string }

func (e *finalError) Error() string { return e.msg }

func exchangeA(ctx context.Context, q *dns.Msg, server string) ([]netip.Addr, time.Duration, error) {
	r, _, err := (&dns.Client{Net: "udp"}).ExchangeContext(ctx, q, server)
	if err == nil && r.Truncated {
		// 3–4 A records fit in UDP; a truncated answer means a longer
		// chain, so ask again over TCP rather than use a partial list.
		r, _, err = (&dns.Client{Net: "tcp"}).ExchangeContext(ctx, q, server)
	}
	if err != nil {
		return nil, 0, err
	}
	switch r.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return nil, 0, &finalError{msg: "NXDOMAIN"}
	default:
		return nil, 0, fmt.Errorf("rcode %s", dns.RcodeToString[r.Rcode])
	}
	var addrs []netip.Addr
	ttl := maxTTL
	for _, rr := range r.Answer {
		// The TTL of a CNAME on the way counts too: the chain is only as
		// fresh as its shortest-lived link.
		if d := time.Duration(rr.Header().Ttl) * time.Second; d < ttl {
			ttl = d
		}
		if a, ok := rr.(*dns.A); ok {
			if ip, ok := netip.AddrFromSlice(a.A); ok {
				addrs = append(addrs, ip.Unmap())
			}
		}
	}
	if len(addrs) == 0 {
		return nil, 0, &finalError{msg: "no A records"}
	}
	return sortAddrs(addrs), clampTTL(ttl), nil
}

func clampTTL(d time.Duration) time.Duration {
	return min(max(d, minTTL), maxTTL)
}

// sortAddrs sorts and de-duplicates so "the next IP" is the same on every
// lookup whatever order the server rotates its records in.
func sortAddrs(addrs []netip.Addr) []netip.Addr {
	slices.SortFunc(addrs, netip.Addr.Compare)
	return slices.Compact(addrs)
}
