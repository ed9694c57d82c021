package provision

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/test/edgesim"
	"github.com/edgewise-sip/edgewise/test/kit"
)

type fallbacks struct {
	mu    sync.Mutex
	moves []string
}

func (f *fallbacks) note(from, to, why string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.moves = append(f.moves, from+" -> "+to+": "+why)
}

func (f *fallbacks) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.moves...)
}

// TestRESTFallsBackAcrossEdges: the first edge refuses connections, so
// requests go to the second, which then serves the rest; a 5xx moves on
// too; with every edge down the error names each.
func TestRESTFallsBackAcrossEdges(t *testing.T) {
	sim := startSim(t, simConfig(kit.NewNet(t)))
	var fb fallbacks
	s := settings(sim)
	s.OnFallback = fb.note
	api := newREST(t, s)
	ctx := context.Background()

	must(t, sim.SetRESTEdgeMode("ashburn", edgesim.RESTRefuse))
	if r, err := Check(ctx, api, want()); err != nil || r.OK == "" {
		t.Fatalf("check with ashburn refusing: %+v, %v", r, err)
	}
	if got, want := fb.list(), []string{"api.ashburn.us1.twilio.com -> api.umatilla.us1.twilio.com: connection refused"}; !reflect.DeepEqual(got, want) {
		t.Errorf("fallbacks %q, want %q", got, want)
	}
	if n := requests(sim); n["ashburn"] != 0 || n["umatilla"] != 5 {
		t.Errorf("requests %v: want none at ashburn, the check's 5 at umatilla", n)
	}
	// Sticky: ashburn is back, but umatilla keeps serving until it fails.
	must(t, sim.SetRESTEdgeMode("ashburn", edgesim.RESTUp))
	must(t, sim.SetRESTEdgeMode("umatilla", edgesim.RESTReject))
	if _, err := api.Domains(ctx); err != nil {
		t.Fatal(err)
	}
	if got := fb.list(); len(got) != 2 || got[1] != "api.umatilla.us1.twilio.com -> api.dublin.us1.twilio.com: 503 Service Unavailable (code 20503: Service Unavailable)" {
		t.Errorf("fallbacks %q", got)
	}
	// Every edge down: one error naming each edge and why.
	must(t, sim.SetRESTEdgeMode("ashburn", edgesim.RESTRefuse))
	must(t, sim.SetRESTEdgeMode("dublin", edgesim.RESTRefuse))
	_, err := api.Domains(ctx)
	var ue *UnreachableError
	if !errors.As(err, &ue) || !reflect.DeepEqual(ue.Failures, []string{
		"api.dublin.us1.twilio.com: connection refused",
		"api.ashburn.us1.twilio.com: connection refused",
		"api.umatilla.us1.twilio.com: 503 Service Unavailable (code 20503: Service Unavailable)",
	}) {
		t.Fatalf("err = %v, want every edge's failure", err)
	}
}

