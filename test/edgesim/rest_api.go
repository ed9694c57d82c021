package edgesim

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// restAPI serves the SIP Domain subset of Twilio's 2010-04-01 REST API for
// one account, from the shared store:
//
//	GET  …/SIP/Domains.json                                         list domains
//	GET  …/SIP/Domains/{SD}.json                                    fetch a domain
//	GET  …/SIP/Domains/{SD}/Auth/Registrations/CredentialListMappings.json   list
//	POST …/SIP/Domains/{SD}/Auth/Registrations/CredentialListMappings.json   CredentialListSid=CL…
//	GET|DELETE …/CredentialListMappings/{CL}.json
//	GET|POST …/SIP/Domains/{SD}/Auth/Calls/CredentialListMappings.json       the same, for calls
//	GET|DELETE …/Auth/Calls/CredentialListMappings/{CL}.json
//	GET  …/SIP/Domains/{SD}/Auth/Calls/IpAccessControlListMappings.json     list (seeded by the config)
//	GET  …/Auth/Calls/IpAccessControlListMappings/{AL}.json
//	GET|POST …/SIP/CredentialLists.json                             list, create (FriendlyName)
//	GET  …/SIP/CredentialLists/{CL}.json
//	GET|POST …/SIP/CredentialLists/{CL}/Credentials.json            list, create (Username, Password)
//	GET|POST|DELETE …/SIP/CredentialLists/{CL}/Credentials/{CR}.json   fetch, update (Password), delete
//
// where … is /2010-04-01/Accounts/{AC}. Requests authenticate with HTTP
// Basic: an API key SID and its secret. Lists page with PageSize and Page.
// Passwords are accepted, never returned.
type restAPI struct {
	st   *restStore
	keys map[string]string // API key SID → secret
}

const restAPIPrefix = "/2010-04-01/Accounts/"

// Twilio's error codes for what edgesim refuses. 20003 (authenticate) and
// 20404 (not found) are Twilio's; for invalid parameters and duplicates
// edgesim answers 400 with code 21xxx-like numbers of its own choosing.
const (
	codeAuthenticate = 20003
	codeNotFound     = 20404
	codeInvalid      = 21201
	codeDuplicate    = 21450
)

// restMaxBody bounds a request body; the API takes a few form fields.
const restMaxBody = 64 << 10

func (a *restAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sid, secret, ok := r.BasicAuth()
	want, known := a.keys[sid]
	if !ok || !known || subtle.ConstantTimeCompare([]byte(secret), []byte(want)) != 1 {
		w.Header().Set("WWW-Authenticate", `Basic realm="Twilio API"`)
		restError(w, http.StatusUnauthorized, codeAuthenticate, "Authenticate")
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, restAPIPrefix)
	if !ok {
		a.notFound(w, r)
		return
	}
	account, rest, _ := strings.Cut(rest, "/")
	if account != a.st.accountSID() {
		a.notFound(w, r)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, restMaxBody)
	if err := r.ParseForm(); err != nil {
		restError(w, http.StatusBadRequest, codeInvalid, "request body: "+err.Error())
		return
	}
	base := restAPIPrefix + account + "/"
	for _, rt := range a.routes() {
		if args, ok := matchPath(rt.pattern, rest); ok {
			h, ok := rt.methods[r.Method]
			if !ok {
				w.Header().Set("Allow", strings.Join(sortedKeys(rt.methods), ", "))
				restError(w, http.StatusMethodNotAllowed, codeInvalid, "method "+r.Method+" not allowed")
				return
			}
			h(w, r, base, args)
			return
		}
	}
	a.notFound(w, r)
}

type restHandler func(w http.ResponseWriter, r *http.Request, base string, args []string)

type restRoute struct {
	pattern string // segments; "*" captures one, "*.json" captures one ending in .json
	methods map[string]restHandler
}

