package edgesim

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	twilio "github.com/twilio/twilio-go"
	twclient "github.com/twilio/twilio-go/client"
	openapi "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/edgewise-sip/edgewise/test/kit"
)

const (
	testAccount = "AC0123456789abcdef0123456789abcdef"
	testKeySID  = "SK0123456789abcdef0123456789abcdef"
	testSecret  = "s3cretS3cretS3cretS3cretS3cret00"
)

func restTestConfig(n kit.Net) Config {
	cfg := testConfig(n)
	cfg.REST = &RESTConfig{
		AccountSID: testAccount,
		APIKeys:    []RESTKey{{SID: testKeySID, Secret: testSecret}},
		Domain:     RESTDomainConfig{VoiceURL: "https://example.com/twiml"},
	}
	return cfg
}

// restAPIFor is twilio-go's API service talking to one edge of sim: the
// client dials the edge's REST address for api.<edge>.us1.twilio.com and
// trusts sim's test CA, so requests are exactly what twilio-go sends to
// Twilio.
func restAPIFor(t *testing.T, sim *Sim, edge, secret string) *openapi.ApiService {
	t.Helper()
	addrs := map[string]string{}
	for _, e := range sim.REST().Edges {
		addrs[e.Host+":443"] = e.Addr
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(sim.RESTCAPEM()) {
		t.Fatal("CA PEM does not parse")
	}
	var d net.Dialer
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			to, ok := addrs[addr]
			if !ok {
				return nil, fmt.Errorf("test dialer: no edge serves %s", addr)
			}
			return d.DialContext(ctx, network, to)
		},
	}}
	c := &twclient.Client{Credentials: twclient.NewCredentials(testKeySID, secret), HTTPClient: hc}
	c.SetAccountSid(testAccount)
	rc := twilio.NewRestClientWithParams(twilio.ClientParams{Client: c})
	rc.SetEdge(edge)
	rc.SetRegion("us1")
	return rc.Api
}

