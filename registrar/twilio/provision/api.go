package provision

import (
	"context"
	"fmt"
	"strings"
)

// API is the part of Twilio's REST API that provisioning uses. REST
// implements it with twilio-go; every method may be retried on another
// edge, so each is either a read or a single change.
type API interface {
	// Domains lists the account's SIP Domains.
	Domains(ctx context.Context) ([]Domain, error)
	// RegistrationLists lists the credential lists mapped to a domain for
	// registration, in mapping order.
	RegistrationLists(ctx context.Context, domainSID string) ([]CredentialList, error)
	// CallsLists lists the credential lists mapped to a domain for calls
	// (its Voice Authentication), in mapping order.
	CallsLists(ctx context.Context, domainSID string) ([]CredentialList, error)
	// CallsIPACLs lists the IP access control lists mapped to a domain for
	// calls.
	CallsIPACLs(ctx context.Context, domainSID string) ([]IPACL, error)
	// CredentialLists lists the account's credential lists.
	CredentialLists(ctx context.Context) ([]CredentialList, error)
	// Credentials lists the credentials of one list.
	Credentials(ctx context.Context, listSID string) ([]Credential, error)
	CreateCredentialList(ctx context.Context, name string) (CredentialList, error)
	// MapRegistrationList maps a list to a domain for registration.
	MapRegistrationList(ctx context.Context, domainSID, listSID string) error
	// MapCallsList maps a list to a domain for calls.
	MapCallsList(ctx context.Context, domainSID, listSID string) error
	CreateCredential(ctx context.Context, listSID, username, password string) error
	SetPassword(ctx context.Context, listSID, credentialSID, password string) error
	DeleteCredential(ctx context.Context, listSID, credentialSID string) error
}

// Domain is what provisioning reads of a SIP Domain.
type Domain struct {
	SID             string
	Name            string // <label>.sip.twilio.com
	SIPRegistration bool
	VoiceURL        string
	Secure          bool // Secure Media: TLS and SRTP required
}

// CredentialList is a credential list's identity.
type CredentialList struct {
	SID  string
	Name string // its friendly name
}

// IPACL is an IP access control list's identity.
type IPACL struct {
	SID  string
	Name string // its friendly name
}

// Credential is one user of a credential list (Twilio never returns the
// password).
type Credential struct {
	SID      string
	Username string
}

// Want is what the config asks of the domain.
type Want struct {
	// Domain is twilio.domain, the first label of <label>.sip.twilio.com.
	Domain string
	// Phones are the users edgewise registers upstream, in config order.
	Phones []Phone
	// MediaEncryption is twilio.media_encryption: "none" or "srtp".
	MediaEncryption string
}

// Phone is one phone's Twilio identity.
type Phone struct {
	User       string // the local user, for messages
	TwilioUser string
	Password   string // twilio_password
	// At locates the phone in the config for problems, e.g.
	// "edgewise.yaml:31: phones[2]"; "" names it by User.
	At string
}

// where prefixes a problem about field of p.
func (p Phone) where(field string) string {
	if p.At == "" {
		return "phone " + p.User + ": " + field
	}
	return p.At + "." + field + " (" + p.User + ")"
}

// DomainName is the domain's full name, <label>.sip.twilio.com.
func (w Want) DomainName() string { return w.Domain + ".sip.twilio.com" }

// syncTarget is the list Sync creates missing users in, of the lists
// mapped for registration: the one named name, else the first; nil when
// none is mapped.
func syncTarget(lists []CredentialList, name string) *CredentialList {
	for i := range lists {
		if lists[i].Name == name {
			return &lists[i]
		}
	}
	if len(lists) > 0 {
		return &lists[0]
	}
	return nil
}

// listNames gives the lists' names quoted, `"a", "b"`, for messages.
func listNames(ls []CredentialList) string {
	names := make([]string, len(ls))
	for i, l := range ls {
		names[i] = fmt.Sprintf("%q", l.Name)
	}
	return strings.Join(names, ", ")
}

// aclNames is listNames for IP access control lists.
func aclNames(acls []IPACL) string {
	names := make([]string, len(acls))
	for i, a := range acls {
		names[i] = fmt.Sprintf("%q", a.Name)
	}
	return strings.Join(names, ", ")
}

// findDomain picks the wanted domain from the account's.
func findDomain(ctx context.Context, api API, want Want) (Domain, bool, error) {
	ds, err := api.Domains(ctx)
	if err != nil {
		return Domain{}, false, err
	}
	for _, d := range ds {
		if strings.EqualFold(d.Name, want.DomainName()) {
			return d, true, nil
		}
	}
	return Domain{}, false, nil
}
