package provision

import (
	"context"
	"log/slog"
	"testing"
	"time"

	openapi "github.com/twilio/twilio-go/rest/api/v2010"

	"github.com/edgewise-sip/edgewise/test/edgesim"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// Each test runs edgesim with its REST API on its own 127.0.N.x addresses
// (N unique in this package, 210 and up) and port 0, so tests run in
// parallel with each other and with other packages.

const (
	testAccount = "AC0123456789abcdef0123456789abcdef"
	testKeySID  = "SK0123456789abcdef0123456789abcdef"
	testSecret  = "s3cretS3cretS3cretS3cretS3cret00"
)

func simConfig(n kit.Net) edgesim.Config {
	return edgesim.Config{
		Domain: "demo",
		Edges: []edgesim.EdgeConfig{
			{Name: "ashburn", IPs: []string{n.Addr(1)}},
			{Name: "umatilla", IPs: []string{n.Addr(11)}},
			{Name: "dublin", IPs: []string{n.Addr(21)}},
		},
		DNS: edgesim.DNSConfig{Listen: "127.0.0.1:0"},
		Credentials: []edgesim.Credential{
			{User: "alice", Password: "AliceTwilio123"},
			{User: "bob", Password: "BobTwilio1234"},
		},
		REST: &edgesim.RESTConfig{
			AccountSID: testAccount,
			APIKeys:    []edgesim.RESTKey{{SID: testKeySID, Secret: testSecret}},
			Domain:     edgesim.RESTDomainConfig{VoiceURL: "https://example.com/twiml"},
		},
	}
}

// startSim runs edgesim until the test ends.
func startSim(t *testing.T, cfg edgesim.Config) *edgesim.Sim {
	t.Helper()
	sim, err := edgesim.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	stop, err := sim.Start(context.Background())
	if err != nil {
		t.Fatalf("edgesim: %v", err)
	}
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("edgesim: %v", err)
		}
	})
	return sim
}

// settings points REST at sim exactly as the edgewise binary does in the
// integration tests: DNS through edgesim, its port, its test CA.
func settings(sim *edgesim.Sim, edges ...string) Settings {
	if len(edges) == 0 {
		edges = []string{"ashburn", "umatilla", "dublin"}
	}
	return Settings{
		AccountSID: testAccount, APIKeySID: testKeySID, APIKeySecret: testSecret,
		Region: "us1", Edges: edges,
		DNSServer: sim.DNSAddr(), Port: sim.RESTPort(), CAPEM: sim.RESTCAPEM(),
		Timeout: 5 * time.Second,
	}
}

func newREST(t *testing.T, s Settings) *REST {
	t.Helper()
	r, err := NewREST(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// requests counts REST requests per edge since the last reset.
func requests(sim *edgesim.Sim) map[string]uint64 {
	out := map[string]uint64{}
	for _, e := range sim.REST().Edges {
		out[e.Name] = e.Requests
	}
	return out
}

func want(phones ...Phone) Want {
	if phones == nil {
		phones = []Phone{
			{User: "alice", TwilioUser: "alice", Password: "AliceTwilio123"},
			{User: "bob", TwilioUser: "bob", Password: "BobTwilio1234"},
		}
	}
	return Want{Domain: "demo", Phones: phones, MediaEncryption: "none"}
}

func ptr[T any](v T) *T { return &v }

// unmapCalls removes a list's calls mapping through the REST API (the API
// interface has no such change: provisioning never unmaps).
func unmapCalls(t *testing.T, api *REST, domainSID, listSID string) {
	t.Helper()
	must(t, api.call(context.Background(), "unmap credential list for calls", true, func(a *openapi.ApiService) error {
		return a.DeleteSipAuthCallsCredentialListMapping(domainSID, listSID, nil)
	}))
}
