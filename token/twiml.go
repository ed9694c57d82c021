package token

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/emiago/sipgo/sip"
	"github.com/twilio/twilio-go/twiml"

	"github.com/edgewise-sip/edgewise/token/clientid"
)

// Paths of the fallback TwiML app, served by Handler when Settings.TwiML is set.
const (
	PathTwiMLVoice  = "/v1/twiml/voice"
	PathTwiMLStatus = "/v1/twiml/status"
)

// MaxTwiMLBodyBytes bounds a webhook body. Twilio's voice requests are a few
// hundred bytes of form parameters, a few KiB with SIP headers.
const MaxTwiMLBodyBytes = 64 << 10

// maxTwiMLParams bounds the parameters of one request (Twilio sends a few
// dozen), so a body of tiny pairs cannot make the signature check sort
// thousands of them.
const maxTwiMLParams = 512

// SignatureHeader carries Twilio's request signature.
const SignatureHeader = "X-Twilio-Signature"

// webhookRuleHeader marks a request signed under a Webhooks rule (a shared
// key and HMAC-SHA256) instead of the auth token; twilio-go's validator
// checks only auth-token signatures.
const webhookRuleHeader = "X-Twilio-Webhooks-Signature-Settings"

// stepClient is the query of the <Dial> action that rings the user's
// browser after its phones did not answer. It is part of the URL Twilio
// signs, so only Twilio can ask for it.
const (
	stepClient       = "client"
	stepClientAction = "voice?step=" + stepClient
)

// Routes, the values of edgewise_twiml_answered_total's "route" label.
const (
	routeDialNumber = "dial_number" // a user calls out: <Dial callerId><Number>
	routeRingUser   = "ring_user"   // a call to a number: <Dial><Sip> to the user
	routeRingClient = "ring_client" // its phones did not answer: <Dial><Client>
	routeHangup     = "hangup"      // the phones answered; nothing left to do
	routeStatus     = "status"      // a status callback
)

var twimlRoutes = []string{routeDialNumber, routeRingUser, routeRingClient, routeHangup, routeStatus}

// TwiML refusal reasons, the values of edgewise_twiml_refused_total's "reason" label.
const (
	twimlNotConfigured = "not_configured"
	twimlMethod        = "method"
	twimlContentType   = "content_type"
	twimlTooLarge      = "too_large"
	twimlBadForm       = "bad_form"
	twimlRepeated      = "repeated_param"
	twimlNoSignature   = "no_signature"
	twimlBadSignature  = "bad_signature"
	twimlUnknownNumber = "unknown_number"
	twimlUnknownCaller = "unknown_caller"
	twimlNoCallerID    = "no_caller_id"
	twimlBadNumber     = "bad_number"
	twimlInternal      = "internal"
)

var twimlReasons = []string{twimlNotConfigured, twimlMethod, twimlContentType, twimlTooLarge, twimlBadForm,
	twimlRepeated, twimlNoSignature, twimlBadSignature, twimlUnknownNumber, twimlUnknownCaller,
	twimlNoCallerID, twimlBadNumber, twimlInternal}

// CallEvent is a call a status callback reported as not connected (busy,
// failed, no answer, canceled) or with an error code.
type CallEvent struct {
	At           time.Time
	CallSID      string
	Status       string // CallStatus: busy, failed, no-answer, canceled, ...
	ErrorCode    string // Twilio's error code, e.g. 32009; "" when none
	ErrorMessage string
	From, To     string
	Direction    string
}

// WithCallEvents calls f for every CallEvent, from the request's goroutine:
// f must be quick (append to a journal, not send mail).
func WithCallEvents(f func(CallEvent)) Option {
	return func(p *Provider) { p.callEvents = f }
}

// serveTwiML answers both TwiML paths: TwiML (or, for status callbacks, an
// empty Response) or a JSON error.
func (p *Provider) serveTwiML(w http.ResponseWriter, r *http.Request) {
	noStore(w)
	route, doc, ref := p.twiml(w, r)
	if ref != nil {
		p.metrics.twiml.refused.WithLabelValues(ref.reason).Inc()
		p.logTwiMLRefusal(r, ref)
		if ref.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", http.MethodPost)
		}
		writeError(w, ref.status, ref.msg)
		return
	}
	p.metrics.twiml.answered.WithLabelValues(route).Inc()
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, doc) // the client went away; nothing to do
}

