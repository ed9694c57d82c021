package token

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twilio/twilio-go/client"
)

// testAuthToken has the shape of a Twilio auth token (32 hex digits).
const testAuthToken = "0123456789abcdef0123456789abcdef"

// Public URLs of the test app: replica A at a host, replica B behind a
// proxy that strips the /edgewise prefix.
const (
	twimlBaseA = "https://tokens-a.example.com"
	twimlBaseB = "https://tokens-b.example.com/edgewise"
)

func twimlTestSettings() Settings {
	s := testSettings()
	s.TwiML = &TwiML{
		AuthToken:  testAuthToken,
		PublicURLs: []string{twimlBaseA, twimlBaseB + "/"},
		Domain:     "example",
		Numbers: []TwiMLNumber{
			{Number: "+14155550100", User: "alice"},
			{Number: "+14155550101", User: "carol.smith"},
			{Number: "+14155550102", User: "alice"}, // alice's second number: not her caller ID
		},
		Users: []TwiMLUser{
			{Name: "alice", TwilioUser: "alice"},
			{Name: "bob", TwilioUser: "bob-desk"}, // no number: may not call out
			{Name: "carol.smith", TwilioUser: "carol.smith"},
		},
	}
	return s
}

// twimlSign computes X-Twilio-Signature the way Twilio documents it: the
// URL, then each parameter's name and value in name order, HMAC-SHA1 with
// the auth token, base64. Repeated names contribute each value, sorted. The
// result is checked against twilio-go's validator so the two cannot drift.
func twimlSign(t testing.TB, token, u string, params url.Values) string {
	t.Helper()
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(u)
	for _, k := range keys {
		vs := slices.Clone(params[k])
		sort.Strings(vs)
		for _, v := range vs {
			b.WriteString(k + v)
		}
	}
	mac := hmac.New(sha1.New, []byte(token))
	mac.Write([]byte(b.String()))
	sig := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	single := map[string]string{}
	repeated := false
	for k, v := range params {
		single[k] = v[0]
		repeated = repeated || len(v) > 1
	}
	if v := client.NewRequestValidator(token); !repeated && !v.Validate(u, single, sig) {
		t.Fatalf("twilio-go's validator refuses the test signature for %s %v", u, params)
	}
	return sig
}

// twimlReq is one webhook request to the handler.
type twimlReq struct {
	method      string
	path        string // PathTwiMLVoice when empty
	query       string // raw query, e.g. "step=client"
	params      url.Values
	body        string // sent instead of params.Encode() when set
	contentType string // form when empty; "-" for none
	signFor     string // base URL to sign for; twimlBaseA when empty, "-" for no signature
	signURL     string // the whole URL to sign for, instead of signFor's
	signParams  url.Values
	signToken   string
	headers     map[string]string
	remote      string
}

