package integration

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twilio/twilio-go/client"

	"github.com/edgewise-sip/edgewise/test/kit"
)

// twimlFbAuthToken is the account auth token the replicas check signatures
// with (32 hex digits, like Twilio's).
const twimlFbAuthToken = "0123456789abcdef0123456789abcdef"

// twimlFbReplica is one running `edgewise token serve`.
type twimlFbReplica struct {
	*proc
	base     string // http://ip:9061, the TwiML app's public URL
	adminURL string
}

// twimlFbConfig is one replica's file: the same token and TwiML sections
// for every replica, only the listeners differ. publicURLs lists every
// replica, as one file for all of them would.
func twimlFbConfig(ip, dir string, publicURLs []string) string {
	return fmt.Sprintf(`log:
  level: debug
twilio:
  domain: itest
  edges: [ashburn, umatilla]
phones:
  - user: alice
    password: alice-secret
    twilio_password: AliceTwilio123
  - user: bob
    password: bob-secret
    twilio_user: bob-desk
    twilio_password: BobTwilio1234
  - user: carol.smith
    password: carol-secret
    twilio_password: CarolTwilio123
store:
  path: %[2]s/edgewise.db
admin:
  listen: %[1]s:9060
token:
  listen: %[1]s:9061
  account_sid: AC0123456789abcdef0123456789abcdef
  api_keys: [{sid: SK0123456789abcdef0123456789abcdef, secret: itest-api-key-secret}]
  twiml_app_sid: AP0123456789abcdef0123456789abcdef
  twiml:
    auth_token: %[3]s
    public_urls: ["%[4]s"]
    numbers:
      - {number: "+15005550100", user: alice}
      - {number: "+15005550101", user: carol.smith}
`, ip, dir, twimlFbAuthToken, strings.Join(publicURLs, `", "`))
}

// twimlFbStart starts n replicas, each on its own loopback address, every
// one configured with all n public URLs, and waits until each answers.
func twimlFbStart(t *testing.T, n int) []*twimlFbReplica {
	t.Helper()
	ips := make([]string, n)
	bases := make([]string, n)
	for i := range n {
		ips[i] = nextIP(t)
		bases[i] = "http://" + ips[i] + ":9061"
	}
	reps := make([]*twimlFbReplica, n)
	for i := range n {
		dir := t.TempDir()
		path := filepath.Join(dir, "edgewise.yaml")
		if err := os.WriteFile(path, []byte(twimlFbConfig(ips[i], dir, bases)), 0o600); err != nil {
			t.Fatal(err)
		}
		reps[i] = &twimlFbReplica{proc: startProc(t, "edgewise", "token", "serve", "-c", path),
			base: bases[i], adminURL: "http://" + ips[i] + ":9060"}
	}
	for _, r := range reps {
		kit.WaitFor(t, 20*time.Second, "token replica "+r.base, func() bool {
			select {
			case <-r.done:
				t.Fatalf("token serve exited early:\n%s", r.out.String())
			default:
			}
			res, err := http.Get(r.base + "/healthz")
			if err != nil {
				return false
			}
			res.Body.Close()
			return res.StatusCode == http.StatusOK
		})
	}
	return reps
}

// twimlFbSign signs a request as Twilio does (HMAC-SHA1 over the URL and
// each parameter's name and value in name order, base64), and checks that
// twilio-go's validator agrees.
func twimlFbSign(t *testing.T, token, u string, params url.Values) string {
	t.Helper()
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	s := u
	single := map[string]string{}
	for _, k := range keys {
		s += k + params.Get(k)
		single[k] = params.Get(k)
	}
	mac := hmac.New(sha1.New, []byte(token))
	mac.Write([]byte(s))
	sig := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	if v := client.NewRequestValidator(token); !v.Validate(u, single, sig) {
		t.Fatalf("twilio-go's validator refuses the test signature for %s", u)
	}
	return sig
}