// twiml runs the checks in order of cost: configured, method, content type,
// size, form, signature; only then does anything depend on the parameters.
func (p *Provider) twiml(w http.ResponseWriter, r *http.Request) (route, doc string, ref *refusal) {
	st := p.state.Load()
	if st == nil || st.twiml == nil {
		return "", "", &refusal{http.StatusNotFound, twimlNotConfigured, "the TwiML app is not configured (token.twiml)", 0}
	}
	tw := st.twiml
	if r.Method != http.MethodPost {
		return "", "", &refusal{http.StatusMethodNotAllowed, twimlMethod, "use POST", 0}
	}
	form, ref := readTwiMLForm(w, r)
	if ref != nil {
		return "", "", ref
	}
	base, ref := tw.verify(r, form)
	if ref != nil {
		return "", "", ref
	}
	if r.URL.Path == PathTwiMLStatus {
		return p.callStatus(form)
	}
	return tw.voice(base+PathTwiMLStatus, r.URL.Query(), form)
}

// formError is a refused form: its reason label and what to say.
type formError struct {
	reason, msg string
}

func (e *formError) Error() string { return e.msg }

// readTwiMLForm reads a bounded application/x-www-form-urlencoded body.
func readTwiMLForm(w http.ResponseWriter, r *http.Request) (map[string]string, *refusal) {
	ct := r.Header.Get("Content-Type")
	if err := checkFormType(ct); err != nil {
		return nil, &refusal{http.StatusUnsupportedMediaType, twimlContentType, err.Error(), 0}
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxTwiMLBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, &refusal{http.StatusRequestEntityTooLarge, twimlTooLarge,
				fmt.Sprintf("body larger than %d bytes", MaxTwiMLBodyBytes), 0}
		}
		return nil, &refusal{http.StatusBadRequest, twimlBadForm, "cannot read body", 0}
	}
	form, err := parseTwiMLForm(ct, data)
	if err != nil {
		var fe *formError
		if errors.As(err, &fe) && fe.reason == twimlContentType {
			return nil, &refusal{http.StatusUnsupportedMediaType, fe.reason, fe.msg, 0}
		}
		if errors.As(err, &fe) {
			return nil, &refusal{http.StatusBadRequest, fe.reason, fe.msg, 0}
		}
		return nil, &refusal{http.StatusBadRequest, twimlBadForm, err.Error(), 0}
	}
	return form, nil
}

func checkFormType(ct string) error {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return &formError{twimlContentType, fmt.Sprintf("Content-Type %q: Twilio's webhooks are application/x-www-form-urlencoded", ct)}
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return &formError{twimlContentType, fmt.Sprintf("charset %q: only utf-8 is accepted", cs)}
	}
	return nil
}

// parseTwiMLForm decodes a webhook body into one value per name. A name
// given twice is refused: twilio-go's validator signs one value per name,
// so a second value would ride along unsigned, and Twilio's voice webhooks
// never repeat a name.
func parseTwiMLForm(contentType string, body []byte) (map[string]string, error) {
	if err := checkFormType(contentType); err != nil {
		return nil, err
	}
	if !utf8.Valid(body) {
		return nil, &formError{twimlBadForm, "body is not UTF-8"}
	}
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, &formError{twimlBadForm, "body is not a URL-encoded form: " + err.Error()}
	}
	if len(vals) > maxTwiMLParams {
		return nil, &formError{twimlBadForm, fmt.Sprintf("%d parameters, at most %d allowed", len(vals), maxTwiMLParams)}
	}
	form := make(map[string]string, len(vals))
	for k, v := range vals {
		if len(v) != 1 {
			return nil, &formError{twimlRepeated, fmt.Sprintf("parameter %q is given %d times", truncate(k, 64), len(v))}
		}
		if !utf8.ValidString(k) || !utf8.ValidString(v[0]) {
			return nil, &formError{twimlBadForm, "parameters are not UTF-8"}
		}
		form[k] = v[0]
	}
	return form, nil
}

// verify checks X-Twilio-Signature with twilio-go's validator against the
// URL as Twilio requested it under each public URL: the base, the path and
// the query exactly as sent. It returns the public URL the request was
// signed for.
func (tw *twimlState) verify(r *http.Request, form map[string]string) (string, *refusal) {
	sigs := r.Header.Values(SignatureHeader)
	switch {
	case len(sigs) == 0 || sigs[0] == "":
		return "", &refusal{http.StatusForbidden, twimlNoSignature, "no " + SignatureHeader + ": only Twilio may call this app", 0}
	case len(sigs) > 1:
		return "", &refusal{http.StatusForbidden, twimlBadSignature, "more than one " + SignatureHeader, 0}
	case r.Header.Get(webhookRuleHeader) != "":
		return "", &refusal{http.StatusForbidden, twimlBadSignature,
			"signed under a Webhooks rule (" + webhookRuleHeader + "); only auth-token signatures are checked: remove the rule for this URL", 0}
	}
	for _, base := range tw.bases {
		if tw.validator.Validate(signedURL(base, r), form, sigs[0]) {
			return base, nil
		}
	}
	return "", &refusal{http.StatusForbidden, twimlBadSignature,
		SignatureHeader + " does not match: the body was altered, or it was signed for another URL or account", 0}
}

