package edgesim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"

	"github.com/miekg/dns"
	"golang.org/x/sync/errgroup"
)

// dnsServer answers the edge FQDNs with the edges' IPs, over UDP and TCP on
// one port. In down mode it reads queries and answers none, so resolvers
// time out as they would when a DNS provider fails.
type dnsServer struct {
	sim     *Sim
	names   map[string][]netip.Addr // lower-case FQDN with trailing dot → IPs
	down    atomic.Bool
	queries atomic.Uint64

	addr    string // bound address, set by bind
	pc      net.PacketConn
	ln      net.Listener
	servers []*dnsServe
}

type dnsServe struct {
	srv     *dns.Server
	started chan struct{}
	exited  chan struct{}
}

func newDNSServer(s *Sim) *dnsServer {
	d := &dnsServer{sim: s, names: map[string][]netip.Addr{}}
	for _, e := range s.edges {
		var ips []netip.Addr
		for _, ip := range e.ips {
			ips = append(ips, ip.addr)
		}
		for _, n := range e.fqdns {
			d.names[dns.Fqdn(n)] = ips
		}
	}
	// A Registration Domain without an edge registers at Ashburn
	// (README "Twilio facts" 1); without an ashburn edge the first edge stands in.
	home := s.edges[0]
	if e, ok := s.byName["ashburn"]; ok {
		home = e
	}
	d.names[dns.Fqdn(s.cfg.Domain+".sip.twilio.com")] = d.names[dns.Fqdn(home.fqdns[0])]
	for host, ip := range restHosts(s.cfg) {
		d.names[dns.Fqdn(host)] = []netip.Addr{ip}
	}
	return d
}

// bind opens the UDP and TCP sockets; with DNS disabled it does nothing.
func (d *dnsServer) bind() error {
	if d.sim.cfg.DNS.Listen == "" {
		return nil
	}
	ap, err := netip.ParseAddrPort(d.sim.cfg.DNS.Listen)
	if err != nil {
		return fmt.Errorf("dns listen %q: %w", d.sim.cfg.DNS.Listen, err)
	}
	pc, ln, err := bindPair(ap.Addr(), int(ap.Port()), true, true)
	if err != nil {
		return fmt.Errorf("dns listen on %s: %w", d.sim.cfg.DNS.Listen, err)
	}
	d.pc, d.ln = pc, ln
	d.addr = pc.LocalAddr().String()
	return nil
}

// serve starts the UDP and TCP servers in g.
func (d *dnsServer) serve(g *errgroup.Group) {
	if d.pc == nil {
		return
	}
	for _, srv := range []*dns.Server{
		{PacketConn: d.pc, Handler: d},
		{Listener: d.ln, Handler: d},
	} {
		ds := &dnsServe{srv: srv, started: make(chan struct{}), exited: make(chan struct{})}
		srv.NotifyStartedFunc = func() { close(ds.started) }
		d.servers = append(d.servers, ds)
		g.Go(func() error {
			defer close(ds.exited)
			if err := srv.ActivateAndServe(); err != nil {
				return fmt.Errorf("dns server: %w", err)
			}
			return nil
		})
	}
}

// shutdown stops the servers started by serve. miekg/dns refuses to shut
// down a server that has not started, so it waits for the start first.
func (d *dnsServer) shutdown(ctx context.Context) error {
	var errs []error
	for _, ds := range d.servers {
		select {
		case <-ds.started:
			errs = append(errs, ds.srv.ShutdownContext(ctx))
		case <-ds.exited:
		}
	}
	return errors.Join(errs...)
}

func (d *dnsServer) closeSockets() { closeAll(d.pc, d.ln) }

func (d *dnsServer) setDown(down bool) {
	if d.down.Swap(down) != down {
		state := "up"
		if down {
			state = "down"
		}
		d.sim.log.Info("dns mode changed", "mode", state)
	}
}

// ServeDNS implements dns.Handler.
func (d *dnsServer) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	d.queries.Add(1)
	if d.down.Load() {
		d.sim.log.Debug("dns query dropped", "from", w.RemoteAddr().String(), "question", questionString(r))
		return
	}
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		_ = w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	ips, ok := d.names[strings.ToLower(q.Name)]
	if !ok {
		m.Rcode = dns.RcodeNameError
	}
	ttl := uint32(d.sim.cfg.DNS.TTL)
	for _, ip := range ips {
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: ttl}
		switch {
		case ip.Is4() && (q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY):
			hdr.Rrtype = dns.TypeA
			m.Answer = append(m.Answer, &dns.A{Hdr: hdr, A: ip.AsSlice()})
		case ip.Is6() && (q.Qtype == dns.TypeAAAA || q.Qtype == dns.TypeANY):
			hdr.Rrtype = dns.TypeAAAA
			m.Answer = append(m.Answer, &dns.AAAA{Hdr: hdr, AAAA: ip.AsSlice()})
		}
	}
	d.sim.log.Debug("dns query", "from", w.RemoteAddr().String(), "question", questionString(r), "rcode", dns.RcodeToString[m.Rcode], "answers", len(m.Answer))
	if err := w.WriteMsg(m); err != nil {
		d.sim.log.Warn("dns answer not sent", "error", err)
	}
}

func questionString(r *dns.Msg) string {
	if len(r.Question) == 0 {
		return ""
	}
	q := r.Question[0]
	return q.Name + " " + dns.TypeToString[q.Qtype]
}

// DNSStatus is the DNS server as the control API shows it.
type DNSStatus struct {
	Addr    string `json:"addr"`
	Mode    string `json:"mode"`
	TTL     int    `json:"ttl"`
	Queries uint64 `json:"queries"`
	// Names maps every FQDN served to its IPs.
	Names map[string][]string `json:"names"`
}

// DNS reports the DNS server's state.
func (s *Sim) DNS() DNSStatus {
	st := DNSStatus{Addr: s.dns.addr, Mode: "up", TTL: s.cfg.DNS.TTL, Queries: s.dns.queries.Load(), Names: map[string][]string{}}
	if s.dns.down.Load() {
		st.Mode = "down"
	}
	for n, ips := range s.dns.names {
		for _, ip := range ips {
			st.Names[n] = append(st.Names[n], ip.String())
		}
	}
	return st
}

// SetDNSMode switches the DNS server: "up" answers, "down" drops every
// query.
func (s *Sim) SetDNSMode(mode string) error {
	switch mode {
	case "up":
		s.dns.setDown(false)
	case "down":
		s.dns.setDown(true)
	default:
		return fmt.Errorf("%w: dns mode %q (up, down)", ErrInvalidMode, mode)
	}
	return nil
}