func TestRESTDomainsCredentialsAndMappings(t *testing.T) {
	n := kit.NewNet(t)
	sim := startSim(t, restTestConfig(n))
	api := restAPIFor(t, sim, "ashburn", testSecret)

	domains, err := api.ListSipDomain(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(domains) != 1 || *domains[0].DomainName != "demo.sip.twilio.com" || !*domains[0].SipRegistration ||
		*domains[0].VoiceUrl != "https://example.com/twiml" || *domains[0].Secure {
		t.Fatalf("domains = %s", jsonOf(domains))
	}
	sd := *domains[0].Sid
	maps, err := api.ListSipAuthRegistrationsCredentialListMapping(sd, nil)
	if err != nil || len(maps) != 1 || *maps[0].FriendlyName != seedListName || !strings.HasPrefix(*maps[0].Sid, "CL") {
		t.Fatalf("mappings = %s, %v", jsonOf(maps), err)
	}
	seed := *maps[0].Sid
	creds, err := api.ListSipCredential(seed, nil)
	if err != nil || len(creds) != 2 || *creds[0].Username != "alice" || *creds[1].Username != "bob" {
		t.Fatalf("credentials = %s, %v", jsonOf(creds), err)
	}

	// A new list, mapped, with a new user: the registrar knows carol.
	cl, err := api.CreateSipCredentialList((&openapi.CreateSipCredentialListParams{}).SetFriendlyName("office"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := sim.password("carol"); ok {
		t.Fatal("carol known before she was added")
	}
	if _, err := api.CreateSipCredential(*cl.Sid, (&openapi.CreateSipCredentialParams{}).SetUsername("carol").SetPassword("CarolTwilio123")); err != nil {
		t.Fatal(err)
	}
	if _, ok := sim.password("carol"); ok {
		t.Fatal("carol known while her list is not mapped to the domain")
	}
	if _, err := api.CreateSipAuthRegistrationsCredentialListMapping(sd, (&openapi.CreateSipAuthRegistrationsCredentialListMappingParams{}).SetCredentialListSid(*cl.Sid)); err != nil {
		t.Fatal(err)
	}
	if pw, ok := sim.password("carol"); !ok || pw != "CarolTwilio123" {
		t.Fatalf("carol's password = %q, %v", pw, ok)
	}

	// Update and delete alice in the seed list.
	alice := *creds[0].Sid
	if _, err := api.UpdateSipCredential(seed, alice, (&openapi.UpdateSipCredentialParams{}).SetPassword("AliceNew12345")); err != nil {
		t.Fatal(err)
	}
	if pw, _ := sim.password("alice"); pw != "AliceNew12345" {
		t.Fatalf("alice's password after update = %q", pw)
	}
	if err := api.DeleteSipCredential(seed, alice, nil); err != nil {
		t.Fatal(err)
	}
	if _, ok := sim.password("alice"); ok {
		t.Fatal("alice still known after delete")
	}

	// Refusals with Twilio's error bodies.
	refusals := []struct {
		name string
		call func() error
		want int
	}{
		{"weak password", func() error {
			_, err := api.CreateSipCredential(*cl.Sid, (&openapi.CreateSipCredentialParams{}).SetUsername("dave").SetPassword("short"))
			return err
		}, 400},
		{"duplicate user", func() error {
			_, err := api.CreateSipCredential(*cl.Sid, (&openapi.CreateSipCredentialParams{}).SetUsername("carol").SetPassword("CarolTwilio123"))
			return err
		}, 400},
		{"duplicate mapping", func() error {
			_, err := api.CreateSipAuthRegistrationsCredentialListMapping(sd, (&openapi.CreateSipAuthRegistrationsCredentialListMappingParams{}).SetCredentialListSid(*cl.Sid))
			return err
		}, 400},
		{"unknown list", func() error {
			_, err := api.ListSipCredential("CL"+zeros32, nil)
			return err
		}, 404},
		{"delete twice", func() error { return api.DeleteSipCredential(seed, alice, nil) }, 404},
	}
	for _, tc := range refusals {
		var re *twclient.TwilioRestError
		if err := tc.call(); !errors.As(err, &re) || re.Status != tc.want {
			t.Errorf("%s: err = %v, want a %d TwilioRestError", tc.name, err, tc.want)
		}
	}
}

func TestRESTPagesAndAuth(t *testing.T) {
	n := kit.NewNet(t)
	cfg := restTestConfig(n)
	for i := range 120 {
		cfg.Credentials = append(cfg.Credentials, Credential{User: fmt.Sprintf("user%03d", i), Password: "UserTwilio1234"})
	}
	sim := startSim(t, cfg)
	api := restAPIFor(t, sim, "umatilla", testSecret)
	seed := sim.REST().CredentialLists[0].SID
	creds, err := api.ListSipCredential(seed, nil) // twilio-go pages by 50: three pages
	if err != nil || len(creds) != 122 || *creds[121].Username != "user119" {
		t.Fatalf("%d credentials, err %v", len(creds), err)
	}
	var re *twclient.TwilioRestError
	_, err = restAPIFor(t, sim, "ashburn", "wrongWrongWrongWrongWrong0000000").ListSipDomain(nil)
	if !errors.As(err, &re) || re.Status != 401 || re.Code != codeAuthenticate {
		t.Fatalf("wrong secret: %v, want 401 code %d", err, codeAuthenticate)
	}
	if st := sim.REST(); st.Edges[0].Requests != 1 || st.Edges[1].Requests != 3 {
		t.Errorf("requests per edge = %d, %d; want 1 (ashburn), 3 (umatilla)", st.Edges[0].Requests, st.Edges[1].Requests)
	}
}

func TestRESTEdgeModesAndControl(t *testing.T) {
	n := kit.NewNet(t)
	sim := startSim(t, restTestConfig(n))
	ctl := "http://" + sim.ControlAddr()
	api := restAPIFor(t, sim, "ashburn", testSecret)

	put := func(path, body string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPut, ctl+path, bytes.NewBufferString(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := put("/v1/rest/edges/ashburn", `{"mode":"refuse"}`); resp.StatusCode != 200 {
		t.Fatalf("refuse: %s", resp.Status)
	}
	if _, err := api.ListSipDomain(nil); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("refused edge: err = %v, want connection refused", err)
	}
	if _, err := restAPIFor(t, sim, "umatilla", testSecret).ListSipDomain(nil); err != nil {
		t.Fatalf("other edge while ashburn refuses: %v", err)
	}
	put("/v1/rest/edges/ashburn", `{"mode":"reject"}`)
	if _, err := api.ListSipDomain(nil); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("rejecting edge: err = %v, want 503", err)
	}
	put("/v1/rest/edges/ashburn", `{"mode":"up"}`)
	if _, err := api.ListSipDomain(nil); err != nil {
		t.Fatalf("edge back up: %v", err)
	}
	if resp := put("/v1/rest/edges/ashburn", `{"mode":"sideways"}`); resp.StatusCode != 400 {
		t.Errorf("unknown mode: %s, want 400", resp.Status)
	}
	if resp := put("/v1/rest/edges/nowhere", `{"mode":"up"}`); resp.StatusCode != 404 {
		t.Errorf("unknown edge: %s, want 404", resp.Status)
	}

	// Domain changes through the control API show in the REST API.
	put("/v1/rest/domains/demo", `{"sip_registration":false,"secure":true,"voice_url":""}`)
	put("/v1/rest/domains/other", `{}`)
	domains, err := api.ListSipDomain(nil)
	if err != nil || len(domains) != 2 || *domains[0].SipRegistration || !*domains[0].Secure || domains[0].VoiceUrl != nil ||
		*domains[1].DomainName != "other.sip.twilio.com" || !*domains[1].SipRegistration {
		t.Fatalf("domains = %s, %v", jsonOf(domains), err)
	}
	req, _ := http.NewRequest(http.MethodDelete, ctl+"/v1/rest/domains/demo", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("delete domain: %v %v", resp, err)
	}
	if _, ok := sim.password("alice"); ok {
		t.Error("alice authenticates on a deleted domain")
	}
	verify := func(user, pw string) bool {
		resp, err := http.Post(ctl+"/v1/rest/verify", "application/json", strings.NewReader(fmt.Sprintf(`{"user":%q,"password":%q}`, user, pw)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct{ Match bool }
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return body.Match
	}
	if verify("alice", alicePass) {
		t.Error("verify matched on a deleted domain")
	}
	resp, err := http.Post(ctl+"/v1/rest/reset", "application/json", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("reset: %v %v", resp, err)
	}
	if !verify("alice", alicePass) || verify("alice", "nope") {
		t.Error("verify after reset: want alice's seeded password to match and no other")
	}
	resp, err = http.Get(ctl + "/v1/rest/ca.pem")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("ca.pem: %v %v", resp, err)
	}
	resp.Body.Close()
}

func TestRESTHostsInDNSAndCAFile(t *testing.T) {
	n := kit.NewNet(t)
	cfg := restTestConfig(n)
	cfg.REST.CAFile = t.TempDir() + "/ca.pem"
	sim := startSim(t, cfg)
	for host, want := range map[string]string{
		"api.ashburn.us1.twilio.com.":  n.Addr(1),
		"api.umatilla.us1.twilio.com.": n.Addr(11),
		"api.us1.twilio.com.":          n.Addr(1),
	} {
		m := new(dns.Msg)
		m.SetQuestion(host, dns.TypeA)
		in, err := dns.Exchange(m, sim.DNSAddr())
		if err != nil || len(in.Answer) != 1 || in.Answer[0].(*dns.A).A.String() != want {
			t.Errorf("%s: %v %v, want %s", host, in, err, want)
		}
	}
	if st := sim.REST(); st.Port == 0 || st.Edges[0].Addr != fmt.Sprintf("%s:%d", n.Addr(1), st.Port) {
		t.Errorf("rest status %+v", st)
	}
	if _, err := New(func() Config { c := restTestConfig(n); c.REST.AccountSID = "AC12"; return c }(), nil); err == nil ||
		!strings.Contains(err.Error(), "rest.account_sid") {
		t.Errorf("bad account SID accepted: %v", err)
	}
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestRESTCallsMappings: the domain's Voice Authentication through
// twilio-go: the seeded list is mapped for calls, a list can be mapped,
// fetched and unmapped there independently of registration, and the IP
// access control lists the config presets are listed.
func TestRESTCallsMappings(t *testing.T) {
	n := kit.NewNet(t)
	cfg := restTestConfig(n)
	cfg.REST.Domain.CallsIPACLs = []string{"office", "datacenter"}
	sim := startSim(t, cfg)
	api := restAPIFor(t, sim, "ashburn", testSecret)
	sd := sim.REST().Domains[0].SID
	seed := sim.REST().CredentialLists[0].SID

	calls, err := api.ListSipAuthCallsCredentialListMapping(sd, nil)
	if err != nil || len(calls) != 1 || *calls[0].Sid != seed || *calls[0].FriendlyName != seedListName {
		t.Fatalf("calls mappings = %s, %v", jsonOf(calls), err)
	}
	acls, err := api.ListSipAuthCallsIpAccessControlListMapping(sd, nil)
	if err != nil || len(acls) != 2 || *acls[0].FriendlyName != "office" || *acls[1].FriendlyName != "datacenter" || !strings.HasPrefix(*acls[0].Sid, "AL") {
		t.Fatalf("IP ACL mappings = %s, %v", jsonOf(acls), err)
	}
	if got, err := api.FetchSipAuthCallsIpAccessControlListMapping(sd, *acls[1].Sid, nil); err != nil || *got.FriendlyName != "datacenter" {
		t.Fatalf("fetch IP ACL mapping = %s, %v", jsonOf(got), err)
	}
	if st := sim.REST(); len(st.IPAccessControlLists) != 2 || !reflect.DeepEqual(st.Domains[0].CallsIPACLs, []string{*acls[0].Sid, *acls[1].Sid}) {
		t.Errorf("status %s", jsonOf(st))
	}

	// A second list mapped for calls only: registration does not see it.
	cl, err := api.CreateSipCredentialList((&openapi.CreateSipCredentialListParams{}).SetFriendlyName("callers"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := api.CreateSipAuthCallsCredentialListMapping(sd, (&openapi.CreateSipAuthCallsCredentialListMappingParams{}).SetCredentialListSid(*cl.Sid))
	if err != nil || *m.Sid != *cl.Sid || *m.FriendlyName != "callers" {
		t.Fatalf("map for calls = %s, %v", jsonOf(m), err)
	}
	if got, err := api.FetchSipAuthCallsCredentialListMapping(sd, *cl.Sid, nil); err != nil || *got.Sid != *cl.Sid {
		t.Fatalf("fetch calls mapping = %s, %v", jsonOf(got), err)
	}
	if d := sim.REST().Domains[0]; !reflect.DeepEqual(d.CallsLists, []string{seed, *cl.Sid}) || !reflect.DeepEqual(d.RegistrationLists, []string{seed}) {
		t.Fatalf("domain after mapping for calls: %s", jsonOf(d))
	}
	// Unmapping for calls leaves the registration mapping alone.
	if err := api.DeleteSipAuthCallsCredentialListMapping(sd, seed, nil); err != nil {
		t.Fatal(err)
	}
	if d := sim.REST().Domains[0]; !reflect.DeepEqual(d.CallsLists, []string{*cl.Sid}) || !reflect.DeepEqual(d.RegistrationLists, []string{seed}) {
		t.Fatalf("domain after unmapping the seed for calls: %s", jsonOf(d))
	}

	refusals := []struct {
		name string
		call func() error
		want int
	}{
		{"mapped twice for calls", func() error {
			_, err := api.CreateSipAuthCallsCredentialListMapping(sd, (&openapi.CreateSipAuthCallsCredentialListMappingParams{}).SetCredentialListSid(*cl.Sid))
			return err
		}, 400},
		{"unknown list", func() error {
			_, err := api.CreateSipAuthCallsCredentialListMapping(sd, (&openapi.CreateSipAuthCallsCredentialListMappingParams{}).SetCredentialListSid("CL"+zeros32))
			return err
		}, 400},
		{"no list SID", func() error {
			_, err := api.CreateSipAuthCallsCredentialListMapping(sd, nil)
			return err
		}, 400},
		{"unmapped twice", func() error { return api.DeleteSipAuthCallsCredentialListMapping(sd, seed, nil) }, 404},
		{"fetch unmapped", func() error {
			_, err := api.FetchSipAuthCallsCredentialListMapping(sd, seed, nil)
			return err
		}, 404},
		{"unknown domain", func() error {
			_, err := api.ListSipAuthCallsIpAccessControlListMapping("SD"+zeros32, nil)
			return err
		}, 404},
		{"unknown IP ACL", func() error {
			_, err := api.FetchSipAuthCallsIpAccessControlListMapping(sd, "AL"+zeros32, nil)
			return err
		}, 404},
	}
	for _, tc := range refusals {
		var re *twclient.TwilioRestError
		if err := tc.call(); !errors.As(err, &re) || re.Status != tc.want {
			t.Errorf("%s: err = %v, want a %d TwilioRestError", tc.name, err, tc.want)
		}
	}

	// Reset seeds it all again.
	if err := sim.ResetREST(); err != nil {
		t.Fatal(err)
	}
	st := sim.REST()
	if d := st.Domains[0]; len(d.CallsLists) != 1 || d.CallsLists[0] != st.CredentialLists[0].SID || len(d.CallsIPACLs) != 2 || len(st.CredentialLists) != 1 {
		t.Errorf("after reset: %s", jsonOf(st))
	}
}

// TestRESTCallsSeedOptions: calls_credential_list: false leaves the
// seeded list mapped for registration only; bad IP ACL names are refused.
func TestRESTCallsSeedOptions(t *testing.T) {
	n := kit.NewNet(t)
	cfg := restTestConfig(n)
	off := false
	cfg.REST.Domain.CallsCredentialList = &off
	sim := startSim(t, cfg)
	if d := sim.REST().Domains[0]; len(d.CallsLists) != 0 || len(d.CallsIPACLs) != 0 || len(d.RegistrationLists) != 1 {
		t.Errorf("domain %s: want the seed mapped for registration only", jsonOf(d))
	}
	for _, tc := range []struct {
		acls []string
		want string
	}{
		{[]string{""}, "rest.domain.calls_ip_access_control_lists[0]: a name of 1 to 64 characters is required"},
		{[]string{"office", strings.Repeat("x", 65)}, "rest.domain.calls_ip_access_control_lists[1]: a name of 1 to 64 characters is required"},
		{[]string{"office", "office"}, `rest.domain.calls_ip_access_control_lists[1]: "office" is listed twice`},
	} {
		c := restTestConfig(n)
		c.REST.Domain.CallsIPACLs = tc.acls
		if _, err := New(c, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.acls, err, tc.want)
		}
	}
	yml := "domain: demo\nedges: [{name: ashburn, ips: [127.0.0.1]}]\nrest:\n  account_sid: " + testAccount +
		"\n  api_keys: [{sid: " + testKeySID + ", secret: " + testSecret + "}]\n" +
		"  domain: {calls_credential_list: false, calls_ip_access_control_lists: [office]}\n"
	c, err := ParseConfig([]byte(yml))
	if err != nil || c.REST.Domain.CallsCredentialList == nil || *c.REST.Domain.CallsCredentialList || !reflect.DeepEqual(c.REST.Domain.CallsIPACLs, []string{"office"}) {
		t.Errorf("YAML keys: %+v, %v", c.REST, err)
	}
}