func (a *restAPI) routes() []restRoute {
	return []restRoute{
		{"SIP/Domains.json", map[string]restHandler{"GET": a.listDomains}},
		{"SIP/Domains/*.json", map[string]restHandler{"GET": a.fetchDomain}},
		{"SIP/Domains/*/Auth/Registrations/CredentialListMappings.json", map[string]restHandler{
			"GET": a.listMappings(authRegistrations), "POST": a.createMapping(authRegistrations)}},
		{"SIP/Domains/*/Auth/Registrations/CredentialListMappings/*.json", map[string]restHandler{
			"GET": a.fetchMapping(authRegistrations), "DELETE": a.deleteMapping(authRegistrations)}},
		{"SIP/Domains/*/Auth/Calls/CredentialListMappings.json", map[string]restHandler{
			"GET": a.listMappings(authCalls), "POST": a.createMapping(authCalls)}},
		{"SIP/Domains/*/Auth/Calls/CredentialListMappings/*.json", map[string]restHandler{
			"GET": a.fetchMapping(authCalls), "DELETE": a.deleteMapping(authCalls)}},
		{"SIP/Domains/*/Auth/Calls/IpAccessControlListMappings.json", map[string]restHandler{"GET": a.listACLMappings}},
		{"SIP/Domains/*/Auth/Calls/IpAccessControlListMappings/*.json", map[string]restHandler{"GET": a.fetchACLMapping}},
		{"SIP/CredentialLists.json", map[string]restHandler{"GET": a.listLists, "POST": a.createList}},
		{"SIP/CredentialLists/*.json", map[string]restHandler{"GET": a.fetchList}},
		{"SIP/CredentialLists/*/Credentials.json", map[string]restHandler{"GET": a.listCredentials, "POST": a.createCredential}},
		{"SIP/CredentialLists/*/Credentials/*.json", map[string]restHandler{"GET": a.fetchCredential, "POST": a.updateCredential, "DELETE": a.deleteCredential}},
	}
}

// matchPath matches path against pattern segment by segment.
func matchPath(pattern, path string) ([]string, bool) {
	ps, xs := strings.Split(pattern, "/"), strings.Split(path, "/")
	if len(ps) != len(xs) {
		return nil, false
	}
	var args []string
	for i, p := range ps {
		x := xs[i]
		switch {
		case p == "*" && x != "":
			args = append(args, x)
		case p == "*.json":
			v, ok := strings.CutSuffix(x, ".json")
			if !ok || v == "" {
				return nil, false
			}
			args = append(args, v)
		case p != x:
			return nil, false
		}
	}
	return args, true
}

func (a *restAPI) notFound(w http.ResponseWriter, r *http.Request) {
	restError(w, http.StatusNotFound, codeNotFound, "The requested resource "+r.URL.Path+" was not found")
}

// fail maps a store error to Twilio's error body.
func (a *restAPI) fail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, errRESTNotFound):
		a.notFound(w, r)
	case errors.Is(err, errRESTDuplicate):
		restError(w, http.StatusBadRequest, codeDuplicate, err.Error())
	case errors.Is(err, errRESTInvalid):
		restError(w, http.StatusBadRequest, codeInvalid, err.Error())
	default:
		restError(w, http.StatusInternalServerError, 20500, err.Error())
	}
}

func restError(w http.ResponseWriter, status, code int, msg string) {
	writeJSONCompact(w, status, map[string]any{
		"code": code, "message": msg, "status": status,
		"more_info": fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code),
	})
}