func signedURL(base string, r *http.Request) string {
	u := base + r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	return u
}

// voice picks the TwiML for a call. To decides first: a call to one of the
// configured numbers rings its user, whoever calls. Any other To is a call
// out, allowed only from a configured user (its phone or its browser) and
// with that user's caller ID; there is no default route. Each dialled leg
// reports its end to statusURL (this replica's status path), so a leg that
// fails (a user not registered, a busy number) is counted and logged.
func (tw *twimlState) voice(statusURL string, query url.Values, form map[string]string) (string, string, *refusal) {
	to, from := form["To"], form["From"]
	step := query.Get("step")
	if step != "" && step != stepClient {
		return "", "", &refusal{http.StatusBadRequest, twimlBadForm, fmt.Sprintf("unknown step %q", truncate(step, 32)), 0}
	}
	if user, ok := tw.numberUser(to); ok {
		if step == stepClient {
			return tw.ringClient(statusURL, user, form["DialCallStatus"])
		}
		return render(routeRingUser, twiml.VoiceDial{
			// The phones first; the browser only if they do not answer:
			// Twilio refuses other nouns beside <Sip> in one <Dial>.
			Action:         stepClientAction,
			AnswerOnBridge: "true",
			InnerElements:  []twiml.Element{twiml.VoiceSip{SipUrl: "sip:" + tw.twilioOf[user] + "@" + tw.domain, StatusCallback: statusURL}},
		})
	}
	if step == stepClient {
		return "", "", &refusal{http.StatusNotFound, twimlUnknownNumber, fmt.Sprintf("To %q is not a configured number", truncate(to, 64)), 0}
	}
	caller, local := tw.caller(from)
	switch {
	case caller == "" && local:
		return "", "", &refusal{http.StatusForbidden, twimlUnknownCaller,
			fmt.Sprintf("From %q is not a configured phone user", truncate(from, 64)), 0}
	case caller == "":
		return "", "", &refusal{http.StatusNotFound, twimlUnknownNumber,
			fmt.Sprintf("To %q is not a configured number, and From %q is no phone user who may call out", truncate(to, 64), truncate(from, 64)), 0}
	}
	number, ok := tw.dialable(to)
	if !ok {
		return "", "", &refusal{http.StatusBadRequest, twimlBadNumber, fmt.Sprintf("To %q is not a phone number", truncate(to, 64)), 0}
	}
	cid := tw.callerID[caller]
	if cid == "" {
		return "", "", &refusal{http.StatusForbidden, twimlNoCallerID,
			fmt.Sprintf("user %q has no number in token.twiml.numbers to call out with", caller), 0}
	}
	return render(routeDialNumber, twiml.VoiceDial{
		CallerId:       cid,
		AnswerOnBridge: "true",
		InnerElements:  []twiml.Element{twiml.VoiceNumber{PhoneNumber: number, StatusCallback: statusURL}},
	})
}

// ringClient answers the <Dial> action after the user's phones: done when
// they answered (or the caller gave up), else the user's browser.
func (tw *twimlState) ringClient(statusURL, user, dialStatus string) (string, string, *refusal) {
	switch dialStatus {
	case "completed", "answered", "canceled":
		return render(routeHangup, twiml.VoiceHangup{})
	}
	return render(routeRingClient, twiml.VoiceDial{
		AnswerOnBridge: "true",
		InnerElements:  []twiml.Element{twiml.VoiceClient{Identity: clientid.Of(user), StatusCallback: statusURL}},
	})
}

func render(route string, verbs ...twiml.Element) (string, string, *refusal) {
	doc, err := twiml.Voice(verbs)
	if err != nil {
		return "", "", &refusal{http.StatusInternalServerError, twimlInternal, "cannot render TwiML", 0}
	}
	return route, doc, nil
}