func (c twimlReq) do(t testing.TB, h http.Handler) *httptest.ResponseRecorder {
	t.Helper()
	if c.method == "" {
		c.method = http.MethodPost
	}
	if c.path == "" {
		c.path = PathTwiMLVoice
	}
	target := c.path
	if c.query != "" {
		target += "?" + c.query
	}
	body := c.body
	if body == "" {
		body = c.params.Encode()
	}
	req := httptest.NewRequest(c.method, target, strings.NewReader(body))
	req.RemoteAddr = "192.0.2.10:40000"
	if c.remote != "" {
		req.RemoteAddr = c.remote
	}
	switch c.contentType {
	case "":
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	case "-":
	default:
		req.Header.Set("Content-Type", c.contentType)
	}
	if c.signFor != "-" {
		base := c.signFor
		if base == "" {
			base = twimlBaseA
		}
		tok := c.signToken
		if tok == "" {
			tok = testAuthToken
		}
		sp := c.signParams
		if sp == nil {
			sp = c.params
		}
		u := base + target
		if c.signURL != "" {
			u = c.signURL
		}
		req.Header.Set(SignatureHeader, twimlSign(t, tok, u, sp))
	}
	for k, v := range c.headers {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// callParams is a voice webhook's form: the parameters Twilio sends, several
// of them, with From and To set.
func callParams(from, to string, extra ...string) url.Values {
	v := url.Values{
		"AccountSid": {testAccount}, "ApiVersion": {"2010-04-01"}, "CallSid": {"CA0123456789abcdef0123456789abcdef"},
		"CallStatus": {"ringing"}, "Direction": {"inbound"}, "From": {from}, "To": {to},
		"Caller": {from}, "Called": {to}, "CallerCountry": {"US"}, "CallToken": {"%7B%22x%22%3A1%7D"},
	}
	for i := 0; i+1 < len(extra); i += 2 {
		v.Set(extra[i], extra[i+1])
	}
	return v
}

// twimlDoc is the TwiML edgewise answers, as encoding/xml reads it.
type twimlDoc struct {
	XMLName xml.Name    `xml:"Response"`
	Dials   []twimlDial `xml:"Dial"`
	Hangups []struct{}  `xml:"Hangup"`
}

type twimlDial struct {
	Action         string      `xml:"action,attr"`
	CallerID       string      `xml:"callerId,attr"`
	AnswerOnBridge string      `xml:"answerOnBridge,attr"`
	Numbers        []twimlNoun `xml:"Number"`
	Sips           []twimlNoun `xml:"Sip"`
	Clients        []twimlNoun `xml:"Client"`
}

// twimlNoun is a <Number>, <Sip> or <Client>: whom to dial, and where the
// leg's end is reported.
type twimlNoun struct {
	Value          string `xml:",chardata"`
	StatusCallback string `xml:"statusCallback,attr"`
}

// nouns builds the expected nouns of one kind; the test fills in the
// status callback it expects.
func nouns(values ...string) []twimlNoun {
	out := make([]twimlNoun, len(values))
	for i, v := range values {
		out[i] = twimlNoun{Value: v}
	}
	return out
}

// parseTwiML decodes the answer and lists every element name in order, so
// a test sees elements the struct would silently skip.
func parseTwiML(t testing.TB, body []byte) (twimlDoc, []string) {
	t.Helper()
	var doc twimlDoc
	if err := xml.Unmarshal(body, &doc); err != nil {
		t.Fatalf("answer is not TwiML: %v\n%s", err, body)
	}
	var names []string
	dec := xml.NewDecoder(bytes.NewReader(body))
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("answer is not XML: %v\n%s", err, body)
		}
		if se, ok := tok.(xml.StartElement); ok {
			names = append(names, se.Name.Local)
		}
	}
	return doc, names
}