func writeJSONCompact(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// rfc2822 is how Twilio writes dates.
func rfc2822(t time.Time) string { return t.UTC().Format("Mon, 02 Jan 2006 15:04:05 -0700") }

func (a *restAPI) domainJSON(base string, d restDomain) map[string]any {
	uri := base + "SIP/Domains/" + d.sid
	authType := ""
	if len(d.regLists) > 0 {
		authType = "CREDENTIAL_LIST"
	}
	return map[string]any{
		"sid": d.sid, "account_sid": a.st.accountSID(), "api_version": "2010-04-01",
		"domain_name": d.name, "friendly_name": d.friendly, "auth_type": authType,
		"voice_url": nullable(d.voiceURL), "voice_method": "POST",
		"voice_fallback_url": nil, "voice_fallback_method": "POST",
		"voice_status_callback_url": nil, "voice_status_callback_method": "POST",
		"sip_registration": d.sipRegistration, "secure": d.secure, "emergency_calling_enabled": false,
		"byoc_trunk_sid": nil, "emergency_caller_sid": nil,
		"date_created": rfc2822(d.created), "date_updated": rfc2822(d.updated), "uri": uri + ".json",
		"subresource_uris": map[string]string{
			"credential_list_mappings":        uri + "/CredentialListMappings.json",
			"ip_access_control_list_mappings": uri + "/IpAccessControlListMappings.json",
		},
	}
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func (a *restAPI) listJSON(base string, l restListView) map[string]any {
	uri := base + "SIP/CredentialLists/" + l.sid
	return map[string]any{
		"sid": l.sid, "account_sid": a.st.accountSID(), "friendly_name": l.name,
		"date_created": rfc2822(l.created), "date_updated": rfc2822(l.updated), "uri": uri + ".json",
		"subresource_uris": map[string]string{"credentials": uri + "/Credentials.json"},
	}
}

// mappingJSON is a credential list mapping (registration or calls): its
// SID is the list's.
func (a *restAPI) mappingJSON(l restListView) map[string]any {
	return map[string]any{
		"sid": l.sid, "account_sid": a.st.accountSID(), "friendly_name": l.name,
		"date_created": rfc2822(l.created), "date_updated": rfc2822(l.updated),
	}
}

// aclMappingJSON is an IP access control list mapping: its SID is the
// list's (AL…).
func (a *restAPI) aclMappingJSON(l restACLView) map[string]any {
	return map[string]any{
		"sid": l.sid, "account_sid": a.st.accountSID(), "friendly_name": l.name,
		"date_created": rfc2822(l.created), "date_updated": rfc2822(l.updated),
	}
}

func (a *restAPI) credentialJSON(base, listSID string, c restCredView) map[string]any {
	return map[string]any{
		"sid": c.sid, "account_sid": a.st.accountSID(), "credential_list_sid": listSID, "username": c.username,
		"date_created": rfc2822(c.created), "date_updated": rfc2822(c.updated),
		"uri": base + "SIP/CredentialLists/" + listSID + "/Credentials/" + c.sid + ".json",
	}
}

// writePage answers one page of a list the way Twilio's 2010 API pages:
// PageSize (1..1000, default 50) and Page (from 0), next_page_uri null on
// the last page.
func writePage[T any](w http.ResponseWriter, r *http.Request, uri, key string, items []T, render func(T) map[string]any) {
	size, page := 50, 0
	if v := r.Form.Get("PageSize"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			restError(w, http.StatusBadRequest, codeInvalid, "PageSize must be a positive integer")
			return
		}
		size = min(n, 1000)
	}
	if v := r.Form.Get("Page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			restError(w, http.StatusBadRequest, codeInvalid, "Page must be a non-negative integer")
			return
		}
		page = n
	}
	start := min(page*size, len(items))
	end := min(start+size, len(items))
	out := make([]map[string]any, 0, end-start)
	for _, it := range items[start:end] {
		out = append(out, render(it))
	}
	pageURI := func(p int) string {
		return uri + "?" + url.Values{"PageSize": {strconv.Itoa(size)}, "Page": {strconv.Itoa(p)}}.Encode()
	}
	var next, prev any
	if end < len(items) {
		next = pageURI(page + 1)
	}
	if page > 0 {
		prev = pageURI(page - 1)
	}
	writeJSONCompact(w, http.StatusOK, map[string]any{
		key: out, "page": page, "page_size": size, "start": start, "end": max(end-1, start),
		"first_page_uri": pageURI(0), "next_page_uri": next, "previous_page_uri": prev, "uri": pageURI(page),
	})
}

func (a *restAPI) listDomains(w http.ResponseWriter, r *http.Request, base string, _ []string) {
	writePage(w, r, base+"SIP/Domains.json", "domains", a.st.listDomains(), func(d restDomain) map[string]any { return a.domainJSON(base, d) })
}

func (a *restAPI) fetchDomain(w http.ResponseWriter, r *http.Request, base string, args []string) {
	d, err := a.st.domain(args[0])
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSONCompact(w, http.StatusOK, a.domainJSON(base, d))
}

// authPath is the path segment of a's mappings under a domain.
func authPath(a restAuth) string {
	if a == authCalls {
		return "/Auth/Calls/"
	}
	return "/Auth/Registrations/"
}

func (a *restAPI) listMappings(auth restAuth) restHandler {
	return func(w http.ResponseWriter, r *http.Request, base string, args []string) {
		ls, err := a.st.mappedLists(auth, args[0])
		if err != nil {
			a.fail(w, r, err)
			return
		}
		writePage(w, r, base+"SIP/Domains/"+args[0]+authPath(auth)+"CredentialListMappings.json", "contents", ls, a.mappingJSON)
	}
}

