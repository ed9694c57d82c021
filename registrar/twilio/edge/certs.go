package edge

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// CertError is an edge IP's TLS certificate failing verification for the
// edge's FQDN: expired, issued for another name, or by an authority that is
// not trusted. Its message says which, for a person reading /v1/status:
// "tls: certificate for x.sip.ashburn.twilio.com expired at 2026-01-02T03:04:05Z".
// The Monitor counts it as the IP being down (class "tls"), so failover
// moves on at once instead of waiting for a timeout.
type CertError struct {
	FQDN string
	// Reason is the sentence after "tls: ".
	Reason string
	// Err is the verification error from crypto/x509.
	Err error
}

func (e *CertError) Error() string { return "tls: " + e.Reason }

func (e *CertError) Unwrap() error { return e.Err }

// verifyEdge checks the chain an edge IP presented against roots (nil: the
// system roots) for fqdn, as crypto/tls would, but explains a failure in
// words (see CertError).
func verifyEdge(cs tls.ConnectionState, fqdn string, roots *x509.CertPool, now time.Time) error {
	if len(cs.PeerCertificates) == 0 {
		return &CertError{FQDN: fqdn, Reason: fmt.Sprintf("%s presented no certificate", fqdn), Err: errors.New("no peer certificate")}
	}
	leaf := cs.PeerCertificates[0]
	opts := x509.VerifyOptions{DNSName: fqdn, Roots: roots, Intermediates: x509.NewCertPool(), CurrentTime: now}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := leaf.Verify(opts); err != nil {
		return explainCert(fqdn, leaf, err, now)
	}
	return nil
}

// explainCert turns a crypto/x509 verification error into a CertError.
func explainCert(fqdn string, leaf *x509.Certificate, err error, now time.Time) *CertError {
	ce := &CertError{FQDN: fqdn, Err: err}
	var invalid x509.CertificateInvalidError
	var host x509.HostnameError
	var unknown x509.UnknownAuthorityError
	switch {
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		which := "certificate for " + fqdn
		c := invalid.Cert
		if c == nil {
			c = leaf
		}
		if c != leaf {
			which = fmt.Sprintf("certificate of %q in the chain for %s", clip(c.Subject.CommonName), fqdn)
		}
		// No "now" in the text: the reason must stay the same from one
		// probe to the next, or it would be logged every time.
		if now.Before(c.NotBefore) {
			ce.Reason = fmt.Sprintf("%s is not valid before %s", which, utc(c.NotBefore))
		} else {
			ce.Reason = fmt.Sprintf("%s expired at %s", which, utc(c.NotAfter))
		}
	case errors.As(err, &host):
		ce.Reason = fmt.Sprintf("certificate is for %s, not %s", certNames(leaf), fqdn)
	case errors.As(err, &unknown):
		ce.Reason = fmt.Sprintf("certificate for %s is signed by an unknown authority (issuer %q): not in the system roots or twilio.ca_file",
			fqdn, clip(leaf.Issuer.CommonName))
	default:
		ce.Reason = fmt.Sprintf("certificate for %s failed verification: %v", fqdn, err)
	}
	return ce
}

func utc(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// certNames lists the names a certificate is for: its DNS names and IP
// addresses, or its common name when it has neither; at most four.
func certNames(c *x509.Certificate) string {
	names := make([]string, 0, len(c.DNSNames)+len(c.IPAddresses))
	for _, n := range c.DNSNames {
		names = append(names, shown(n))
	}
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 && c.Subject.CommonName != "" {
		names = []string{shown(c.Subject.CommonName)}
	}
	if len(names) == 0 {
		return "no name"
	}
	if len(names) > 4 {
		return strings.Join(names[:4], ", ") + fmt.Sprintf(" (and %d more)", len(names)-4)
	}
	return strings.Join(names, ", ")
}

// maxShown bounds one name from a certificate in a reason.
const maxShown = 80

// clip bounds a name taken from a peer's certificate: whoever presents the
// certificate chooses it. Put it in text with %q, which escapes control
// characters.
func clip(name string) string {
	if len(name) > maxShown {
		return name[:maxShown] + "…"
	}
	return name
}

// shown is clip for a name listed without quotes: one that holds anything
// but plain printable text is quoted after all.
func shown(name string) string {
	name = clip(name)
	if q := strconv.Quote(name); q[1:len(q)-1] != name || strings.ContainsAny(name, " ,") {
		return q
	}
	return name
}
