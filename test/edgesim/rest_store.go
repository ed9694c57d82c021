package edgesim

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// The store's errors; the REST API maps them to Twilio's error bodies.
var (
	errRESTNotFound  = errors.New("not found")
	errRESTDuplicate = errors.New("already exists")
	errRESTInvalid   = errors.New("invalid parameter")
)

// seedListName is the credential list the config's credentials seed.
const seedListName = "edgesim"

// restStore is the account's SIP resources. It exists whether or not the
// REST API is served: the registrar and the call handler authenticate
// against the credential lists mapped to the domain for registration, so
// what `edgewise twilio sync` changes is what REGISTER and INVITE see.
type restStore struct {
	cfg   Config
	clock func() time.Time

	mu      sync.Mutex
	account string
	domains []*restDomain // in creation order
	lists   []*restList
	acls    []*restACL
}

type restDomain struct {
	sid, name, friendly string // name is the full <label>.sip.twilio.com
	voiceURL            string
	sipRegistration     bool
	secure              bool
	regLists            []string // credential list SIDs mapped for registration, in mapping order
	callLists           []string // credential list SIDs mapped for calls (Voice Authentication)
	callACLs            []string // IP access control list SIDs mapped for calls
	created, updated    time.Time
}

// restAuth says which of a domain's credential list mappings a request
// names: Auth/Registrations or Auth/Calls.
type restAuth int

const (
	authRegistrations restAuth = iota
	authCalls
)

func (a restAuth) String() string {
	if a == authCalls {
		return "calls"
	}
	return "registration"
}

// mapped is the domain's list of credential list SIDs for a.
func (d *restDomain) mapped(a restAuth) *[]string {
	if a == authCalls {
		return &d.callLists
	}
	return &d.regLists
}

func (d *restDomain) clone() restDomain {
	c := *d
	c.regLists = slices.Clone(d.regLists)
	c.callLists = slices.Clone(d.callLists)
	c.callACLs = slices.Clone(d.callACLs)
	return c
}

// restACL is an IP access control list. edgesim keeps only its identity:
// no addresses, since the SIP side does not filter calls by address.
type restACL struct {
	sid, name        string
	created, updated time.Time
}

type restList struct {
	sid, name        string
	creds            []*restCredential          // in creation order
	byUser           map[string]*restCredential // every REGISTER and INVITE looks here
	created, updated time.Time
}

func newRESTList(name string, now time.Time) *restList {
	return &restList{sid: newSID("CL"), name: name, byUser: map[string]*restCredential{}, created: now, updated: now}
}

func (l *restList) add(c *restCredential) {
	l.creds = append(l.creds, c)
	l.byUser[c.username] = c
}

type restCredential struct {
	sid, username, password string
	created, updated        time.Time
}

func newRESTStore(cfg Config, clock func() time.Time) *restStore {
	st := &restStore{cfg: cfg, clock: clock}
	st.reset()
	return st
}

// reset puts the store back to what the config seeds: the domain and one
// credential list with the configured credentials, mapped for registration
// and (unless the config says not) for calls, plus the configured IP
// access control lists mapped for calls.
func (st *restStore) reset() {
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.clock()
	st.account = "AC" + zeros32
	dc := RESTDomainConfig{}
	if st.cfg.REST != nil {
		st.account = st.cfg.REST.AccountSID
		dc = st.cfg.REST.Domain
	}
	st.domains, st.lists, st.acls = nil, nil, nil
	l := newRESTList(seedListName, now)
	for _, c := range st.cfg.Credentials {
		l.add(&restCredential{sid: newSID("CR"), username: c.User, password: c.Password, created: now, updated: now})
	}
	st.lists = append(st.lists, l)
	d := &restDomain{
		sid: newSID("SD"), name: st.cfg.Domain + ".sip.twilio.com", friendly: st.cfg.Domain,
		voiceURL: dc.VoiceURL, sipRegistration: dc.SIPRegistration == nil || *dc.SIPRegistration, secure: dc.Secure,
		regLists: []string{l.sid}, created: now, updated: now,
	}
	if dc.CallsCredentialList == nil || *dc.CallsCredentialList {
		d.callLists = []string{l.sid}
	}
	for _, name := range dc.CallsIPACLs {
		acl := &restACL{sid: newSID("AL"), name: name, created: now, updated: now}
		st.acls = append(st.acls, acl)
		d.callACLs = append(d.callACLs, acl.sid)
	}
	st.domains = append(st.domains, d)
}

const zeros32 = "00000000000000000000000000000000"

func (st *restStore) accountSID() string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.account
}