// TestRESTCallsFallBackAcrossEdges: the Voice Authentication requests
// move across edges as the others do: a refused connection moves even the
// mapping (nothing was sent), a 503 moves the reads but not a mapping that
// reached Twilio, and with every edge down the error names each.
func TestRESTCallsFallBackAcrossEdges(t *testing.T) {
	cfg := simConfig(kit.NewNet(t))
	cfg.REST.Domain.CallsIPACLs = []string{"office"}
	sim := startSim(t, cfg)
	var fb fallbacks
	s := settings(sim)
	s.OnFallback = fb.note
	api := newREST(t, s)
	ctx := context.Background()
	sd := sim.REST().Domains[0].SID
	l, err := api.CreateCredentialList(ctx, "callers")
	must(t, err)

	// Ashburn refuses: the mapping was never sent, so it moves on. The
	// connection kept from the last request is dropped first: a POST on a
	// kept connection the edge closes meanwhile may have reached it, and
	// is rightly not repeated elsewhere (that case is not this one).
	must(t, sim.SetRESTEdgeMode("ashburn", edgesim.RESTRefuse))
	api.Close()
	if err := api.MapCallsList(ctx, sd, l.SID); err != nil {
		t.Fatalf("map for calls with ashburn refusing: %v", err)
	}
	if got := sim.REST().Domains[0].CallsLists; len(got) != 2 || got[1] != l.SID {
		t.Fatalf("calls lists %v, want the seed and %s", got, l.SID)
	}
	lists, err := api.CallsLists(ctx, sd)
	if err != nil || len(lists) != 2 || lists[1].Name != "callers" {
		t.Fatalf("calls lists through umatilla: %+v, %v", lists, err)
	}
	// Umatilla answers 503: the read moves to Dublin.
	must(t, sim.SetRESTEdgeMode("umatilla", edgesim.RESTReject))
	acls, err := api.CallsIPACLs(ctx, sd)
	if err != nil || len(acls) != 1 || acls[0].Name != "office" || !strings.HasPrefix(acls[0].SID, "AL") {
		t.Fatalf("IP ACLs through dublin: %+v, %v", acls, err)
	}
	if got, want := fb.list(), []string{
		"api.ashburn.us1.twilio.com -> api.umatilla.us1.twilio.com: connection refused",
		"api.umatilla.us1.twilio.com -> api.dublin.us1.twilio.com: 503 Service Unavailable (code 20503: Service Unavailable)",
	}; !reflect.DeepEqual(got, want) {
		t.Errorf("fallbacks %q, want %q", got, want)
	}
	// Dublin answers 503 to a mapping it received: not repeated elsewhere.
	must(t, sim.SetRESTEdgeMode("dublin", edgesim.RESTReject))
	before := requests(sim)
	err = api.MapCallsList(ctx, sd, sim.REST().CredentialLists[0].SID)
	var uncertain *UncertainError
	if !errors.As(err, &uncertain) || uncertain.Host != "api.dublin.us1.twilio.com" {
		t.Fatalf("map for calls at a 503: err = %v, want an UncertainError at dublin", err)
	}
	if n := requests(sim); n["ashburn"]+n["umatilla"] != before["ashburn"]+before["umatilla"] {
		t.Errorf("the mapping was repeated: %v → %v", before, n)
	}
	// Every edge down: one error naming each.
	_, err = api.CallsLists(ctx, sd)
	var ue *UnreachableError
	if !errors.As(err, &ue) || !reflect.DeepEqual(ue.Failures, []string{
		"api.dublin.us1.twilio.com: 503 Service Unavailable (code 20503: Service Unavailable)",
		"api.ashburn.us1.twilio.com: connection refused",
		"api.umatilla.us1.twilio.com: 503 Service Unavailable (code 20503: Service Unavailable)",
	}) || ue.Op != "list the domain's calls credential lists" {
		t.Fatalf("err = %v, want every edge's failure", err)
	}
}

// TestRESTBadKeyIsOneAnswer: a 401 is Twilio's answer, not an edge
// failure: one request, no fallback, an APIError saying 401.
func TestRESTBadKeyIsOneAnswer(t *testing.T) {
	sim := startSim(t, simConfig(kit.NewNet(t)))
	var fb fallbacks
	s := settings(sim)
	s.APIKeySecret = "wrongWrongWrongWrongWrongWrong00"
	s.OnFallback = fb.note
	api := newREST(t, s)
	_, err := Check(context.Background(), api, want())
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != 401 || ae.Code != 20003 || ae.Host != "api.ashburn.us1.twilio.com" {
		t.Fatalf("err = %v, want a 401 APIError from ashburn", err)
	}
	if n := requests(sim); n["ashburn"] != 1 || n["umatilla"]+n["dublin"] != 0 || len(fb.list()) != 0 {
		t.Errorf("requests %v, fallbacks %q: want exactly one request", n, fb.list())
	}
}

