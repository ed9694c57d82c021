package calls

import (
	"slices"
	"time"

	"github.com/edgewise-sip/edgewise/media"
	"github.com/edgewise-sip/edgewise/media/webrtc"
)

// CallStatus is one call in /v1/status ("calls": [...]).
type CallStatus struct {
	ID string `json:"id"`
	// Direction is "outbound" (a phone's call to a number), "inbound" (from
	// Twilio) or "local" (a phone's call to another local user, connected
	// by edgewise itself).
	Direction string `json:"direction"`
	// Route is where the call goes: "twilio", "local" (the callee's phones),
	// "fallback" (a fallback target, no edge being usable) or "peer" (a
	// cluster node forked it here for the phones registered here).
	Route string `json:"route"`
	// Emergency marks a call to one of the emergency numbers.
	Emergency bool   `json:"emergency,omitempty"`
	User      string `json:"user"`
	// From is the caller as its side named it; To the dialled number
	// (outbound), the local user (inbound) or the callee (local).
	From     string     `json:"from"`
	To       string     `json:"to"`
	State    string     `json:"state"` // setup, ringing, answered
	CallSid  string     `json:"call_sid,omitempty"`
	Edge     string     `json:"edge,omitempty"`   // outbound: the edge the call went to
	Target   string     `json:"target,omitempty"` // outbound: the Twilio (or fallback target's) IP:port it went to
	Started  time.Time  `json:"started"`
	Answered *time.Time `json:"answered,omitempty"`
	// Phone and TwilioLeg are the two dialogs of a call through Twilio; a
	// call without Twilio has Phone (the caller's) and Callee (the local
	// phone's or the fallback target's). Forks are the phones or targets
	// still ringing during a forked setup.
	Phone     *LegStatus `json:"phone,omitempty"`
	TwilioLeg *LegStatus `json:"twilio_leg,omitempty"`
	Callee    *LegStatus `json:"callee,omitempty"`
	Forks     int        `json:"forks,omitempty"`
	// Media is the relay's view: per-leg addresses and RTP/RTCP counters.
	Media *media.SessionStats `json:"media,omitempty"`
	// Browser is the WebRTC bridge of a browser's leg: ICE/DTLS state, SRTP
	// in and out toward the browser, plain RTP toward the relay.
	Browser *webrtc.Stats `json:"browser,omitempty"`
}

// LegStatus is one dialog of a call.
type LegStatus struct {
	CallID    string `json:"call_id"`
	Transport string `json:"transport"`
	// Remote is where requests in the dialog are sent when that is fixed
	// (a phone's NAT address, the Twilio IP); Contact is the peer's target.
	Remote  string `json:"remote,omitempty"`
	Contact string `json:"contact,omitempty"`
}

// Calls returns every call in progress, oldest first, JSON-ready.
func (b *B2BUA) Calls() []CallStatus {
	b.mu.Lock()
	list := make([]*call, 0, len(b.calls))
	for _, c := range b.calls {
		list = append(list, c)
	}
	b.mu.Unlock()
	slices.SortFunc(list, func(x, y *call) int { return x.started.Compare(y.started) })
	out := make([]CallStatus, 0, len(list))
	for _, c := range list {
		out = append(out, c.status())
	}
	return out
}

func (c *call) status() CallStatus {
	st := CallStatus{
		ID: c.id, Direction: string(c.dir), User: c.user, From: c.from, To: c.to,
		CallSid: c.callSid, Started: c.started, Emergency: c.emergency,
	}
	c.mu.Lock()
	st.State = string(c.phase)
	st.Route = string(c.route)
	if !c.answered.IsZero() {
		t := c.answered
		st.Answered = &t
	}
	if c.target.IP.IsValid() {
		st.Edge, st.Target = c.target.Edge, c.target.Addr()
	}
	if c.reached != "" {
		st.Target = c.reached
	}
	in, out, sess := c.in, c.out, c.sess
	if out == nil {
		st.Forks = len(c.forks)
	}
	withoutTwilio := c.route != routeTwilio
	c.mu.Unlock()
	for _, l := range []*leg{in, out} {
		if l == nil {
			continue
		}
		ls := l.status()
		if br := l.bridge(); br != nil {
			bs := br.Stats()
			st.Browser = &bs
		}
		switch {
		case withoutTwilio && l == in:
			st.Phone = &ls
		case withoutTwilio:
			st.Callee = &ls
		case l.side == media.A:
			st.Phone = &ls
		default:
			st.TwilioLeg = &ls
		}
	}
	if sess != nil {
		ms := sess.Stats()
		st.Media = &ms
	}
	return st
}
