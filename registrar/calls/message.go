package calls

import (
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// send writes a response, counting final responses to INVITEs.
func (b *B2BUA) send(tx sip.ServerTransaction, res *sip.Response) error {
	if cs := res.CSeq(); cs != nil && cs.MethodName == sip.INVITE {
		b.metrics.response(res)
	}
	if res.GetHeader("Server") == nil {
		res.AppendHeader(sip.NewHeader("Server", b.state.Load().s.UserAgent))
	}
	err := tx.Respond(res)
	if err != nil {
		b.log.Debug("sending response failed", "code", res.StatusCode, "error", err)
	}
	return err
}

// reply answers req with a bodiless response.
func (b *B2BUA) reply(tx sip.ServerTransaction, req *sip.Request, code int, reason string, hdrs ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	b.send(tx, res)
}

// reasonHeader explains a response we made up (RFC 3326).
func reasonHeader(code int, text string) sip.Header {
	return sip.NewHeader("Reason", "SIP;cause="+strconv.Itoa(code)+`;text="`+quotable.Replace(text)+`"`)
}

// quotable makes text safe inside a quoted-string.
var quotable = strings.NewReplacer(`"`, "'", `\`, "/", "\r", " ", "\n", " ")

// warningHeader explains a refusal to a human reading the trace (RFC 3261
// §20.43, code 399: miscellaneous).
func warningHeader(text string) sip.Header {
	return sip.NewHeader("Warning", `399 edgewise "`+quotable.Replace(text)+`"`)
}

// isSDP reports whether a message's body is a session description: its
// Content-Type says so, or a body came without one.
// message is what requests and responses share that relaying reads.
type message interface {
	Body() []byte
	GetHeader(name string) sip.Header
	Headers() []sip.Header
}

func isSDP(m message) bool {
	if len(m.Body()) == 0 {
		return false
	}
	ct := m.GetHeader("Content-Type")
	if ct == nil {
		return true
	}
	v, _, _ := strings.Cut(ct.Value(), ";")
	return strings.EqualFold(strings.TrimSpace(v), "application/sdp")
}

// sdpHeader is the Content-Type of a relayed session description.
func sdpHeader() sip.Header { return sip.NewHeader("Content-Type", "application/sdp") }

// copyHeaders carries the headers worth relaying from one side's message
// to the other's: Twilio's X- headers (X-Twilio-CallSid …) and a phone's
// custom X- headers, which Twilio hands to the webhook.
func copyHeaders(dst interface{ AppendHeader(sip.Header) }, src message, names ...string) {
	for _, h := range src.Headers() {
		n := h.Name()
		keep := len(n) > 2 && (n[0] == 'X' || n[0] == 'x') && n[1] == '-'
		for _, want := range names {
			keep = keep || strings.EqualFold(n, want)
		}
		if keep {
			dst.AppendHeader(sip.NewHeader(n, h.Value()))
		}
	}
}
