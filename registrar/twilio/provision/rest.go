package provision

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	twilio "github.com/twilio/twilio-go"
	twclient "github.com/twilio/twilio-go/client"
	openapi "github.com/twilio/twilio-go/rest/api/v2010"
)

// Settings is how REST reaches Twilio.
type Settings struct {
	AccountSID   string
	APIKeySID    string
	APIKeySecret string
	// Region is the REST region (us1, ie1, au1).
	Region string
	// Edges are tried in order; empty means api.<region>.twilio.com.
	Edges []string
	// DNSServer (host:port) resolves *.twilio.com; "" = the system resolver.
	DNSServer string
	// CAPEM is trusted in addition to the system roots.
	CAPEM []byte
	// Port, when not 0, is dialled instead of 443 (tests only).
	Port int
	// Timeout bounds one HTTP request; 0 means 10 s.
	Timeout time.Duration
	// OnFallback, when set, hears each move to another edge and why, in
	// a few words ("connection refused", "503 Service Unavailable …").
	OnFallback func(from, to, why string)
}

// REST is the API over twilio-go, one REST client per edge, with the
// fallback doc.go describes. Its methods are safe for one caller at a time.
type REST struct {
	s         Settings
	transport *http.Transport

	mu  sync.Mutex
	cur int // index of the edge that answered last
}

var _ API = (*REST)(nil)

// NewREST checks s and prepares the transport; nothing is sent yet.
func NewREST(s Settings) (*REST, error) {
	if s.AccountSID == "" || s.APIKeySID == "" || s.APIKeySecret == "" {
		return nil, errors.New("the account SID, API key SID and API key secret are all required")
	}
	if s.Region == "" {
		s.Region = "us1"
	}
	if s.Timeout <= 0 {
		s.Timeout = 10 * time.Second
	}
	if len(s.Edges) == 0 {
		s.Edges = []string{""}
	}
	tr, err := newTransport(s.DNSServer, s.Port, s.CAPEM)
	if err != nil {
		return nil, err
	}
	return &REST{s: s, transport: tr}, nil
}

// Close drops idle connections.
func (r *REST) Close() { r.transport.CloseIdleConnections() }

// Host gives the REST host of edge, as twilio-go builds it.
func (r *REST) Host(edge string) string {
	if edge == "" {
		return "api." + r.s.Region + ".twilio.com"
	}
	return "api." + edge + "." + r.s.Region + ".twilio.com"
}

// APIError is Twilio's 4xx answer: final, never retried on another edge.
type APIError struct {
	Op      string // what was asked, e.g. "list SIP Domains"
	Host    string
	Status  int
	Code    int
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("%s: Twilio answered %d (code %d: %s) at %s", e.Op, e.Status, e.Code, e.Message, e.Host)
}

// UnreachableError is an operation every edge failed at the transport
// level or with a 5xx.
type UnreachableError struct {
	Op       string
	Failures []string // "host: reason", in the order tried
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("%s: no Twilio REST edge answered: %s", e.Op, strings.Join(e.Failures, "; "))
}

// UncertainError is a change whose request reached Twilio without a usable
// answer: it may have been applied, so it was not repeated elsewhere.
type UncertainError struct {
	Op   string
	Host string
	Err  error
}

func (e *UncertainError) Error() string {
	return fmt.Sprintf("%s at %s: %s; it may or may not have been applied, so it was not repeated on another edge: run sync again, it only does what is still missing",
		e.Op, e.Host, reason(e.Err))
}

func (e *UncertainError) Unwrap() error { return e.Err }

// call runs fn against the edges from the current one on. retry says
// whether fn may run again after a request of it went out (reads and
// password updates may; creations may not).
func (r *REST) call(ctx context.Context, op string, retry bool, fn func(*openapi.ApiService) error) error {
	r.mu.Lock()
	start := r.cur
	r.mu.Unlock()
	n := len(r.s.Edges)
	var failures []string
	for i := range n {
		idx := (start + i) % n
		edge := r.s.Edges[idx]
		at := &attempt{ctx: ctx, base: r.transport}
		err := fn(r.api(edge, at))
		if err == nil {
			r.mu.Lock()
			r.cur = idx
			r.mu.Unlock()
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", op, ctx.Err())
		}
		var te *twclient.TwilioRestError
		if errors.As(err, &te) {
			return &APIError{Op: op, Host: r.Host(edge), Status: te.Status, Code: te.Code, Message: te.Message}
		}
		if st := int(at.status.Load()); st >= 400 && st < 500 {
			// A 4xx without Twilio's JSON body (a proxy's page): still an
			// answer, not an edge failure.
			return &APIError{Op: op, Host: r.Host(edge), Status: st, Message: reason(err)}
		}
		if !retry && at.sent.Load() {
			return &UncertainError{Op: op, Host: r.Host(edge), Err: err}
		}
		failures = append(failures, r.Host(edge)+": "+reason(err))
		if i+1 < n && r.s.OnFallback != nil {
			r.s.OnFallback(r.Host(edge), r.Host(r.s.Edges[(idx+1)%n]), reason(err))
		}
	}
	return &UnreachableError{Op: op, Failures: failures}
}