func TestTwiMLVoice(t *testing.T) {
	const (
		aliceSIP = "sip:alice@example.sip.twilio.com"
		bobSIP   = "sip:bob-desk@example.sip.twilio.com"
		pstn     = "+14155559999"
	)
	for _, tc := range []struct {
		name     string
		req      twimlReq
		elements string // element names in order
		dial     twimlDial
		route    string
	}{
		{name: "call to a number rings its user's phones",
			req:      twimlReq{params: callParams(pstn, "+14155550100")},
			elements: "Response Dial Sip", route: routeRingUser,
			dial: twimlDial{Action: "voice?step=client", AnswerOnBridge: "true", Sips: nouns(aliceSIP)}},
		{name: "second number of the same user",
			req:      twimlReq{params: callParams(pstn, "+14155550102")},
			elements: "Response Dial Sip", route: routeRingUser,
			dial: twimlDial{Action: "voice?step=client", AnswerOnBridge: "true", Sips: nouns(aliceSIP)}},
		{name: "user whose name is not a client identity",
			req:      twimlReq{params: callParams(pstn, "+14155550101")},
			elements: "Response Dial Sip", route: routeRingUser,
			dial: twimlDial{Action: "voice?step=client", AnswerOnBridge: "true", Sips: nouns("sip:carol.smith@example.sip.twilio.com")}},
		{name: "phones did not answer: the browser rings",
			req:      twimlReq{query: "step=client", params: callParams(pstn, "+14155550101", "DialCallStatus", "no-answer")},
			elements: "Response Dial Client", route: routeRingClient,
			dial: twimlDial{AnswerOnBridge: "true", Clients: nouns("carol_2E_smith")}},
		{name: "phones busy: the browser rings",
			req:      twimlReq{query: "step=client", params: callParams(pstn, "+14155550100", "DialCallStatus", "busy")},
			elements: "Response Dial Client", route: routeRingClient,
			dial: twimlDial{AnswerOnBridge: "true", Clients: nouns("alice")}},
		{name: "phones answered: hang up after the call",
			req:      twimlReq{query: "step=client", params: callParams(pstn, "+14155550100", "DialCallStatus", "completed")},
			elements: "Response Hangup", route: routeHangup},
		{name: "phone calls out with its caller ID",
			req:      twimlReq{params: callParams(aliceSIP, "sip:+14155551234@example.sip.twilio.com")},
			elements: "Response Dial Number", route: routeDialNumber,
			dial: twimlDial{CallerID: "+14155550100", AnswerOnBridge: "true", Numbers: nouns("+14155551234")}},
		{name: "phone that registered at an edge host",
			req:      twimlReq{params: callParams("sip:alice@example.sip.umatilla.twilio.com;transport=udp", "sip:4155551234@example.sip.umatilla.twilio.com")},
			elements: "Response Dial Number", route: routeDialNumber,
			dial: twimlDial{CallerID: "+14155550100", AnswerOnBridge: "true", Numbers: nouns("4155551234")}},
		{name: "browser calls out",
			req:      twimlReq{params: callParams("client:carol_2E_smith", "+442071234567")},
			elements: "Response Dial Number", route: routeDialNumber,
			dial: twimlDial{CallerID: "+14155550101", AnswerOnBridge: "true", Numbers: nouns("+442071234567")}},
		{name: "phone calls a configured number: its user rings",
			req:      twimlReq{params: callParams(bobSIP, "sip:+14155550100@example.sip.twilio.com")},
			elements: "Response Dial Sip", route: routeRingUser,
			dial: twimlDial{Action: "voice?step=client", AnswerOnBridge: "true", Sips: nouns(aliceSIP)}},
		{name: "signed for the second public URL, behind a prefix",
			req:      twimlReq{signFor: twimlBaseB, params: callParams(pstn, "+14155550100")},
			elements: "Response Dial Sip", route: routeRingUser,
			dial: twimlDial{Action: "voice?step=client", AnswerOnBridge: "true", Sips: nouns(aliceSIP)}},
		{name: "signed for the URL with its default port",
			req:      twimlReq{signFor: "https://tokens-a.example.com:443", params: callParams(pstn, "+14155550100")},
			elements: "Response Dial Sip", route: routeRingUser,
			dial: twimlDial{Action: "voice?step=client", AnswerOnBridge: "true", Sips: nouns(aliceSIP)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestProvider(t, twimlTestSettings())
			rec := tc.req.do(t, p.Handler())
			if rec.Code != 200 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "text/xml; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			doc, names := parseTwiML(t, rec.Body.Bytes())
			if got := strings.Join(names, " "); got != tc.elements {
				t.Fatalf("elements %q, want %q:\n%s", got, tc.elements, rec.Body)
			}
			statusURL := twimlBaseA + PathTwiMLStatus
			if tc.req.signFor == twimlBaseB {
				statusURL = twimlBaseB + PathTwiMLStatus
			}
			if len(doc.Dials) == 1 && !equalDial(doc.Dials[0], tc.dial, statusURL) {
				t.Errorf("dial %+v, want %+v\n%s", doc.Dials[0], tc.dial, rec.Body)
			}
			if got := testutil.ToFloat64(p.metrics.twiml.answered.WithLabelValues(tc.route)); got != 1 {
				t.Errorf("answered_total{route=%q} = %v", tc.route, got)
			}
		})
	}
}

// equalDial compares two Dials; every noun of got must report to statusURL.
func equalDial(got, want twimlDial, statusURL string) bool {
	for _, l := range [][]twimlNoun{want.Numbers, want.Sips, want.Clients} {
		for i := range l {
			l[i].StatusCallback = statusURL
		}
	}
	return got.Action == want.Action && got.CallerID == want.CallerID && got.AnswerOnBridge == want.AnswerOnBridge &&
		slices.Equal(got.Numbers, want.Numbers) && slices.Equal(got.Sips, want.Sips) && slices.Equal(got.Clients, want.Clients)
}

