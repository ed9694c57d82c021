package edge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// URI is the Request-URI for t: sip:[user@]<fqdn>, with ;transport=tcp|tls
// when not UDP. Twilio wants the FQDN, never the IP, and sip: rather than
// sips: even over TLS (README, "Twilio facts" 1).
func (t Target) URI(user string) sip.Uri {
	u := sip.Uri{Scheme: "sip", User: user, Host: t.FQDN}
	if t.Transport == "tcp" || t.Transport == "tls" {
		u.UriParams = sip.NewParams()
		u.UriParams.Add("transport", t.Transport)
	}
	return u
}

// Direct makes req go to t's explicit IP and port over t's transport,
// whatever its Request-URI says: sipgo sends to Destination when set and
// does no DNS for an IP. Use it for every request towards an edge (REGISTER,
// INVITE) so each attempt hits the one IP Targets chose.
func Direct(req *sip.Request, t Target) {
	req.SetDestination(t.Addr())
	req.SetTransport(strings.ToUpper(t.Transport))
}

// ResultOf turns a final (or first) response into a Result for Report.
func ResultOf(res *sip.Response, rtt time.Duration) Result {
	if res == nil {
		return Result{RTT: rtt}
	}
	r := Result{StatusCode: res.StatusCode, RTT: rtt}
	if h := res.GetHeader("Retry-After"); h != nil {
		r.RetryAfter = parseRetryAfter(h.Value())
	}
	return r
}

// parseRetryAfter reads delta-seconds from "120", "120;duration=60" or
// "120 (comment)" (RFC 3261 §20.33); anything else is 0.
func parseRetryAfter(v string) time.Duration {
	v = strings.TrimSpace(v)
	end := strings.IndexFunc(v, func(r rune) bool { return r < '0' || r > '9' })
	if end >= 0 {
		v = v[:end]
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0
	}
	// Cap absurd values: an edge that says "a day" is still probed hourly.
	return min(time.Duration(n)*time.Second, time.Hour)
}

// SIPProber probes an edge IP with an OPTIONS (default) or a credential-less
// REGISTER that only queries bindings: either way any response proves the
// edge alive, and a REGISTER query changes nothing even if it is accepted.
type SIPProber struct {
	client    *sipgo.Client
	tlsClient func(fqdn string) (*sipgo.Client, error)
	method    sip.RequestMethod
	user      string
}

var _ Prober = (*SIPProber)(nil)

// SIPProberOption configures a SIPProber.
type SIPProberOption func(*SIPProber)

// WithTLSClients gives the client to use for a TLS target's FQDN. It is
// needed because sipgo takes the SNI and the name it verifies from the UA's
// tls.Config when the destination is an IP, so each edge FQDN needs its own
// UA; TLSClients provides such a pool.
func WithTLSClients(f func(fqdn string) (*sipgo.Client, error)) SIPProberOption {
	return func(p *SIPProber) { p.tlsClient = f }
}

// WithRegisterProbe probes with a REGISTER for user@<fqdn> that carries no
// Contact and no credentials (a binding query, RFC 3261 §10.2.3): Twilio
// answers 401, which proves the edge alive. For keepalive.method register,
// where whether Twilio answers OPTIONS is in doubt.
func WithRegisterProbe(user string) SIPProberOption {
	return func(p *SIPProber) { p.method, p.user = sip.REGISTER, user }
}

// NewSIPProber probes UDP and TCP targets through client; TLS targets need
// WithTLSClients.
func NewSIPProber(client *sipgo.Client, opts ...SIPProberOption) *SIPProber {
	p := &SIPProber{client: client, method: sip.OPTIONS}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Probe sends one request to t.IP and waits for the final response until ctx
// is done; the Monitor's deadline is Settings.Timeout, so sipgo's client
// transaction is cut short of Timer F (32 s). Silence returns an error
// wrapping ErrNoResponse.
func (p *SIPProber) Probe(ctx context.Context, t Target) (Result, error) {
	client := p.client
	if t.Transport == "tls" {
		if p.tlsClient == nil {
			// The shared client would present and verify the IP, not the FQDN.
			return Result{}, fmt.Errorf("probe %s: tls needs WithTLSClients so SNI names %s", t, t.FQDN)
		}
		c, err := p.tlsClient(t.FQDN)
		if err != nil {
			return Result{}, fmt.Errorf("tls client for %s: %w", t.FQDN, err)
		}
		client = c
	}
	var req *sip.Request
	if p.method == sip.REGISTER {
		req = sip.NewRequest(sip.REGISTER, t.URI(""))
		aor := sip.Uri{Scheme: "sip", User: p.user, Host: t.FQDN}
		req.AppendHeader(&sip.ToHeader{Address: aor})
		from := &sip.FromHeader{Address: aor}
		from.Params.Add("tag", sip.GenerateTagN(16))
		req.AppendHeader(from)
	} else {
		req = sip.NewRequest(sip.OPTIONS, t.URI(""))
		req.AppendHeader(sip.NewHeader("Accept", "application/sdp"))
	}
	req.SetBody(nil) // Content-Length: 0, required on stream transports
	Direct(req, t)

	start := time.Now()
	res, err := client.Do(ctx, req)
	rtt := time.Since(start)
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil && errors.Is(err, ctxErr) {
			return Result{RTT: rtt}, fmt.Errorf("%s %s: %w after %s (%w)", p.method, t, ErrNoResponse, rtt.Round(time.Millisecond), ctxErr)
		}
		return Result{RTT: rtt}, fmt.Errorf("%s %s: %w", p.method, t, err)
	}
	return ResultOf(res, rtt), nil
}

