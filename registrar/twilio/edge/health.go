package edge

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Failure classes, used in reasons and as bounded metric labels.
const (
	classTimeout   = "timeout"
	classTransport = "transport"
	classResponse  = "error_response"
	classDNS       = "dns"
	classMixed     = "mixed"
	// classTLS: the IP's certificate failed verification (CertError).
	classTLS = "tls"
)

// ipHealth is the health of one resolved address. Guarded by Monitor.mu.
type ipHealth struct {
	addr       netip.Addr
	state      State
	since      time.Time
	rtt        time.Duration
	status     int
	lastErr    string
	class      string // failure class of the last failure
	phrase     string // how the last failure reads in an edge summary
	retryAfter time.Time
	busy       bool // a probe is in flight; never two at once per IP
}

// edgeHealth is the health and DNS state of one configured edge. Guarded by
// Monitor.mu. A reload that changes the FQDN, port or transport replaces it,
// so results of requests to the old one are ignored.
type edgeHealth struct {
	name      string
	fqdn      string
	port      int
	transport string

	state  State
	since  time.Time
	reason string
	class  string // failure class while down
	// recovering is set when the edge comes up after being down; until it
	// has been up for the failback hold it is not preferred over the active edge.
	recovering bool
	ips        []*ipHealth

	answered   bool // DNS has answered at least once
	resolvedAt time.Time
	expiresAt  time.Time
	dnsErr     string
	dnsFails   int
	dnsDue     time.Time
	dnsBusy    bool
	firstDNS   chan struct{} // closed when the first lookup has finished

	probeDue time.Time
}

func newEdgeHealth(s Settings, name string, now time.Time) *edgeHealth {
	return &edgeHealth{
		name:      name,
		fqdn:      s.FQDN(name),
		port:      s.Port,
		transport: s.Transport,
		state:     StateUnknown,
		since:     now,
		dnsDue:    now,
		probeDue:  now,
		firstDNS:  make(chan struct{}),
	}
}

// sameTarget reports whether e still serves requests built for t.
func (e *edgeHealth) sameTarget(t Target) bool {
	return e.fqdn == t.FQDN && e.port == t.Port && e.transport == t.Transport
}

func (e *edgeHealth) ip(addr netip.Addr) *ipHealth {
	for _, ip := range e.ips {
		if ip.addr == addr {
			return ip
		}
	}
	return nil
}

func (e *edgeHealth) target(ip *ipHealth) Target {
	return Target{Edge: e.name, FQDN: e.fqdn, IP: ip.addr, Port: e.port, Transport: e.transport}
}

// setAddrs replaces the address list, keeping the health of addresses that
// stay. It reports whether the set changed.
func (e *edgeHealth) setAddrs(addrs []netip.Addr, now time.Time) bool {
	if slices.EqualFunc(addrs, e.ips, func(a netip.Addr, ip *ipHealth) bool { return a == ip.addr }) {
		return false
	}
	ips := make([]*ipHealth, 0, len(addrs))
	for _, a := range addrs {
		if ip := e.ip(a); ip != nil {
			ips = append(ips, ip)
			continue
		}
		ips = append(ips, &ipHealth{addr: a, state: StateUnknown, since: now})
	}
	e.ips = ips
	return true
}

func (e *edgeHealth) addrStrings() string {
	s := make([]string, len(e.ips))
	for i, ip := range e.ips {
		s[i] = ip.addr.String()
	}
	return strings.Join(s, ", ")
}

// outcome is a Result judged by the failover rules (README,
// "Upstream registration and edge failover"): any response below
// 500 (even 4xx/405) proves the IP alive; silence, transport errors, 408 and
// 5xx count against it.
type outcome struct {
	ok     bool
	class  string
	phrase string // "timed out after 4s", for "3/3 IPs timed out after 4s"
	detail string // per-IP last_error
}

func classify(res Result, err error, timeout time.Duration) outcome {
	var cert *CertError
	switch {
	case err != nil && errors.As(err, &cert):
		// Before the timeout case: a refused certificate is a verdict,
		// not silence, and says exactly what is wrong.
		return outcome{class: classTLS, phrase: "failed the certificate check: " + cert.Reason, detail: cert.Error()}
	case err != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrNoResponse)),
		err == nil && res.StatusCode == 0:
		return outcome{
			class:  classTimeout,
			phrase: "timed out after " + timeout.String(),
			detail: "no response within " + timeout.String(),
		}
	case err != nil:
		return outcome{class: classTransport, phrase: "failed with transport errors", detail: "transport error: " + err.Error()}
	case res.StatusCode == 408 || res.StatusCode >= 500 && res.StatusCode < 600:
		d := fmt.Sprintf("answered %d", res.StatusCode)
		detail := d
		if res.RetryAfter > 0 {
			detail += fmt.Sprintf(" (Retry-After %s)", res.RetryAfter)
		}
		return outcome{class: classResponse, phrase: d, detail: detail}
	default:
		return outcome{ok: true}
	}
}

// downSummary explains why every IP of e failed, grouped by how they failed:
// "3/3 IPs timed out after 4s" or "2/3 IPs timed out after 4s, 1/3 IPs answered 503".
func downSummary(e *edgeHealth) (reason, class string) {
	var phrases []string
	counts := map[string]int{}
	for _, ip := range e.ips {
		if ip.state != StateDown {
			continue
		}
		if counts[ip.phrase] == 0 {
			phrases = append(phrases, ip.phrase)
		}
		counts[ip.phrase]++
		switch {
		case class == "":
			class = ip.class
		case class != ip.class:
			class = classMixed
		}
	}
	parts := make([]string, len(phrases))
	for i, p := range phrases {
		parts[i] = fmt.Sprintf("%d/%d IPs %s", counts[p], len(e.ips), p)
	}
	return strings.Join(parts, ", "), class
}