// TestTwiMLRefusals plays the attacker: each request is refused with its
// status and reason, one log line, and a legitimate request right after it
// is still answered.
func TestTwiMLRefusals(t *testing.T) {
	good := twimlReq{params: callParams("sip:alice@example.sip.twilio.com", "+14155551234")}
	ringing := callParams("+14155559999", "+14155550100")
	answered := callParams("+14155559999", "+14155550100", "CallStatus", "completed")
	toll := callParams("+14155559999", "+19005550199")
	for _, tc := range []struct {
		name   string
		req    twimlReq
		status int
		reason string
		text   string
	}{
		{name: "no signature", req: twimlReq{signFor: "-", params: toll}, status: 403, reason: twimlNoSignature, text: "only Twilio"},
		{name: "altered body: To changed after signing",
			req:    twimlReq{params: callParams("sip:alice@example.sip.twilio.com", "+19005550199"), signParams: good.params},
			status: 403, reason: twimlBadSignature, text: "does not match"},
		{name: "stale signature: an earlier request's, on a new body",
			req:    twimlReq{params: answered, signParams: ringing},
			status: 403, reason: twimlBadSignature},
		{name: "parameter added after signing",
			req:    twimlReq{params: callParams("+14155559999", "+14155550100", "Digits", "1"), signParams: ringing},
			status: 403, reason: twimlBadSignature},
		{name: "signed for another host", req: twimlReq{signFor: "https://evil.example.com", params: ringing}, status: 403, reason: twimlBadSignature},
		{name: "signed for another scheme", req: twimlReq{signFor: "http://tokens-a.example.com", params: ringing}, status: 403, reason: twimlBadSignature},
		{name: "status callback's signature on the voice URL",
			req:    twimlReq{signURL: twimlBaseA + PathTwiMLStatus, params: ringing},
			status: 403, reason: twimlBadSignature},
		{name: "query added after signing",
			req:    twimlReq{query: "step=client", signURL: twimlBaseA + PathTwiMLVoice, params: ringing},
			status: 403, reason: twimlBadSignature},
		{name: "another account's auth token", req: twimlReq{signToken: "fedcba9876543210fedcba9876543210", params: ringing}, status: 403, reason: twimlBadSignature},
		{name: "two signature headers", req: twimlReq{params: ringing, headers: map[string]string{}}, status: 403, reason: twimlBadSignature},
		{name: "webhook rule signature", req: twimlReq{params: ringing, headers: map[string]string{webhookRuleHeader: "key=x,algorithm=HMAC_SHA256"}},
			status: 403, reason: twimlBadSignature, text: "Webhooks rule"},
		{name: "repeated parameter, signed the way Twilio signs them",
			req:    twimlReq{params: url.Values{"From": {"+14155559999"}, "To": {"+14155550100", "+19005550199"}}},
			status: 400, reason: twimlRepeated, text: `"To" is given 2 times`},
		{name: "repeated parameter smuggled after a signed first value",
			req:    twimlReq{body: ringing.Encode() + "&To=%2B19005550199", params: ringing},
			status: 400, reason: twimlRepeated},
		{name: "PSTN caller to a number that is not ours", req: twimlReq{params: toll}, status: 404, reason: twimlUnknownNumber, text: "not a configured number"},
		{name: "caller ID spoofed as one of our numbers",
			req:    twimlReq{params: callParams("+14155550100", "+19005550199")},
			status: 404, reason: twimlUnknownNumber},
		{name: "SIP user of the domain who is no phone user",
			req:    twimlReq{params: callParams("sip:mallory@example.sip.twilio.com", "+19005550199")},
			status: 403, reason: twimlUnknownCaller, text: "not a configured phone user"},
		{name: "browser identity of no user",
			req:    twimlReq{params: callParams("client:mallory", "+19005550199")},
			status: 403, reason: twimlUnknownCaller},
		{name: "phone user of another domain",
			req:    twimlReq{params: callParams("sip:alice@other.sip.twilio.com", "+19005550199")},
			status: 404, reason: twimlUnknownNumber},
		{name: "user without a number calls out",
			req:    twimlReq{params: callParams("sip:bob-desk@example.sip.twilio.com", "+14155551234")},
			status: 403, reason: twimlNoCallerID, text: `user "bob" has no number`},
		{name: "user dials a SIP URI elsewhere",
			req:    twimlReq{params: callParams("sip:alice@example.sip.twilio.com", "sip:+19005550199@evil.example.com")},
			status: 400, reason: twimlBadNumber},
		{name: "user dials something that is no number",
			req:    twimlReq{params: callParams("client:alice", "+1 (900) 555-0199")},
			status: 400, reason: twimlBadNumber},
		{name: "browser step for a number that is not ours",
			req:    twimlReq{query: "step=client", params: callParams("+14155559999", "+19005550199", "DialCallStatus", "no-answer")},
			status: 404, reason: twimlUnknownNumber},
		{name: "browser step from a user for a number that is not ours",
			req:    twimlReq{query: "step=client", params: callParams("sip:alice@example.sip.twilio.com", "+19005550199", "DialCallStatus", "no-answer")},
			status: 404, reason: twimlUnknownNumber},
		{name: "unknown step", req: twimlReq{query: "step=dial", params: ringing}, status: 400, reason: twimlBadForm},
		{name: "GET", req: twimlReq{method: http.MethodGet, params: ringing}, status: 405, reason: twimlMethod},
		{name: "JSON body", req: twimlReq{contentType: "application/json", body: `{"To":"+14155550100"}`, params: ringing},
			status: 415, reason: twimlContentType},
		{name: "no content type", req: twimlReq{contentType: "-", params: ringing}, status: 415, reason: twimlContentType},
		{name: "another charset", req: twimlReq{contentType: "application/x-www-form-urlencoded; charset=latin1", params: ringing},
			status: 415, reason: twimlContentType},
		{name: "oversized body", req: twimlReq{params: callParams("+14155559999", "+14155550100", "Pad", strings.Repeat("x", MaxTwiMLBodyBytes))},
			status: 413, reason: twimlTooLarge},
		{name: "malformed escape", req: twimlReq{body: "To=%zz&From=1", params: ringing}, status: 400, reason: twimlBadForm},
		{name: "not UTF-8", req: twimlReq{body: "To=%ff%fe", params: ringing}, status: 400, reason: twimlBadForm},
		{name: "too many parameters", req: twimlReq{body: manyParams(maxTwiMLParams + 1), params: ringing},
			status: 400, reason: twimlBadForm},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs syncBuf
			p := New(slog.New(slog.NewTextHandler(&logs, nil)))
			if err := p.Apply(twimlTestSettings(), testUsers()); err != nil {
				t.Fatal(err)
			}
			h := p.Handler()
			req := tc.req
			if tc.name == "two signature headers" {
				req.headers = nil
				rec := doTwoSignatures(t, h, req)
				checkRefusal(t, rec, tc.status, tc.text)
			} else {
				checkRefusal(t, req.do(t, h), tc.status, tc.text)
			}
			if got := testutil.ToFloat64(p.metrics.twiml.refused.WithLabelValues(tc.reason)); got != 1 {
				t.Errorf("refused_total{reason=%q} = %v, want 1", tc.reason, got)
			}
			if n := strings.Count(logs.String(), "TwiML request refused"); n != 1 || !strings.Contains(logs.String(), "reason="+tc.reason) {
				t.Errorf("want one log line with reason=%s, got %d:\n%s", tc.reason, n, logs.String())
			}
			// The same refusal again is counted but not logged again.
			if tc.name != "two signature headers" {
				req.do(t, h)
				if n := strings.Count(logs.String(), "TwiML request refused"); n != 1 {
					t.Errorf("a repeated refusal from one source was logged %d times", n)
				}
			}
			// Nothing was dialled, and the legitimate user is unaffected.
			if got := testutil.ToFloat64(p.metrics.twiml.answered.WithLabelValues(routeDialNumber)); got != 0 {
				t.Fatalf("a refused request dialled out")
			}
			if rec := good.do(t, h); rec.Code != 200 || !strings.Contains(rec.Body.String(), ">+14155551234</Number>") {
				t.Fatalf("legitimate request after the refusal: %d %s", rec.Code, rec.Body)
			}
		})
	}
}

