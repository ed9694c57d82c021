package edgesim

import (
	"errors"
	"net/http"
	"slices"
)

// restControl adds the REST API's control routes:
//
//	GET    /v1/rest                  RESTStatus (no passwords)
//	GET    /v1/rest/ca.pem           the test CA that signed the REST certificate
//	PUT    /v1/rest/edges/{edge}     {"mode":"refuse"} (up, refuse, reject, drop) → RESTStatus
//	PUT    /v1/rest/domains/{label}  {"sip_registration":false,"voice_url":"","secure":true} → RESTStatus
//	DELETE /v1/rest/domains/{label}  → RESTStatus
//	POST   /v1/rest/verify           {"user":"alice","password":"…"} → {"match":true}
//	POST   /v1/rest/reset            back to the config's seed, every edge up → RESTStatus
//
// Without a rest section in the config they answer 404, except that
// domains, verify and reset work on the store the registrar uses.
func (s *Sim) restControl(mux *http.ServeMux) {
	status := func(w http.ResponseWriter) { writeJSON(w, http.StatusOK, s.REST()) }
	mux.HandleFunc("GET /v1/rest", func(w http.ResponseWriter, r *http.Request) { status(w) })
	mux.HandleFunc("GET /v1/rest/ca.pem", func(w http.ResponseWriter, r *http.Request) {
		pem := s.RESTCAPEM()
		if pem == nil {
			writeError(w, http.StatusNotFound, ErrRESTOff)
			return
		}
		w.Header().Set("Content-Type", "application/x-pem-file")
		_, _ = w.Write(pem)
	})
	mux.HandleFunc("PUT /v1/rest/edges/{edge}", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Mode RESTMode `json:"mode"`
		}
		err := decodeBody(r, &body, false)
		if err == nil {
			err = s.SetRESTEdgeMode(r.PathValue("edge"), body.Mode)
		}
		if err != nil {
			restControlError(w, err)
			return
		}
		status(w)
	})
	mux.HandleFunc("PUT /v1/rest/domains/{label}", func(w http.ResponseWriter, r *http.Request) {
		var u RESTDomainUpdate
		if err := decodeBody(r, &u, true); err != nil {
			restControlError(w, err)
			return
		}
		if !labelRE.MatchString(r.PathValue("label")) {
			writeError(w, http.StatusBadRequest, errors.New("domain label must be a DNS label"))
			return
		}
		s.PutRESTDomain(r.PathValue("label"), u)
		status(w)
	})
	mux.HandleFunc("DELETE /v1/rest/domains/{label}", func(w http.ResponseWriter, r *http.Request) {
		if err := s.DeleteRESTDomain(r.PathValue("label")); err != nil {
			restControlError(w, err)
			return
		}
		status(w)
	})
	mux.HandleFunc("POST /v1/rest/verify", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			User     string `json:"user"`
			Password string `json:"password"`
		}
		if err := decodeBody(r, &body, false); err != nil {
			restControlError(w, err)
			return
		}
		pw, ok := s.restStore.password(body.User)
		writeJSON(w, http.StatusOK, map[string]bool{"match": ok && pw == body.Password})
	})
	mux.HandleFunc("POST /v1/rest/reset", func(w http.ResponseWriter, r *http.Request) {
		if err := s.ResetREST(); err != nil {
			restControlError(w, err)
			return
		}
		status(w)
	})
}

func restControlError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrRESTOff), errors.Is(err, ErrUnknownEdge), errors.Is(err, errRESTNotFound):
		writeError(w, http.StatusNotFound, err)
	case errors.Is(err, ErrInvalidMode), errors.Is(err, errBadBody):
		writeError(w, http.StatusBadRequest, err)
	default:
		writeError(w, http.StatusInternalServerError, err)
	}
}

// RESTStatus is the REST API and its account's SIP resources, without
// passwords.
type RESTStatus struct {
	AccountSID      string               `json:"account_sid"`
	Region          string               `json:"region,omitempty"`
	Port            int                  `json:"port,omitempty"`
	Edges           []RESTEdgeStatus     `json:"edges"`
	Domains         []RESTDomainStatus   `json:"domains"`
	CredentialLists []RESTCredListStatus `json:"credential_lists"`
	// IPAccessControlLists are the account's IP access control lists (the
	// config's rest.domain.calls_ip_access_control_lists).
	IPAccessControlLists []RESTIPACLStatus `json:"ip_access_control_lists"`
}

