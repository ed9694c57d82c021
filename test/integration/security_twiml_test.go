package integration

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestSecurityTwiMLRefusals plays a stranger against a real token replica's
// fallback TwiML app: unsigned requests, a signed body altered in flight, a
// stale signature on a new body, a signature for another URL or another
// account, a call to a number that is not ours, a caller ID spoofed as one of
// ours and a SIP user of the domain that is no phone user each get a 4xx,
// no TwiML, a log line and a count by reason; Twilio's own signed requests
// are answered before and after.
func TestSecurityTwiMLRefusals(t *testing.T) {
	r := twimlFbStart(t, 1)[0]
	const path = "/v1/twiml/voice"
	toll := twimlFbCall("sip:alice@itest.sip.twilio.com", "+19005550199")
	legit := twimlFbCall("+14155559999", "+15005550100")

	check := func(name string, code int, body string, err error, want int) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if code != want || strings.Contains(body, "<Dial") {
			t.Errorf("%s: %d %s, want %d and no TwiML", name, code, body, want)
		}
		// Twilio's own request is still answered.
		c, b, err := twimlFbPost(t, r.base, path, r.base, legit)
		if err != nil {
			t.Fatal(err)
		}
		twimlFbCheckRing(t, "legitimate request after "+name, r.base, c, b)
	}

	code, body, err := twimlFbPost(t, r.base, path, "", toll)
	check("no signature", code, body, err, http.StatusForbidden)

	// Signed for alice's call to +14155551234, sent with the To changed.
	signed := twimlFbCall("sip:alice@itest.sip.twilio.com", "+14155551234")
	req, _ := http.NewRequest(http.MethodPost, r.base+path, strings.NewReader(toll.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", twimlFbSign(t, twimlFbAuthToken, r.base+path, signed))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	check("altered body", res.StatusCode, "", nil, http.StatusForbidden)

	// The signature of an earlier request of the call (ringing) on a later body.
	later := url.Values{}
	for k, v := range legit {
		later[k] = v
	}
	later.Set("CallStatus", "in-progress")
	req, _ = http.NewRequest(http.MethodPost, r.base+path, strings.NewReader(later.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", twimlFbSign(t, twimlFbAuthToken, r.base+path, legit))
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	check("stale signature", res.StatusCode, "", nil, http.StatusForbidden)

	code, body, err = twimlFbPost(t, r.base, path, "https://evil.example.com", toll)
	check("signature for another URL", code, body, err, http.StatusForbidden)

	req, _ = http.NewRequest(http.MethodPost, r.base+path, strings.NewReader(toll.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", twimlFbSign(t, "fedcba9876543210fedcba9876543210", r.base+path, toll))
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	check("another account's signature", res.StatusCode, "", nil, http.StatusForbidden)

	code, body, err = twimlFbPost(t, r.base, path, r.base, twimlFbCall("+14155559999", "+19005550199"))
	check("unknown number", code, body, err, http.StatusNotFound)
	code, body, err = twimlFbPost(t, r.base, path, r.base, twimlFbCall("+15005550100", "+19005550199"))
	check("caller ID spoofed as ours", code, body, err, http.StatusNotFound)
	code, body, err = twimlFbPost(t, r.base, path, r.base, twimlFbCall("sip:mallory@itest.sip.twilio.com", "+19005550199"))
	check("unknown SIP user", code, body, err, http.StatusForbidden)

	req, _ = http.NewRequest(http.MethodPost, r.base+path, strings.NewReader(`{"From":"client:alice","To":"+19005550199"}`))
	req.Header.Set("Content-Type", "application/json")
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	check("JSON body", res.StatusCode, "", nil, http.StatusUnsupportedMediaType)

	big := twimlFbCall("+14155559999", "+15005550100")
	big.Set("Pad", strings.Repeat("x", 70<<10))
	code, body, err = twimlFbPost(t, r.base, path, r.base, big)
	check("oversized body", code, body, err, http.StatusRequestEntityTooLarge)

	m := scrapeMetrics(t, &daemon{adminURL: r.adminURL})
	for reason, want := range map[string]float64{"no_signature": 1, "bad_signature": 4, "unknown_number": 2,
		"unknown_caller": 1, "content_type": 1, "too_large": 1} {
		if got := m.value("edgewise_twiml_refused_total", "reason", reason); got != want {
			t.Errorf("refused_total{reason=%q} = %v, want %v", reason, got, want)
		}
	}
	if got := m.value("edgewise_twiml_answered_total", "route", "dial_number"); got != 0 {
		t.Errorf("dialled out %v times", got)
	}
	out := r.out.String()
	for _, reason := range []string{"no_signature", "bad_signature", "unknown_number", "unknown_caller", "content_type", "too_large"} {
		if !strings.Contains(out, "TwiML request refused") || !strings.Contains(out, "reason="+reason) {
			t.Errorf("no log line for reason %s", reason)
		}
	}
}