// TestRESTCreateNotRepeatedAfterItWasSent: a creation that got a 5xx or
// no answer after its request went out may have happened; it is not sent
// to another edge (that could create it twice). A read is.
func TestRESTCreateNotRepeatedAfterItWasSent(t *testing.T) {
	sim := startSim(t, simConfig(kit.NewNet(t)))
	s := settings(sim)
	s.Timeout = 1500 * time.Millisecond // only the dropping edge waits it out
	api := newREST(t, s)
	ctx := context.Background()

	for _, mode := range []edgesim.RESTMode{edgesim.RESTReject, edgesim.RESTDrop} {
		must(t, sim.ResetREST())
		seed := sim.REST().CredentialLists[0].SID
		must(t, sim.SetRESTEdgeMode("ashburn", mode))
		err := api.CreateCredential(ctx, seed, "carol", "CarolTwilio123")
		var ue *UncertainError
		if !errors.As(err, &ue) || ue.Host != "api.ashburn.us1.twilio.com" || !strings.Contains(err.Error(), "run sync again") {
			t.Fatalf("%s: err = %v, want an UncertainError at ashburn", mode, err)
		}
		if n := requests(sim); n["umatilla"]+n["dublin"] != 0 {
			t.Errorf("%s: the create was repeated: %v", mode, n)
		}
		// A read moves on.
		if _, err := api.Credentials(ctx, seed); err != nil {
			t.Errorf("%s: read: %v", mode, err)
		}
		api.mu.Lock()
		api.cur = 0
		api.mu.Unlock()
	}
	// Refused connections send nothing: the create moves on and succeeds.
	must(t, sim.ResetREST())
	seed := sim.REST().CredentialLists[0].SID
	must(t, sim.SetRESTEdgeMode("ashburn", edgesim.RESTRefuse))
	if err := api.CreateCredential(ctx, seed, "carol", "CarolTwilio123"); err != nil {
		t.Fatalf("create with ashburn refusing: %v", err)
	}
	if pw, ok := sim.RESTPassword("edgesim", "carol"); !ok || pw != "CarolTwilio123" {
		t.Error("carol not created through umatilla")
	}
}

// TestRESTUntrustedCertificate: without edgesim's CA every edge fails TLS
// and the error says so.
func TestRESTUntrustedCertificate(t *testing.T) {
	sim := startSim(t, simConfig(kit.NewNet(t)))
	s := settings(sim, "ashburn")
	s.CAPEM = nil
	_, err := newREST(t, s).Domains(context.Background())
	var ue *UnreachableError
	if !errors.As(err, &ue) || len(ue.Failures) != 1 || !strings.Contains(ue.Failures[0], "api.ashburn.us1.twilio.com: TLS certificate not trusted") {
		t.Fatalf("err = %v", err)
	}
}

func TestRESTCancelled(t *testing.T) {
	sim := startSim(t, simConfig(kit.NewNet(t)))
	must(t, sim.SetRESTEdgeMode("ashburn", edgesim.RESTDrop))
	api := newREST(t, settings(sim))
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := api.Domains(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 4*time.Second {
		t.Fatalf("err = %v after %v, want the context's deadline, promptly", err, time.Since(start))
	}
	if n := requests(sim); n["umatilla"] != 0 {
		t.Errorf("a cancelled operation moved on to umatilla: %v", n)
	}
}

func TestNewRESTNeedsCredentials(t *testing.T) {
	if _, err := NewREST(Settings{AccountSID: testAccount, APIKeySID: testKeySID}); err == nil {
		t.Error("no secret accepted")
	}
	if _, err := NewREST(Settings{AccountSID: testAccount, APIKeySID: testKeySID, APIKeySecret: "x", CAPEM: []byte("junk")}); err == nil {
		t.Error("a CA that is not PEM accepted")
	}
}

func TestPasswordRules(t *testing.T) {
	for pw, want := range map[string]string{
		"AliceTwilio123":    "",
		"ÄliceTwilio123":    "",
		"short":             "at least 12 characters, upper and lower case and a digit",
		"Short1":            "at least 12 characters",
		"alllowercase1234":  "upper and lower case",
		"NoDigitsHereAtAll": "a digit",
		"nodigitsorupperr":  "upper and lower case and a digit",
	} {
		if got := passwordRules(pw); got != want {
			t.Errorf("passwordRules(%q) = %q, want %q", pw, got, want)
		}
	}
}