// newSID makes a Twilio-style SID: two letters and 32 hex digits.
func newSID(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// password finds user in the lists mapped for registration to the
// configured domain; the match is exact, case included, as Twilio's is.
func (st *restStore) password(user string) (string, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	d := st.domainByNameLocked(st.cfg.Domain + ".sip.twilio.com")
	if d == nil {
		return "", false
	}
	for _, sid := range d.regLists {
		if l := st.listLocked(sid); l != nil {
			if c := l.credLocked(user); c != nil {
				return c.password, true
			}
		}
	}
	return "", false
}

func (st *restStore) domainByNameLocked(name string) *restDomain {
	for _, d := range st.domains {
		if d.name == name {
			return d
		}
	}
	return nil
}

func (st *restStore) domainLocked(sid string) *restDomain {
	for _, d := range st.domains {
		if d.sid == sid {
			return d
		}
	}
	return nil
}

func (st *restStore) listLocked(sid string) *restList {
	for _, l := range st.lists {
		if l.sid == sid {
			return l
		}
	}
	return nil
}

func (l *restList) credLocked(user string) *restCredential { return l.byUser[user] }

// domains returns copies of every domain.
func (st *restStore) listDomains() []restDomain {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]restDomain, 0, len(st.domains))
	for _, d := range st.domains {
		out = append(out, d.clone())
	}
	return out
}

func (st *restStore) domain(sid string) (restDomain, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	d := st.domainLocked(sid)
	if d == nil {
		return restDomain{}, errRESTNotFound
	}
	return d.clone(), nil
}

// RESTDomainUpdate changes a domain through the control API; nil fields
// stay as they are. A domain that does not exist is created (SIP
// registration on unless set).
type RESTDomainUpdate struct {
	SIPRegistration *bool   `json:"sip_registration,omitempty"`
	VoiceURL        *string `json:"voice_url,omitempty"`
	Secure          *bool   `json:"secure,omitempty"`
}

func (st *restStore) putDomain(label string, u RESTDomainUpdate) {
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.clock()
	d := st.domainByNameLocked(label + ".sip.twilio.com")
	if d == nil {
		d = &restDomain{sid: newSID("SD"), name: label + ".sip.twilio.com", friendly: label, sipRegistration: true, created: now}
		st.domains = append(st.domains, d)
	}
	if u.SIPRegistration != nil {
		d.sipRegistration = *u.SIPRegistration
	}
	if u.VoiceURL != nil {
		d.voiceURL = *u.VoiceURL
	}
	if u.Secure != nil {
		d.secure = *u.Secure
	}
	d.updated = now
}

func (st *restStore) deleteDomain(label string) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	for i, d := range st.domains {
		if d.name == label+".sip.twilio.com" {
			st.domains = slices.Delete(st.domains, i, i+1)
			return nil
		}
	}
	return errRESTNotFound
}

// restListView is a credential list without passwords.
type restListView struct {
	sid, name        string
	users            []restCredView
	created, updated time.Time
}

type restCredView struct {
	sid, username    string
	created, updated time.Time
}

func (l *restList) view() restListView {
	v := restListView{sid: l.sid, name: l.name, created: l.created, updated: l.updated}
	for _, c := range l.creds {
		v.users = append(v.users, restCredView{sid: c.sid, username: c.username, created: c.created, updated: c.updated})
	}
	return v
}

func (st *restStore) listLists() []restListView {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]restListView, 0, len(st.lists))
	for _, l := range st.lists {
		out = append(out, l.view())
	}
	return out
}

func (st *restStore) list(sid string) (restListView, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	l := st.listLocked(sid)
	if l == nil {
		return restListView{}, errRESTNotFound
	}
	return l.view(), nil
}

func (st *restStore) createList(name string) (restListView, error) {
	if name == "" || len(name) > 64 {
		return restListView{}, fmt.Errorf("%w: FriendlyName must be 1 to 64 characters", errRESTInvalid)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.clock()
	l := newRESTList(name, now)
	st.lists = append(st.lists, l)
	return l.view(), nil
}

// mapList maps a credential list to a domain for registration or calls.
func (st *restStore) mapList(a restAuth, domainSID, listSID string) (restListView, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	d := st.domainLocked(domainSID)
	if d == nil {
		return restListView{}, errRESTNotFound
	}
	l := st.listLocked(listSID)
	if l == nil {
		return restListView{}, fmt.Errorf("%w: CredentialListSid %s is not a credential list of this account", errRESTInvalid, listSID)
	}
	m := d.mapped(a)
	if slices.Contains(*m, listSID) {
		return restListView{}, fmt.Errorf("%w: credential list %s is already mapped for %s", errRESTDuplicate, listSID, a)
	}
	*m = append(*m, listSID)
	d.updated = st.clock()
	return l.view(), nil
}

func (st *restStore) unmapList(a restAuth, domainSID, listSID string) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	d := st.domainLocked(domainSID)
	if d == nil {
		return errRESTNotFound
	}
	m := d.mapped(a)
	i := slices.Index(*m, listSID)
	if i < 0 {
		return errRESTNotFound
	}
	*m = slices.Delete(*m, i, i+1)
	d.updated = st.clock()
	return nil
}

