package provision

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// newTransport is the HTTP transport every edge shares: *.twilio.com names
// resolve through dnsServer when set and are dialled on port (when not 0)
// instead of the URL's 443; other hosts (an HTTPS proxy) are dialled as
// given. TLS trusts the system roots plus caPEM.
func newTransport(dnsServer string, port int, caPEM []byte) (*http.Transport, error) {
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if len(caPEM) > 0 && !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("the CA file holds no PEM certificate")
	}
	plain := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	twilioDialer := &net.Dialer{Timeout: plain.Timeout, KeepAlive: plain.KeepAlive}
	if dnsServer != "" {
		twilioDialer.Resolver = &net.Resolver{
			PreferGo: true,
			Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return plain.DialContext(ctx, network, dnsServer)
			},
		}
	}
	return &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, p, err := net.SplitHostPort(addr)
			if err != nil || !strings.HasSuffix(strings.ToLower(host), ".twilio.com") {
				return plain.DialContext(ctx, network, addr)
			}
			if port != 0 {
				p = strconv.Itoa(port)
			}
			return twilioDialer.DialContext(ctx, network, net.JoinHostPort(host, p))
		},
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       30 * time.Second,
	}, nil
}

// attempt is the RoundTripper of one operation on one edge. twilio-go
// builds its requests without a context, so attempt gives them the
// operation's; it notes whether a request went out (after which a create
// may have happened even if no answer came back), and turns a 5xx answer
// into a serverError, which moves the operation to the next edge where a
// 4xx does not.
type attempt struct {
	ctx    context.Context
	base   http.RoundTripper
	sent   atomic.Bool
	status atomic.Int32 // of the last answer
}

func (a *attempt) RoundTrip(req *http.Request) (*http.Response, error) {
	trace := &httptrace.ClientTrace{WroteHeaders: func() { a.sent.Store(true) }}
	resp, err := a.base.RoundTrip(req.WithContext(httptrace.WithClientTrace(a.ctx, trace)))
	if err != nil {
		return nil, err
	}
	a.status.Store(int32(resp.StatusCode))
	if resp.StatusCode < 500 {
		// twilio-go decodes whatever comes; a page of 1,000 credentials is
		// well under 1 MiB, so an endless body is not Twilio's.
		resp.Body = http.MaxBytesReader(nil, resp.Body, maxBody)
		return resp, nil
	}
	defer resp.Body.Close()
	se := &serverError{Status: resp.StatusCode}
	var body struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	if json.NewDecoder(io.LimitReader(resp.Body, 4<<10)).Decode(&body) == nil {
		se.Code, se.Message = body.Code, body.Message
	}
	return nil, se
}

// maxBody bounds one response body.
const maxBody = 32 << 20

// serverError is a 5xx answer.
type serverError struct {
	Status  int
	Code    int
	Message string
}

func (e *serverError) Error() string {
	s := strconv.Itoa(e.Status) + " " + http.StatusText(e.Status)
	if e.Code != 0 || e.Message != "" {
		s += fmt.Sprintf(" (code %d: %s)", e.Code, e.Message)
	}
	return s
}