// TLSConfig returns base (may be nil) for talking TLS to fqdn while
// connecting to one of its IPs: SNI and certificate verification use the
// FQDN, and TLS 1.2 is the minimum Twilio accepts (README, "Twilio facts" 1).
func TLSConfig(base *tls.Config, fqdn string) *tls.Config {
	var c *tls.Config
	if base != nil {
		c = base.Clone()
	} else {
		c = &tls.Config{}
	}
	c.ServerName = fqdn
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	return c
}

// TLSClients keeps one sipgo UA and Client per edge FQDN, each with a
// tls.Config naming that FQDN (see TLSConfig), so requests dialled to an
// explicit IP still present and verify the edge's name. The upstream
// manager and the B2BUA can share one pool with the prober.
//
// The pool verifies each edge's certificate itself (see CertError), against
// roots that SetRoots can replace while it runs: a reload with a new
// twilio.ca_file applies to the next handshake, and connections already up
// stay up.
type TLSClients struct {
	base       *tls.Config
	uaOpts     []sipgo.UserAgentOption
	clientOpts []sipgo.ClientOption
	roots      atomic.Pointer[x509.CertPool] // nil: the system roots
	now        func() time.Time              // replaced in tests

	mu      sync.Mutex
	closed  bool
	clients map[string]tlsClient
}

type tlsClient struct {
	ua     *sipgo.UserAgent
	client *sipgo.Client
}

// NewTLSClients creates an empty pool; UAs are made on first use with
// uaOpts (its TLS config option is overridden) and clients with
// clientOpts. base (may be nil) is cloned for every FQDN; its RootCAs are
// the first roots (nil: the system roots).
func NewTLSClients(base *tls.Config, uaOpts []sipgo.UserAgentOption, clientOpts ...sipgo.ClientOption) *TLSClients {
	p := &TLSClients{base: base, uaOpts: uaOpts, clientOpts: clientOpts, clients: map[string]tlsClient{}, now: time.Now}
	if base != nil {
		p.roots.Store(base.RootCAs)
	}
	return p
}

// SetRoots replaces the CAs edge certificates are verified against (nil:
// the system roots) for every handshake from now on.
func (p *TLSClients) SetRoots(roots *x509.CertPool) { p.roots.Store(roots) }

// config is the tls.Config of fqdn's UA. Verification is done by
// VerifyConnection, with the roots of the moment, instead of by crypto/tls
// with roots fixed when the UA was made; InsecureSkipVerify only turns the
// built-in check off so that this one replaces it (crypto/tls calls
// VerifyConnection on every handshake, and a failure aborts it).
func (p *TLSClients) config(fqdn string) *tls.Config {
	c := TLSConfig(p.base, fqdn)
	if c.InsecureSkipVerify {
		return c // a caller that wants no check at all (tests)
	}
	c.RootCAs = nil
	c.InsecureSkipVerify = true
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		return verifyEdge(cs, fqdn, p.roots.Load(), p.now())
	}
	return c
}

// Client returns the client for fqdn, creating it on first use.
func (p *TLSClients) Client(fqdn string) (*sipgo.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("tls clients closed")
	}
	if c, ok := p.clients[fqdn]; ok {
		return c.client, nil
	}
	opts := append(append([]sipgo.UserAgentOption(nil), p.uaOpts...), sipgo.WithUserAgenTLSConfig(p.config(fqdn)))
	ua, err := sipgo.NewUA(opts...)
	if err != nil {
		return nil, fmt.Errorf("user agent for %s: %w", fqdn, err)
	}
	client, err := sipgo.NewClient(ua, p.clientOpts...)
	if err != nil {
		_ = ua.Close()
		return nil, fmt.Errorf("client for %s: %w", fqdn, err)
	}
	p.clients[fqdn] = tlsClient{ua: ua, client: client}
	return client, nil
}

// Close closes every UA of the pool (their connections and transactions).
func (p *TLSClients) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	var errs []error
	for fqdn, c := range p.clients {
		if err := c.ua.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", fqdn, err))
		}
		delete(p.clients, fqdn)
	}
	return errors.Join(errs...)
}
