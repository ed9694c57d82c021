package upstream

import (
	"context"
	"fmt"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
)

// Sender sends one request to one edge target and returns its final
// response. The request already carries every header and its explicit
// destination (edge.Direct). Send must return when ctx is done: the Manager
// bounds each attempt by the per-IP timeout (not SIP Timer F's 32 s), and a
// cancelled ctx must end the client transaction. Declared here, by its
// consumer, so tests and cmd can plug in any sipgo client.
type Sender interface {
	Send(ctx context.Context, t edge.Target, req *sip.Request) (*sip.Response, error)
}

// ClientSender sends through sipgo clients: UDP and TCP through Client; TLS
// through the client TLS returns for the edge FQDN (edge.TLSClients.Client),
// because sipgo takes SNI and the verified name from the UA's tls.Config and
// Twilio requires the FQDN there, not the IP dialled.
type ClientSender struct {
	Client *sipgo.Client
	TLS    func(fqdn string) (*sipgo.Client, error)
}

var _ Sender = ClientSender{}

// Send implements Sender with sipgo's Client.Do, which terminates the client
// transaction when ctx is done.
func (s ClientSender) Send(ctx context.Context, t edge.Target, req *sip.Request) (*sip.Response, error) {
	client := s.Client
	if t.Transport == "tls" {
		if s.TLS == nil {
			return nil, fmt.Errorf("send to %s: tls needs ClientSender.TLS so SNI names %s", t, t.FQDN)
		}
		c, err := s.TLS(t.FQDN)
		if err != nil {
			return nil, fmt.Errorf("tls client for %s: %w", t.FQDN, err)
		}
		client = c
	}
	if client == nil {
		return nil, fmt.Errorf("send to %s: no sip client", t)
	}
	return client.Do(ctx, req)
}

// SenderFunc adapts a function to Sender (tests, decorators).
type SenderFunc func(ctx context.Context, t edge.Target, req *sip.Request) (*sip.Response, error)

// Send calls f.
func (f SenderFunc) Send(ctx context.Context, t edge.Target, req *sip.Request) (*sip.Response, error) {
	return f(ctx, t, req)
}