func manyParams(n int) string {
	v := url.Values{}
	for i := range n {
		v.Set("p"+strconv.Itoa(i), "1")
	}
	return v.Encode()
}

func doTwoSignatures(t testing.TB, h http.Handler, c twimlReq) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, PathTwiMLVoice, strings.NewReader(c.params.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	sig := twimlSign(t, testAuthToken, twimlBaseA+PathTwiMLVoice, c.params)
	req.Header.Add(SignatureHeader, sig)
	req.Header.Add(SignatureHeader, sig)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func checkRefusal(t testing.TB, rec *httptest.ResponseRecorder, status int, text string) {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status %d, want %d: %s", rec.Code, status, rec.Body)
	}
	var e map[string]string
	if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e["error"] == "" {
		t.Fatalf("error body %q is not {\"error\": ...}", rec.Body)
	}
	if !strings.Contains(e["error"], text) {
		t.Errorf("error %q does not contain %q", e["error"], text)
	}
	if strings.Contains(rec.Body.String(), "<Dial") {
		t.Errorf("a refusal carries TwiML: %s", rec.Body)
	}
}

// syncBuf is a log sink the handler writes from its own goroutine.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestTwiMLNotConfigured(t *testing.T) {
	p := newTestProvider(t, testSettings())
	rec := twimlReq{params: callParams("+14155559999", "+14155550100")}.do(t, p.Handler())
	checkRefusal(t, rec, 404, "not configured")
	if got := testutil.ToFloat64(p.metrics.twiml.refused.WithLabelValues(twimlNotConfigured)); got != 1 {
		t.Errorf("refused_total{not_configured} = %v", got)
	}
}

