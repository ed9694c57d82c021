package token

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzTwiMLForm: any body either parses into one UTF-8 value per name, at
// most maxTwiMLParams of them, which survives a round trip, or is refused
// with a formError; never a panic.
func FuzzTwiMLForm(f *testing.F) {
	const form = "application/x-www-form-urlencoded"
	for _, seed := range []struct{ ct, body string }{
		{form, callParams("+14155559999", "+14155550100").Encode()},
		{form, ""},
		{form, "To=%2B1&To=%2B2"},
		{form, "a=1;b=2"},
		{form, "%zz=1"},
		{form, "To=%ff"},
		{form, "=&=&&"},
		{form + "; charset=UTF-8", "From=client%3Aalice"},
		{form + "; charset=latin1", "a=b"},
		{"application/json", `{"To":"+1"}`},
		{"", "a=b"},
		{"multipart/form-data; boundary=x", "--x--"},
		{form, manyParams(maxTwiMLParams + 1)},
	} {
		f.Add(seed.ct, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		got, err := parseTwiMLForm(ct, body)
		if err != nil {
			if _, ok := err.(*formError); !ok {
				t.Fatalf("error %T %v is not a formError", err, err)
			}
			return
		}
		if len(got) > maxTwiMLParams {
			t.Fatalf("%d parameters accepted", len(got))
		}
		v := url.Values{}
		for k, val := range got {
			if !utf8.ValidString(k) || !utf8.ValidString(val) {
				t.Fatalf("non-UTF-8 parameter %q=%q accepted", k, val)
			}
			v.Set(k, val)
		}
		again, err := parseTwiMLForm(form, []byte(v.Encode()))
		if err != nil || len(again) != len(got) {
			t.Fatalf("round trip of %q: %v %v", v.Encode(), err, again)
		}
		for k, val := range got {
			if again[k] != val {
				t.Fatalf("round trip changed %q: %q → %q", k, val, again[k])
			}
		}
	})
}

// FuzzTwiMLVoice signs arbitrary From, To, step and dial status the way
// Twilio would and drives the handler: it answers one of the documented
// statuses, and dials out only for a configured user with that user's
// caller ID, and rings only a configured number's user. No input finds a
// default route.
func FuzzTwiMLVoice(f *testing.F) {
	for _, seed := range []struct{ from, to, step, dial string }{
		{"+14155559999", "+14155550100", "", ""},
		{"+14155559999", "+14155550100", "client", "no-answer"},
		{"sip:alice@example.sip.twilio.com", "sip:+14155551234@example.sip.twilio.com", "", ""},
		{"client:carol_2E_smith", "+442071234567", "", ""},
		{"sip:mallory@example.sip.twilio.com", "+19005550199", "", ""},
		{"+14155550100", "+19005550199", "", ""},
		{"sip:alice@EXAMPLE.sip.twilio.com;x=y", "sip:+1900@example.sip.twilio.com@evil", "", ""},
		{"client:", "", "client", "completed"},
		{"sips:bob-desk@example.sip.ashburn.twilio.com", "sip:+14155550101@example.sip.twilio.com", "client", "busy"},
	} {
		f.Add(seed.from, seed.to, seed.step, seed.dial)
	}
	p := New(nil)
	if err := p.Apply(twimlTestSettings(), testUsers()); err != nil {
		f.Fatal(err)
	}
	h := p.Handler()
	f.Fuzz(func(t *testing.T, from, to, step, dial string) {
		params := callParams(from, to)
		if dial != "" {
			params.Set("DialCallStatus", dial)
		}
		q := ""
		if step != "" {
			q = url.Values{"step": {step}}.Encode()
		}
		target := PathTwiMLVoice
		if q != "" {
			target += "?" + q
		}
		req := httptest.NewRequest(http.MethodPost, target, strings.NewReader(params.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set(SignatureHeader, twimlSign(t, testAuthToken, twimlBaseA+target, params))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		body := rec.Body.String()
		switch rec.Code {
		case 200:
		case 400, 403, 404:
			if strings.Contains(body, "<Dial") {
				t.Fatalf("refusal with TwiML: %s", body)
			}
			return
		default:
			t.Fatalf("status %d: %s", rec.Code, body)
		}
		doc, _ := parseTwiML(t, rec.Body.Bytes())
		for _, d := range doc.Dials {
			if len(d.Numbers) > 0 {
				if !utf8.ValidString(from) || !utf8.ValidString(to) {
					t.Fatalf("dialled out for non-UTF-8 input")
				}
				want := map[string]string{"alice": "+14155550100", "carol.smith": "+14155550101"}
				user, _ := p.state.Load().twiml.caller(from)
				if want[user] == "" || d.CallerID != want[user] {
					t.Fatalf("From %q dialled %+v with caller ID %q", from, d.Numbers, d.CallerID)
				}
			}
			if len(d.Sips) > 0 || len(d.Clients) > 0 {
				if _, ok := p.state.Load().twiml.numberUser(to); !ok {
					t.Fatalf("To %q is no configured number but rang %+v %+v", to, d.Sips, d.Clients)
				}
			}
		}
	})
}