// twimlFbCall is a voice webhook's form, with the parameters Twilio sends.
func twimlFbCall(from, to string) url.Values {
	return url.Values{
		"AccountSid": {"AC0123456789abcdef0123456789abcdef"}, "ApiVersion": {"2010-04-01"},
		"CallSid": {"CA" + randHex(16)}, "CallStatus": {"ringing"}, "Direction": {"inbound"},
		"From": {from}, "To": {to}, "Caller": {from}, "Called": {to},
	}
}

// twimlFbPost posts a form to base+path, signed for signBase+path (no
// signature when signBase is empty). It returns the status and body, or an
// error when the replica cannot be reached.
func twimlFbPost(t *testing.T, base, path, signBase string, form url.Values) (int, string, error) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if signBase != "" {
		req.Header.Set("X-Twilio-Signature", twimlFbSign(t, twimlFbAuthToken, signBase+path, form))
	}
	c := http.Client{Timeout: 5 * time.Second}
	res, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	return res.StatusCode, string(body), nil
}

// twimlFbFirstAnswer does what Twilio does with a Voice URL and a Voice
// Fallback URL: each replica in order, each request signed for the URL it
// goes to, the next one when a replica cannot be reached or answers 5xx.
func twimlFbFirstAnswer(t *testing.T, bases []string, path string, form url.Values) (string, int, string) {
	t.Helper()
	var errs []string
	for _, b := range bases {
		code, body, err := twimlFbPost(t, b, path, b, form)
		if err == nil && code < 500 {
			return b, code, body
		}
		errs = append(errs, fmt.Sprintf("%s: %d %v", b, code, err))
	}
	t.Fatalf("no replica answered: %s", strings.Join(errs, "; "))
	return "", 0, ""
}

// twimlFbDoc is the TwiML answer as encoding/xml reads it.
type twimlFbDoc struct {
	XMLName xml.Name `xml:"Response"`
	Dials   []struct {
		Action   string   `xml:"action,attr"`
		CallerID string   `xml:"callerId,attr"`
		Numbers  []string `xml:"Number"`
		Sips     []string `xml:"Sip"`
		Clients  []string `xml:"Client"`
	} `xml:"Dial"`
}

func twimlFbParse(t *testing.T, body string) twimlFbDoc {
	t.Helper()
	var d twimlFbDoc
	if err := xml.Unmarshal([]byte(body), &d); err != nil {
		t.Fatalf("answer is not TwiML: %v\n%s", err, body)
	}
	return d
}

// twimlFbCheckRing asserts the TwiML rings alice's phones through the SIP
// domain's AOR, with her browser as the Dial's next step, and the leg's end
// reported to the replica that answered (base).
func twimlFbCheckRing(t *testing.T, who, base string, code int, body string) {
	t.Helper()
	if !strings.Contains(body, `statusCallback="`+base+`/v1/twiml/status"`) {
		t.Errorf("%s: the leg does not report to %s/v1/twiml/status: %s", who, base, body)
	}
	if code != http.StatusOK {
		t.Fatalf("%s: %d %s", who, code, body)
	}
	d := twimlFbParse(t, body)
	if len(d.Dials) != 1 || len(d.Dials[0].Sips) != 1 || d.Dials[0].Sips[0] != "sip:alice@itest.sip.twilio.com" ||
		d.Dials[0].Action != "voice?step=client" || len(d.Dials[0].Numbers)+len(d.Dials[0].Clients) != 0 {
		t.Fatalf("%s: TwiML does not ring alice: %s", who, body)
	}
}