// mappedLists returns the lists mapped to a domain for registration or
// calls, in mapping order.
func (st *restStore) mappedLists(a restAuth, domainSID string) ([]restListView, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	d := st.domainLocked(domainSID)
	if d == nil {
		return nil, errRESTNotFound
	}
	out := []restListView{}
	for _, sid := range *d.mapped(a) {
		if l := st.listLocked(sid); l != nil {
			out = append(out, l.view())
		}
	}
	return out, nil
}

// restACLView is an IP access control list as the API shows it.
type restACLView struct {
	sid, name        string
	created, updated time.Time
}

// callACLs returns the IP access control lists mapped to a domain for
// calls, in mapping order.
func (st *restStore) callACLs(domainSID string) ([]restACLView, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	d := st.domainLocked(domainSID)
	if d == nil {
		return nil, errRESTNotFound
	}
	out := []restACLView{}
	for _, sid := range d.callACLs {
		for _, acl := range st.acls {
			if acl.sid == sid {
				out = append(out, restACLView{sid: acl.sid, name: acl.name, created: acl.created, updated: acl.updated})
			}
		}
	}
	return out, nil
}

func (st *restStore) listACLs() []restACLView {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]restACLView, 0, len(st.acls))
	for _, acl := range st.acls {
		out = append(out, restACLView{sid: acl.sid, name: acl.name, created: acl.created, updated: acl.updated})
	}
	return out
}

func (st *restStore) createCredential(listSID, user, password string) (restCredView, error) {
	if !userRE.MatchString(user) || len(user) > 32 {
		return restCredView{}, fmt.Errorf("%w: Username must be 1 to 32 characters allowed in a SIP user", errRESTInvalid)
	}
	if err := checkTwilioPassword(password); err != nil {
		return restCredView{}, fmt.Errorf("%w: Password %v", errRESTInvalid, err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	l := st.listLocked(listSID)
	if l == nil {
		return restCredView{}, errRESTNotFound
	}
	if l.credLocked(user) != nil {
		return restCredView{}, fmt.Errorf("%w: a credential with Username %s is already in this list", errRESTDuplicate, user)
	}
	now := st.clock()
	c := &restCredential{sid: newSID("CR"), username: user, password: password, created: now, updated: now}
	l.add(c)
	l.updated = now
	return restCredView{sid: c.sid, username: c.username, created: now, updated: now}, nil
}

func (st *restStore) updateCredential(listSID, sid, password string) (restCredView, error) {
	if err := checkTwilioPassword(password); err != nil {
		return restCredView{}, fmt.Errorf("%w: Password %v", errRESTInvalid, err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	l := st.listLocked(listSID)
	if l == nil {
		return restCredView{}, errRESTNotFound
	}
	for _, c := range l.creds {
		if c.sid == sid {
			c.password = password
			c.updated = st.clock()
			return restCredView{sid: c.sid, username: c.username, created: c.created, updated: c.updated}, nil
		}
	}
	return restCredView{}, errRESTNotFound
}

func (st *restStore) deleteCredential(listSID, sid string) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	l := st.listLocked(listSID)
	if l == nil {
		return errRESTNotFound
	}
	for i, c := range l.creds {
		if c.sid == sid {
			l.creds = slices.Delete(l.creds, i, i+1)
			delete(l.byUser, c.username)
			l.updated = st.clock()
			return nil
		}
	}
	return errRESTNotFound
}

func (st *restStore) credential(listSID, sid string) (restCredView, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	l := st.listLocked(listSID)
	if l == nil {
		return restCredView{}, errRESTNotFound
	}
	for _, c := range l.creds {
		if c.sid == sid {
			return restCredView{sid: c.sid, username: c.username, created: c.created, updated: c.updated}, nil
		}
	}
	return restCredView{}, errRESTNotFound
}

// passwordOf reports a credential's password, for tests that check what
// a sync set (the REST API never shows passwords, as Twilio's does not).
func (st *restStore) passwordOf(listName, user string) (string, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, l := range st.lists {
		if l.name == listName {
			if c := l.credLocked(user); c != nil {
				return c.password, true
			}
		}
	}
	return "", false
}