func TestTwiMLStatusCallbacks(t *testing.T) {
	var (
		mu     sync.Mutex
		events []CallEvent
	)
	var logs syncBuf
	p := New(slog.New(slog.NewTextHandler(&logs, nil)), WithCallEvents(func(e CallEvent) {
		mu.Lock()
		defer mu.Unlock()
		events = append(events, e)
	}))
	if err := p.Apply(twimlTestSettings(), testUsers()); err != nil {
		t.Fatal(err)
	}
	h := p.Handler()
	status := func(extra ...string) *httptest.ResponseRecorder {
		v := url.Values{"AccountSid": {testAccount}, "CallSid": {"CA00000000000000000000000000000001"},
			"From": {"sip:alice@example.sip.twilio.com"}, "To": {"+14155551234"}, "Direction": {"outbound-dial"}}
		for i := 0; i+1 < len(extra); i += 2 {
			v.Set(extra[i], extra[i+1])
		}
		return twimlReq{path: PathTwiMLStatus, params: v}.do(t, h)
	}
	for _, c := range []struct {
		extra []string
		event bool
	}{
		{[]string{"CallStatus", "completed"}, false},
		{[]string{"CallStatus", "ringing"}, false},
		{[]string{"CallStatus", "failed", "ErrorCode", "32009", "ErrorMessage", "Your TwiML tried to Dial a Twilio SIP Registered User that is not currently registered"}, true},
		{[]string{"CallStatus", "busy"}, true},
		{[]string{"CallStatus", "no-answer", "ErrorCode", "13224"}, true},
		{[]string{"CallStatus", "exploded"}, false},
		{[]string{"CallStatus", "completed", "ErrorCode", "not-a-code"}, true},
	} {
		rec := status(c.extra...)
		if rec.Code != 200 {
			t.Fatalf("%v: %d %s", c.extra, rec.Code, rec.Body)
		}
		if _, names := parseTwiML(t, rec.Body.Bytes()); strings.Join(names, " ") != "Response" {
			t.Errorf("status answer has elements %v", names)
		}
	}
	for _, want := range []struct {
		status, code string
		n            float64
	}{
		{"completed", "none", 1}, {"ringing", "none", 1}, {"failed", "32009", 1}, {"busy", "none", 1},
		{"no-answer", "13224", 1}, {"other", "none", 1}, {"completed", "other", 1},
	} {
		if got := testutil.ToFloat64(p.metrics.twiml.callStatus.WithLabelValues(want.status, want.code)); got != want.n {
			t.Errorf("call_status_total{status=%q,error_code=%q} = %v, want %v", want.status, want.code, got, want.n)
		}
	}
	mu.Lock()
	got := slices.Clone(events)
	mu.Unlock()
	if len(got) != 4 {
		t.Fatalf("%d events, want 4: %+v", len(got), got)
	}
	e := got[0]
	if e.Status != "failed" || e.ErrorCode != "32009" || e.CallSID != "CA00000000000000000000000000000001" ||
		e.From != "sip:alice@example.sip.twilio.com" || e.To != "+14155551234" || e.Direction != "outbound-dial" || e.At.IsZero() ||
		!strings.Contains(e.ErrorMessage, "not currently registered") {
		t.Errorf("event %+v", e)
	}
	if n := strings.Count(logs.String(), "call not connected"); n != 4 || !strings.Contains(logs.String(), "error_code=32009") {
		t.Errorf("want 4 log lines for the calls not connected, got %d:\n%s", n, logs.String())
	}

	// Missing CallStatus, and an unsigned callback, are refused.
	rec := twimlReq{path: PathTwiMLStatus, params: url.Values{"CallSid": {"CA1"}}}.do(t, h)
	checkRefusal(t, rec, 400, "CallStatus")
	rec = twimlReq{path: PathTwiMLStatus, signFor: "-", params: url.Values{"CallStatus": {"failed"}, "ErrorCode": {"31000"}}}.do(t, h)
	checkRefusal(t, rec, 403, "")
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 4 {
		t.Errorf("refused callbacks made events: %+v", events[4:])
	}
}