func (a *restAPI) createMapping(auth restAuth) restHandler {
	return func(w http.ResponseWriter, r *http.Request, _ string, args []string) {
		cl := r.PostForm.Get("CredentialListSid")
		if cl == "" {
			restError(w, http.StatusBadRequest, codeInvalid, "CredentialListSid is required")
			return
		}
		l, err := a.st.mapList(auth, args[0], cl)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		writeJSONCompact(w, http.StatusCreated, a.mappingJSON(l))
	}
}

func (a *restAPI) fetchMapping(auth restAuth) restHandler {
	return func(w http.ResponseWriter, r *http.Request, _ string, args []string) {
		ls, err := a.st.mappedLists(auth, args[0])
		if err != nil {
			a.fail(w, r, err)
			return
		}
		for _, l := range ls {
			if l.sid == args[1] {
				writeJSONCompact(w, http.StatusOK, a.mappingJSON(l))
				return
			}
		}
		a.notFound(w, r)
	}
}

func (a *restAPI) deleteMapping(auth restAuth) restHandler {
	return func(w http.ResponseWriter, r *http.Request, _ string, args []string) {
		if err := a.st.unmapList(auth, args[0], args[1]); err != nil {
			a.fail(w, r, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}
}

func (a *restAPI) listACLMappings(w http.ResponseWriter, r *http.Request, base string, args []string) {
	ls, err := a.st.callACLs(args[0])
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writePage(w, r, base+"SIP/Domains/"+args[0]+"/Auth/Calls/IpAccessControlListMappings.json", "contents", ls, a.aclMappingJSON)
}

func (a *restAPI) fetchACLMapping(w http.ResponseWriter, r *http.Request, _ string, args []string) {
	ls, err := a.st.callACLs(args[0])
	if err != nil {
		a.fail(w, r, err)
		return
	}
	for _, l := range ls {
		if l.sid == args[1] {
			writeJSONCompact(w, http.StatusOK, a.aclMappingJSON(l))
			return
		}
	}
	a.notFound(w, r)
}

func (a *restAPI) listLists(w http.ResponseWriter, r *http.Request, base string, _ []string) {
	writePage(w, r, base+"SIP/CredentialLists.json", "credential_lists", a.st.listLists(), func(l restListView) map[string]any { return a.listJSON(base, l) })
}

func (a *restAPI) createList(w http.ResponseWriter, r *http.Request, base string, _ []string) {
	l, err := a.st.createList(r.PostForm.Get("FriendlyName"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSONCompact(w, http.StatusCreated, a.listJSON(base, l))
}

func (a *restAPI) fetchList(w http.ResponseWriter, r *http.Request, base string, args []string) {
	l, err := a.st.list(args[0])
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSONCompact(w, http.StatusOK, a.listJSON(base, l))
}

func (a *restAPI) listCredentials(w http.ResponseWriter, r *http.Request, base string, args []string) {
	l, err := a.st.list(args[0])
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writePage(w, r, base+"SIP/CredentialLists/"+l.sid+"/Credentials.json", "credentials", l.users,
		func(c restCredView) map[string]any { return a.credentialJSON(base, l.sid, c) })
}

func (a *restAPI) createCredential(w http.ResponseWriter, r *http.Request, base string, args []string) {
	user, pw := r.PostForm.Get("Username"), r.PostForm.Get("Password")
	if user == "" || pw == "" {
		restError(w, http.StatusBadRequest, codeInvalid, "Username and Password are required")
		return
	}
	c, err := a.st.createCredential(args[0], user, pw)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSONCompact(w, http.StatusCreated, a.credentialJSON(base, args[0], c))
}

func (a *restAPI) fetchCredential(w http.ResponseWriter, r *http.Request, base string, args []string) {
	c, err := a.st.credential(args[0], args[1])
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSONCompact(w, http.StatusOK, a.credentialJSON(base, args[0], c))
}

func (a *restAPI) updateCredential(w http.ResponseWriter, r *http.Request, base string, args []string) {
	pw := r.PostForm.Get("Password")
	if pw == "" {
		restError(w, http.StatusBadRequest, codeInvalid, "Password is required")
		return
	}
	c, err := a.st.updateCredential(args[0], args[1], pw)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSONCompact(w, http.StatusOK, a.credentialJSON(base, args[0], c))
}

func (a *restAPI) deleteCredential(w http.ResponseWriter, r *http.Request, _ string, args []string) {
	if err := a.st.deleteCredential(args[0], args[1]); err != nil {
		a.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