// api builds twilio-go's client for one attempt on one edge. The clients
// are cheap; building one per attempt gives each its context.
func (r *REST) api(edge string, at *attempt) *openapi.ApiService {
	c := &twclient.Client{
		Credentials: twclient.NewCredentials(r.s.APIKeySID, r.s.APIKeySecret),
		HTTPClient: &http.Client{
			Transport: at,
			Timeout:   r.s.Timeout,
			// As twilio-go's own client: a redirect is an answer, not followed.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	c.SetAccountSid(r.s.AccountSID)
	rc := twilio.NewRestClientWithParams(twilio.ClientParams{Client: c})
	rc.SetEdge(edge) // always set, so TWILIO_EDGE in the environment cannot override the config
	rc.SetRegion(r.s.Region)
	return rc.Api
}

// reason shortens a transport error to what an operator acts on.
func reason(err error) string {
	var se *serverError
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var netErr net.Error
	switch {
	case errors.As(err, &se):
		return se.Error()
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.As(err, &dnsErr):
		if dnsErr.IsNotFound {
			return "DNS: no such host " + dnsErr.Name
		}
		return "DNS: " + dnsErr.Err
	case errors.As(err, &certErr):
		return "TLS certificate not trusted: " + certErr.Err.Error()
	case errors.As(err, &unknownCA):
		return "TLS certificate not trusted: " + unknownCA.Error()
	case errors.As(err, &hostErr):
		return "TLS certificate not trusted: " + hostErr.Error()
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timed out"
	}
	return err.Error()
}

func (r *REST) Domains(ctx context.Context) ([]Domain, error) {
	var out []Domain
	err := r.call(ctx, "list SIP Domains", true, func(api *openapi.ApiService) error {
		ds, err := api.ListSipDomain(nil)
		if err != nil {
			return err
		}
		out = out[:0]
		for _, d := range ds {
			out = append(out, Domain{
				SID: str(d.Sid), Name: str(d.DomainName), VoiceURL: str(d.VoiceUrl),
				SIPRegistration: d.SipRegistration != nil && *d.SipRegistration,
				Secure:          d.Secure != nil && *d.Secure,
			})
		}
		return nil
	})
	return out, err
}

func (r *REST) RegistrationLists(ctx context.Context, domainSID string) ([]CredentialList, error) {
	// A registration mapping's SID is its credential list's.
	return list(ctx, r, "list the domain's registration credential lists",
		func(api *openapi.ApiService) ([]openapi.ApiV2010SipAuthRegistrationsCredentialListMapping, error) {
			return api.ListSipAuthRegistrationsCredentialListMapping(domainSID, nil)
		},
		func(m openapi.ApiV2010SipAuthRegistrationsCredentialListMapping) CredentialList {
			return CredentialList{SID: str(m.Sid), Name: str(m.FriendlyName)}
		})
}

func (r *REST) CallsLists(ctx context.Context, domainSID string) ([]CredentialList, error) {
	// As for registration, a calls mapping's SID is its list's (CL…).
	return list(ctx, r, "list the domain's calls credential lists",
		func(api *openapi.ApiService) ([]openapi.ApiV2010SipAuthCallsCredentialListMapping, error) {
			return api.ListSipAuthCallsCredentialListMapping(domainSID, nil)
		},
		func(m openapi.ApiV2010SipAuthCallsCredentialListMapping) CredentialList {
			return CredentialList{SID: str(m.Sid), Name: str(m.FriendlyName)}
		})
}

func (r *REST) CallsIPACLs(ctx context.Context, domainSID string) ([]IPACL, error) {
	return list(ctx, r, "list the domain's calls IP access control lists",
		func(api *openapi.ApiService) ([]openapi.ApiV2010SipAuthCallsIpAccessControlListMapping, error) {
			return api.ListSipAuthCallsIpAccessControlListMapping(domainSID, nil)
		},
		func(m openapi.ApiV2010SipAuthCallsIpAccessControlListMapping) IPACL {
			return IPACL{SID: str(m.Sid), Name: str(m.FriendlyName)}
		})
}

func (r *REST) CredentialLists(ctx context.Context) ([]CredentialList, error) {
	return list(ctx, r, "list credential lists",
		func(api *openapi.ApiService) ([]openapi.ApiV2010SipCredentialList, error) {
			return api.ListSipCredentialList(nil)
		},
		func(l openapi.ApiV2010SipCredentialList) CredentialList {
			return CredentialList{SID: str(l.Sid), Name: str(l.FriendlyName)}
		})
}

func (r *REST) Credentials(ctx context.Context, listSID string) ([]Credential, error) {
	return list(ctx, r, "list credentials of "+listSID,
		func(api *openapi.ApiService) ([]openapi.ApiV2010SipCredential, error) {
			return api.ListSipCredential(listSID, nil)
		},
		func(c openapi.ApiV2010SipCredential) Credential {
			return Credential{SID: str(c.Sid), Username: str(c.Username)}
		})
}

// list is one read of a REST list, retried on another edge like every
// read, each item converted with conv.
func list[M, T any](ctx context.Context, r *REST, op string, fetch func(*openapi.ApiService) ([]M, error), conv func(M) T) ([]T, error) {
	var out []T
	err := r.call(ctx, op, true, func(api *openapi.ApiService) error {
		ms, err := fetch(api)
		if err != nil {
			return err
		}
		out = out[:0]
		for _, m := range ms {
			out = append(out, conv(m))
		}
		return nil
	})
	return out, err
}

func (r *REST) CreateCredentialList(ctx context.Context, name string) (CredentialList, error) {
	var out CredentialList
	err := r.call(ctx, "create credential list", false, func(api *openapi.ApiService) error {
		l, err := api.CreateSipCredentialList((&openapi.CreateSipCredentialListParams{}).SetFriendlyName(name))
		if err != nil {
			return err
		}
		out = CredentialList{SID: str(l.Sid), Name: str(l.FriendlyName)}
		return nil
	})
	return out, err
}

func (r *REST) MapRegistrationList(ctx context.Context, domainSID, listSID string) error {
	return r.call(ctx, "map credential list for registration", false, func(api *openapi.ApiService) error {
		_, err := api.CreateSipAuthRegistrationsCredentialListMapping(domainSID,
			(&openapi.CreateSipAuthRegistrationsCredentialListMappingParams{}).SetCredentialListSid(listSID))
		return err
	})
}

func (r *REST) MapCallsList(ctx context.Context, domainSID, listSID string) error {
	return r.call(ctx, "map credential list for calls", false, func(api *openapi.ApiService) error {
		_, err := api.CreateSipAuthCallsCredentialListMapping(domainSID,
			(&openapi.CreateSipAuthCallsCredentialListMappingParams{}).SetCredentialListSid(listSID))
		return err
	})
}

func (r *REST) CreateCredential(ctx context.Context, listSID, username, password string) error {
	return r.call(ctx, "create credential", false, func(api *openapi.ApiService) error {
		_, err := api.CreateSipCredential(listSID, (&openapi.CreateSipCredentialParams{}).SetUsername(username).SetPassword(password))
		return err
	})
}

func (r *REST) SetPassword(ctx context.Context, listSID, credentialSID, password string) error {
	return r.call(ctx, "set credential password", true, func(api *openapi.ApiService) error {
		_, err := api.UpdateSipCredential(listSID, credentialSID, (&openapi.UpdateSipCredentialParams{}).SetPassword(password))
		return err
	})
}

// DeleteCredential treats "not found" after a retry on another edge as
// done: the first edge may have deleted it before failing.
func (r *REST) DeleteCredential(ctx context.Context, listSID, credentialSID string) error {
	retried := false
	return r.call(ctx, "delete credential", true, func(api *openapi.ApiService) error {
		err := api.DeleteSipCredential(listSID, credentialSID, nil)
		var te *twclient.TwilioRestError
		if retried && errors.As(err, &te) && te.Status == http.StatusNotFound {
			return nil
		}
		retried = true
		return err
	})
}

func str(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