// TestTwiMLErrorCodeLabelsBounded: a stream of distinct error codes cannot
// grow the metric without bound.
func TestTwiMLErrorCodeLabelsBounded(t *testing.T) {
	m := newTwiMLMetrics()
	for i := range 200 {
		m.countStatus("failed", fmt.Sprintf("3%04d", i))
	}
	if n := testutil.CollectAndCount(m.callStatus); n != maxErrorCodes+1 {
		t.Errorf("%d series, want %d", n, maxErrorCodes+1)
	}
	if got := testutil.ToFloat64(m.callStatus.WithLabelValues("failed", "other")); got != 200-maxErrorCodes {
		t.Errorf("other = %v", got)
	}
}

func TestTwiMLSettingsValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*TwiML)
		want   string
	}{
		{"no auth token", func(t *TwiML) { t.AuthToken = "" }, "twiml.auth_token: required"},
		{"no public URL", func(t *TwiML) { t.PublicURLs = nil }, "twiml.public_urls: at least one"},
		{"public URL with query", func(t *TwiML) { t.PublicURLs = []string{"https://x.example.com/?a=1"} }, "twiml.public_urls[0]"},
		{"public URL with the path", func(t *TwiML) { t.PublicURLs = []string{"https://x.example.com/v1/twiml/voice"} }, "give the base URL"},
		{"public URL ftp", func(t *TwiML) { t.PublicURLs = []string{"ftp://x.example.com"} }, "scheme"},
		{"number not E.164", func(t *TwiML) { t.Numbers[0].Number = "4155550100" }, "twiml.numbers[0].number"},
		{"number twice", func(t *TwiML) { t.Numbers[1].Number = t.Numbers[0].Number }, "listed twice"},
		{"number of no user", func(t *TwiML) { t.Numbers[0].User = "mallory" }, `"mallory" is not a phone user`},
		{"shared Twilio user", func(t *TwiML) { t.Users[1].TwilioUser = "alice" }, "share the Twilio user"},
		{"domain with dots", func(t *TwiML) { t.Domain = "example.sip.twilio.com" }, "first label"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := twimlTestSettings()
			tc.change(s.TwiML)
			err := s.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
	if err := twimlTestSettings().Validate(); err != nil {
		t.Fatalf("test settings: %v", err)
	}
}

// TestTwiMLReload: Apply swaps the mapping; the caller's slices are copied.
func TestTwiMLReload(t *testing.T) {
	s := twimlTestSettings()
	p := newTestProvider(t, s)
	h := p.Handler()
	s.TwiML.Numbers[0].User = "carol.smith" // the caller reusing its slice changes nothing applied
	req := twimlReq{params: callParams("+14155559999", "+14155550100")}
	if rec := req.do(t, h); !strings.Contains(rec.Body.String(), "sip:alice@") {
		t.Fatalf("applied settings changed through the caller's slice: %s", rec.Body)
	}
	if err := p.Apply(s, testUsers()); err != nil {
		t.Fatal(err)
	}
	if rec := req.do(t, h); !strings.Contains(rec.Body.String(), "sip:carol.smith@") {
		t.Fatalf("reload not applied: %s", rec.Body)
	}
	off := testSettings()
	if err := p.Apply(off, testUsers()); err != nil {
		t.Fatal(err)
	}
	checkRefusal(t, req.do(t, h), 404, "not configured")
}

// BenchmarkTwiMLVoice: one signed voice request through the handler (form,
// signature, routing, TwiML).
func BenchmarkTwiMLVoice(b *testing.B) {
	p := New(nil)
	if err := p.Apply(twimlTestSettings(), testUsers()); err != nil {
		b.Fatal(err)
	}
	h := p.Handler()
	params := callParams("sip:alice@example.sip.twilio.com", "+14155551234")
	body := params.Encode()
	sig := twimlSign(b, testAuthToken, twimlBaseA+PathTwiMLVoice, params)
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, PathTwiMLVoice, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set(SignatureHeader, sig)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatalf("%d %s", rec.Code, rec.Body)
		}
	}
}
