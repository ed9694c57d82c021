package integration

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSecurityProvisionSpoofedREST: something answers for
// api.<edge>.us1.twilio.com (a hijacked resolver) with a certificate no
// trusted CA signed. edgewise refuses the TLS handshake on every edge, so
// the API key never leaves the machine: edgesim's REST handlers see no
// request at all, and the error says why. With the CA trusted (the
// legitimate setup, twilio.rest.ca_file), the same check goes through.
func TestSecurityProvisionSpoofedREST(t *testing.T) {
	sim := provisionStartSim(t)
	dir := t.TempDir()
	trusted := filepath.Join(dir, "trusted.yaml")
	provisionConfig(t, sim, trusted, provisionSecret, "")
	data, err := os.ReadFile(trusted)
	if err != nil {
		t.Fatal(err)
	}
	spoofed := filepath.Join(dir, "spoofed.yaml")
	writeFile(t, spoofed, strings.Replace(string(data), "    ca_file: "+sim.caFile+"\n", "", 1))

	code, stdout, stderr := provisionRun(t, sim, "sync", "--prune", "-c", spoofed)
	lines := provisionLines(stderr)
	const why = "TLS certificate not trusted: x509: certificate signed by unknown authority"
	if code != 2 || stdout != "" || len(lines) != 2 ||
		lines[0] != "edgewise twilio sync: api.ashburn.us1.twilio.com failed ("+why+"); trying api.umatilla.us1.twilio.com" ||
		lines[1] != "edgewise twilio: list SIP Domains: no Twilio REST edge answered: api.ashburn.us1.twilio.com: "+why+"; api.umatilla.us1.twilio.com: "+why {
		t.Fatalf("untrusted REST endpoint: exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
	if n := sim.requests(t); n["ashburn"]+n["umatilla"] != 0 {
		t.Fatalf("requests %v reached the untrusted endpoint: the API key was sent", n)
	}

	// The legitimate operator, who trusts that CA, is unaffected.
	code, stdout, stderr = provisionRun(t, sim, "check", "-c", trusted)
	if code != 0 || !strings.HasPrefix(stdout, "itest.sip.twilio.com: ok:") || stderr != "" {
		t.Fatalf("trusted: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	var st provisionREST
	sim.do(t, http.MethodGet, "/v1/rest", "", &st)
	if st.Edges[0].Requests == 0 {
		t.Error("the trusted check made no request")
	}
}