// RESTDomainStatus is one SIP Domain.
type RESTDomainStatus struct {
	SID             string `json:"sid"`
	DomainName      string `json:"domain_name"`
	SIPRegistration bool   `json:"sip_registration"`
	VoiceURL        string `json:"voice_url"`
	Secure          bool   `json:"secure"`
	// RegistrationLists are the SIDs of the credential lists mapped for
	// registration, in mapping order.
	RegistrationLists []string `json:"registration_lists"`
	// CallsLists are the SIDs of the credential lists mapped for calls
	// (Voice Authentication), in mapping order.
	CallsLists []string `json:"calls_lists"`
	// CallsIPACLs are the SIDs of the IP access control lists mapped for
	// calls.
	CallsIPACLs []string `json:"calls_ip_access_control_lists"`
}

// RESTIPACLStatus is one IP access control list.
type RESTIPACLStatus struct {
	SID          string `json:"sid"`
	FriendlyName string `json:"friendly_name"`
}

// RESTCredListStatus is one credential list and its user names.
type RESTCredListStatus struct {
	SID          string   `json:"sid"`
	FriendlyName string   `json:"friendly_name"`
	Usernames    []string `json:"usernames"`
}

// REST reports the REST API and the account's SIP resources.
func (s *Sim) REST() RESTStatus {
	st := RESTStatus{AccountSID: s.restStore.accountSID(), Edges: []RESTEdgeStatus{}, Domains: []RESTDomainStatus{},
		CredentialLists: []RESTCredListStatus{}, IPAccessControlLists: []RESTIPACLStatus{}}
	if s.rest != nil {
		st.Region = s.cfg.REST.Region
		st.Port = s.RESTPort()
		st.Edges = s.rest.edgeStatus()
	}
	for _, d := range s.restStore.listDomains() {
		st.Domains = append(st.Domains, RESTDomainStatus{
			SID: d.sid, DomainName: d.name, SIPRegistration: d.sipRegistration, VoiceURL: d.voiceURL,
			Secure: d.secure, RegistrationLists: slices.Clone(d.regLists),
			CallsLists: append([]string{}, d.callLists...), CallsIPACLs: append([]string{}, d.callACLs...),
		})
	}
	for _, l := range s.restStore.listLists() {
		cl := RESTCredListStatus{SID: l.sid, FriendlyName: l.name, Usernames: []string{}}
		for _, c := range l.users {
			cl.Usernames = append(cl.Usernames, c.username)
		}
		st.CredentialLists = append(st.CredentialLists, cl)
	}
	for _, acl := range s.restStore.listACLs() {
		st.IPAccessControlLists = append(st.IPAccessControlLists, RESTIPACLStatus{SID: acl.sid, FriendlyName: acl.name})
	}
	return st
}

// RESTPort is the port every edge's REST listener uses (after Ready), or 0
// without a rest section.
func (s *Sim) RESTPort() int {
	if s.rest == nil {
		return 0
	}
	s.rest.mu.Lock()
	defer s.rest.mu.Unlock()
	return s.rest.port
}

// RESTCAPEM is the PEM of the CA that signed the REST certificate, or nil
// without a rest section.
func (s *Sim) RESTCAPEM() []byte {
	if s.rest == nil {
		return nil
	}
	return slices.Clone(s.rest.caPEM)
}

// SetRESTEdgeMode switches one edge's REST listener.
func (s *Sim) SetRESTEdgeMode(edge string, m RESTMode) error {
	if s.rest == nil {
		return ErrRESTOff
	}
	return s.rest.setMode(edge, m)
}

// PutRESTDomain creates or changes the SIP Domain <label>.sip.twilio.com.
func (s *Sim) PutRESTDomain(label string, u RESTDomainUpdate) { s.restStore.putDomain(label, u) }

// DeleteRESTDomain removes the SIP Domain <label>.sip.twilio.com; its
// credential lists stay.
func (s *Sim) DeleteRESTDomain(label string) error { return s.restStore.deleteDomain(label) }

// RESTPassword reports the password of user in the credential list named
// list, for tests that check what was set through the API (which, like
// Twilio's, never returns passwords).
func (s *Sim) RESTPassword(list, user string) (string, bool) {
	return s.restStore.passwordOf(list, user)
}

// ResetREST puts the account back to the config's seed, every REST edge up
// and their counters at zero.
func (s *Sim) ResetREST() error {
	s.restStore.reset()
	if s.rest == nil {
		return nil
	}
	return s.rest.reset()
}
