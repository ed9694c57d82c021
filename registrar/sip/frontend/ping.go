package frontend

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Ping sends OPTIONS for uri to dst and returns nil when any response comes
// back (a 404 or 405 still proves the contact is there). Over UDP it leaves
// from the listening socket at local (or the first UDP socket), so it travels
// through the NAT pinhole the phone's REGISTER opened; over TCP it uses the
// phone's connection, over WebSocket the browser's. It implements
// registrar.Pinger for qualify.
func (s *Server) Ping(ctx context.Context, transport string, local, dst netip.AddrPort, uri string) error {
	select {
	case <-s.ready:
	default:
		return fmt.Errorf("frontend: ping before Run")
	}
	var u sip.Uri
	if err := sip.ParseUri(uri, &u); err != nil {
		return fmt.Errorf("frontend: ping %q: %w", uri, err)
	}
	tp := sip.NetworkToLower(transport)
	var from netip.AddrPort
	req := sip.NewRequest(sip.OPTIONS, u)
	req.SetTransport(sip.NetworkToUpper(tp))
	req.SetDestination(dst.String())
	switch tp {
	case "udp":
		ln := s.udpFor(local)
		if ln == nil {
			return fmt.Errorf("frontend: ping: no UDP listener")
		}
		req.Laddr = ln.sipgoKey
		from = ln.addr
	case "tcp":
		if a := s.Addr("tcp"); a.IsValid() {
			from = a
		}
	case "ws", "wss":
		// Only over the browser's own connection: sipgo would otherwise
		// dial the browser, which listens nowhere.
		if s.wsConnFor(tp, dst) == nil {
			return fmt.Errorf("frontend: ping %s: no %s connection from there", dst, tp)
		}
		from = s.Addr(tp)
	default:
		return fmt.Errorf("frontend: ping: unsupported transport %q", transport)
	}

	host, port := publicHostPort(s.settings)
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = from.Addr().String()
	}
	if port == 0 {
		port = int(from.Port())
	}
	via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: sip.NetworkToUpper(tp), Host: host, Port: port}
	via.Params.Add("branch", sip.GenerateBranch())
	via.Params.Add("rport", "")
	fromHdr := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "edgewise", Host: net.JoinHostPort(host, strconv.Itoa(port))}}
	fromHdr.Params.Add("tag", sip.GenerateTagN(16))
	to := &sip.ToHeader{Address: u}
	callID := sip.CallIDHeader(sip.GenerateTagN(24))
	cseq := &sip.CSeqHeader{SeqNo: 1, MethodName: sip.OPTIONS}
	maxFwd := sip.MaxForwardsHeader(70)
	req.AppendHeader(via)
	req.AppendHeader(fromHdr)
	req.AppendHeader(to)
	req.AppendHeader(&callID)
	req.AppendHeader(cseq)
	req.AppendHeader(&maxFwd)
	req.AppendHeader(sip.NewHeader("User-Agent", s.settings.UserAgent))
	req.SetBody(nil)

	// The request is complete; an option stops sipgo from adding headers.
	_, err := s.client.Do(ctx, req, func(*sipgo.Client, *sip.Request) error { return nil })
	if err != nil {
		return fmt.Errorf("frontend: ping %s: %w", dst, err)
	}
	return nil
}

// udpFor returns the UDP listener bound to local, or the first one.
func (s *Server) udpFor(local netip.AddrPort) *udpListener {
	var first *udpListener
	for _, l := range s.listeners {
		if l.udp == nil {
			continue
		}
		if first == nil {
			first = l.udp
		}
		if l.addr == local {
			return l.udp
		}
	}
	return first
}