// numberUser finds the user a To rings: a configured number, as Twilio
// gives it for a call to the number (+14155550100) or for a phone that
// dialled it (sip:+14155550100@<domain>.sip.twilio.com).
func (tw *twimlState) numberUser(to string) (string, bool) {
	n, ok := tw.sipUser(to)
	if !ok {
		n = to
	}
	user, ok := tw.byNumber[n]
	return user, ok
}

// caller names the configured user a From is; local reports whether From
// is of the SIP domain or a browser client at all (a stranger there is
// refused as such, not as an unknown number).
func (tw *twimlState) caller(from string) (user string, local bool) {
	if id, ok := strings.CutPrefix(from, "client:"); ok {
		return tw.byID[id], true
	}
	if u, ok := tw.sipUser(from); ok {
		return tw.byTwilio[u], true
	}
	return "", false
}

// sipUser returns the user part of a sip: or sips: URI of the SIP domain.
func (tw *twimlState) sipUser(s string) (string, bool) {
	if !strings.HasPrefix(s, "sip:") && !strings.HasPrefix(s, "sips:") {
		return "", false
	}
	var u sip.Uri
	if err := sip.ParseUri(s, &u); err != nil || !tw.hosts[strings.ToLower(u.Host)] || u.User == "" {
		return "", false
	}
	return u.User, true
}

// phoneNumber is what <Number> is given: E.164, or 3 to 15 digits that
// Twilio reads as a national number.
var phoneNumber = regexp.MustCompile(`^(\+[1-9][0-9]{1,14}|[0-9]{3,15})$`)

// dialable is the number a user's call out is for: To itself (a browser's
// call), or the user part of a SIP URI of the domain (a phone's).
func (tw *twimlState) dialable(to string) (string, bool) {
	n := to
	if strings.Contains(to, ":") {
		u, ok := tw.sipUser(to)
		if !ok {
			return "", false
		}
		n = u
	}
	return n, phoneNumber.MatchString(n)
}

// notConnected are the final statuses of a call that never connected.
var notConnected = map[string]bool{"busy": true, "failed": true, "no-answer": true, "canceled": true}

// callStatus counts a status callback, and reports a call that did not
// connect or carries an error code (log, metrics, CallEvent).
func (p *Provider) callStatus(form map[string]string) (string, string, *refusal) {
	status := form["CallStatus"]
	if status == "" {
		return "", "", &refusal{http.StatusBadRequest, twimlBadForm, "CallStatus is missing", 0}
	}
	code := form["ErrorCode"]
	p.metrics.twiml.countStatus(status, code)
	if notConnected[status] || code != "" {
		ev := CallEvent{
			At:           p.now(),
			CallSID:      truncate(form["CallSid"], 64),
			Status:       truncate(status, 32),
			ErrorCode:    truncate(code, 16),
			ErrorMessage: truncate(form["ErrorMessage"], 200),
			From:         truncate(form["From"], 128),
			To:           truncate(form["To"], 128),
			Direction:    truncate(form["Direction"], 32),
		}
		p.log.Warn("call not connected", "call_sid", ev.CallSID, "status", ev.Status, "error_code", ev.ErrorCode,
			"error_message", ev.ErrorMessage, "from", ev.From, "to", ev.To, "direction", ev.Direction)
		if p.callEvents != nil {
			p.callEvents(ev)
		}
	}
	return render(routeStatus)
}

// logTwiMLRefusal writes one line per refused request, but at most one a
// minute per source and reason: a flood must not become a flood of logs
// (the metric counts every one).
func (p *Provider) logTwiMLRefusal(r *http.Request, ref *refusal) {
	src := peerAddr(r)
	if st := p.state.Load(); st != nil {
		src = clientAddr(r, src, st.settings.TrustedProxies)
	}
	if !p.twimlLogs.allow(addrKey(src)+" "+ref.reason, p.now()) {
		return
	}
	p.log.Warn("TwiML request refused", "path", r.URL.Path, "status", ref.status, "reason", ref.reason,
		"msg", ref.msg, "remote", src.String())
}

// logLimiter lets one line through per key and interval; its memory is
// bounded by forgetting everything when full.
type logLimiter struct {
	mu    sync.Mutex
	every time.Duration
	last  map[string]time.Time
}

const logLimiterMax = 4096

func (l *logLimiter) allow(key string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t, ok := l.last[key]; ok && now.Sub(t) < l.every {
		return false
	}
	if l.last == nil || len(l.last) >= logLimiterMax {
		l.last = map[string]time.Time{}
	}
	l.last[key] = now
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// Cut on a rune boundary so logs stay valid UTF-8.
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