// TestTwiMLFallbackReplicas: two `edgewise token serve` replicas answer the
// same signed TwiML requests; with one killed, the other still does, and a
// client trying both URLs in order (Twilio's Voice URL, then its Fallback
// URL) gets the answer.
func TestTwiMLFallbackReplicas(t *testing.T) {
	reps := twimlFbStart(t, 2)
	a, b := reps[0], reps[1]
	bases := []string{a.base, b.base}

	toAlice := twimlFbCall("+14155559999", "+15005550100")
	fromCarol := twimlFbCall("sip:carol.smith@itest.sip.twilio.com", "sip:+442071234567@itest.sip.twilio.com")
	for _, r := range reps {
		code, body, err := twimlFbPost(t, r.base, "/v1/twiml/voice", r.base, toAlice)
		if err != nil {
			t.Fatal(err)
		}
		twimlFbCheckRing(t, r.base, r.base, code, body)

		code, body, err = twimlFbPost(t, r.base, "/v1/twiml/voice", r.base, fromCarol)
		if err != nil || code != http.StatusOK {
			t.Fatalf("%s: carol calls out: %d %s %v", r.base, code, body, err)
		}
		d := twimlFbParse(t, body)
		if len(d.Dials) != 1 || d.Dials[0].CallerID != "+15005550101" || strings.Join(d.Dials[0].Numbers, ",") != "+442071234567" {
			t.Fatalf("%s: carol's call out: %s", r.base, body)
		}

		// Her phones did not answer: the Dial's action rings her browser.
		noAnswer := twimlFbCall("+14155559999", "+15005550101")
		noAnswer.Set("DialCallStatus", "no-answer")
		code, body, err = twimlFbPost(t, r.base, "/v1/twiml/voice?step=client", r.base, noAnswer)
		if err != nil || code != http.StatusOK {
			t.Fatalf("%s: dial action: %d %s %v", r.base, code, body, err)
		}
		if d := twimlFbParse(t, body); len(d.Dials) != 1 || strings.Join(d.Dials[0].Clients, ",") != "carol_2E_smith" {
			t.Fatalf("%s: dial action does not ring carol's browser: %s", r.base, body)
		}

		// A status callback of a failed call becomes an event and a metric.
		failed := url.Values{"AccountSid": {"AC0123456789abcdef0123456789abcdef"}, "CallSid": {"CA" + randHex(16)},
			"CallStatus": {"failed"}, "ErrorCode": {"32009"}, "From": {"+14155559999"}, "To": {"+15005550100"}}
		if code, body, err := twimlFbPost(t, r.base, "/v1/twiml/status", r.base, failed); err != nil || code != http.StatusOK {
			t.Fatalf("%s: status callback: %d %s %v", r.base, code, body, err)
		}
		m := scrapeMetrics(t, &daemon{adminURL: r.adminURL})
		if got := m.value("edgewise_twiml_call_status_total", "status", "failed", "error_code", "32009"); got != 1 {
			t.Errorf("%s: call_status_total{failed,32009} = %v", r.base, got)
		}
		if got := m.value("edgewise_twiml_answered_total", "route", "ring_user"); got != 1 {
			t.Errorf("%s: answered_total{ring_user} = %v", r.base, got)
		}
		st := (&daemon{adminURL: r.adminURL}).status(t)
		found := false
		for _, e := range st.Events {
			found = found || (e.Kind == "call_not_connected" && strings.Contains(e.Text, "error 32009"))
		}
		if !found {
			t.Errorf("%s: no call_not_connected event in /v1/status: %+v", r.base, st.Events)
		}
	}

	// Replica A dies. B still answers, and a client that tries A first
	// ends up with B's answer.
	a.signal(syscall.SIGKILL)
	a.wait(10 * time.Second)
	if _, _, err := twimlFbPost(t, a.base, "/v1/twiml/voice", a.base, toAlice); err == nil {
		t.Fatal("the killed replica still answers")
	}
	code, body, err := twimlFbPost(t, b.base, "/v1/twiml/voice", b.base, toAlice)
	if err != nil {
		t.Fatal(err)
	}
	twimlFbCheckRing(t, "replica B after A died", b.base, code, body)
	who, code, body := twimlFbFirstAnswer(t, bases, "/v1/twiml/voice", twimlFbCall("+14155559999", "+15005550100"))
	if who != b.base {
		t.Fatalf("answer from %s, want replica B", who)
	}
	twimlFbCheckRing(t, "first answer of A, B", b.base, code, body)
}
