package edgesim

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Errors of the call API; the control API maps them to HTTP codes.
var (
	// ErrUnknownCall: no call with that id (404).
	ErrUnknownCall = errors.New("unknown call")
	// ErrCallEnded: the call is already over (409).
	ErrCallEnded = errors.New("call already ended")
	// ErrInvalidCall: a PlaceCall request is malformed (400).
	ErrInvalidCall = errors.New("invalid call request")
	// ErrNotRunning: calls need a running simulator (503).
	ErrNotRunning = errors.New("simulator is not running")
	// ErrTooManyCalls: calls.max_calls are in progress (503).
	ErrTooManyCalls = errors.New("too many calls in progress")
)

// CallID identifies a call. It is the call's Twilio CallSid, "CA" and 32
// hex digits, which placed calls also carry in X-Twilio-CallSid.
type CallID string

// CallState is where a call is in its life.
type CallState string

// A call moves trying → ringing → answered → ended, or ends in failed from
// any state before answered.
const (
	CallTrying   CallState = "trying"   // INVITE sent or received, nothing more yet
	CallRinging  CallState = "ringing"  // 180 or 183 sent or received
	CallAnswered CallState = "answered" // 2xx; media flows
	CallEnded    CallState = "ended"    // answered, then hung up by either side
	CallFailed   CallState = "failed"   // over without being answered; Code says why
)

// CallDirection says who set the call up.
type CallDirection string

const (
	// CallReceived: the gateway sent the INVITE (phone → Twilio).
	CallReceived CallDirection = "received"
	// CallPlaced: edgesim placed it through PlaceCall (Twilio → phone).
	CallPlaced CallDirection = "placed"
)

// Who ended a call, in CallStatus.EndedBy.
const (
	endedByGateway = "gateway"
	endedByEdgesim = "edgesim"
)

// CallStatus is a call as the control API shows it.
type CallStatus struct {
	ID        CallID        `json:"id"`
	Direction CallDirection `json:"direction"`
	State     CallState     `json:"state"`
	// Code is the final SIP status: 200 once answered (kept after the
	// hang-up), the failure (486, 487 for a cancelled call, 480 …) when
	// failed, 0 while the call is being set up.
	Code   int    `json:"code,omitempty"`
	Reason string `json:"reason,omitempty"`
	// From and To are user parts: for received calls the INVITE's From user
	// and Request-URI user (the dialled number), for placed calls the
	// request's from and to.
	From string `json:"from"`
	To   string `json:"to"`
	// Edge and IP: where a received INVITE arrived; for a placed call, the
	// edge IP the answered fork was sent from.
	Edge      string `json:"edge,omitempty"`
	IP        string `json:"ip,omitempty"`
	Transport string `json:"transport,omitempty"`
	// SIPCallID is the Call-ID of the dialog (for a placed call, of the
	// answered fork).
	SIPCallID string `json:"sip_call_id,omitempty"`
	// AnsweredBy is the contact (binding) that answered a placed call.
	AnsweredBy string `json:"answered_by,omitempty"`
	// EndedBy is "gateway" or "edgesim" once the call is over.
	EndedBy string `json:"ended_by,omitempty"`
	// Forks lists a placed call's INVITEs, one per binding.
	Forks []ForkStatus `json:"forks,omitempty"`
	// Media is set from the moment edgesim has a media stream for the call.
	Media *MediaStatus `json:"media,omitempty"`
	// Reinvites counts re-INVITEs and UPDATEs the gateway sent in the
	// dialog; Infos counts its INFOs.
	Reinvites  int        `json:"reinvites"`
	Infos      int        `json:"infos"`
	StartedAt  time.Time  `json:"started_at"`
	AnsweredAt *time.Time `json:"answered_at,omitempty"`
	EndedAt    *time.Time `json:"ended_at,omitempty"`
}

// ForkStatus is one INVITE of a placed call.
type ForkStatus struct {
	Contact   string `json:"contact"`
	Edge      string `json:"edge"`
	IP        string `json:"ip"` // the edge IP the INVITE was sent from
	Transport string `json:"transport"`
	SIPCallID string `json:"sip_call_id"`
	// State is trying, ringing, answered, cancelled or failed.
	State  string `json:"state"`
	Code   int    `json:"code,omitempty"` // the last response's status
	Reason string `json:"reason,omitempty"`
}

// Fork states.
const (
	forkTrying    = "trying"
	forkRinging   = "ringing"
	forkAnswered  = "answered"
	forkCancelled = "cancelled"
	forkFailed    = "failed"
)

// MediaStatus is edgesim's media end of a call and its echo counters.
type MediaStatus struct {
	// Local is edgesim's RTP address, as its SDP gives it.
	Local string `json:"local"`
	// RemoteSDP is the RTP address the gateway's SDP gave.
	RemoteSDP string `json:"remote_sdp,omitempty"`
	// Source is where the last RTP packet came from; echoes go there.
	Source string `json:"source,omitempty"`
	Codec  string `json:"codec,omitempty"`
	// Direction is edgesim's own direction: recvonly or inactive while the
	// gateway holds the call (then nothing is echoed), else sendrecv.
	Direction       string `json:"direction"`
	PacketsReceived uint64 `json:"packets_received"`
	BytesReceived   uint64 `json:"bytes_received"`
	PacketsEchoed   uint64 `json:"packets_echoed"`
	BytesEchoed     uint64 `json:"bytes_echoed"`
	// Invalid counts datagrams on either port that were not RTP or RTCP;
	// they are not echoed.
	Invalid      uint64 `json:"invalid"`
	RTCPReceived uint64 `json:"rtcp_received"`
	RTCPEchoed   uint64 `json:"rtcp_echoed"`
	// SRTP says the call speaks SRTP (Secure Media): PacketsReceived then
	// counts packets that decrypted and authenticated under the gateway's
	// a=crypto key, and SRTPFailed the ones that did not (wrong key,
	// replay, plain RTP); those are not echoed.
	SRTP       bool   `json:"srtp,omitempty"`
	SRTPFailed uint64 `json:"srtp_failed,omitempty"`
	// SRTPEarly counts packets that came before the gateway's key did
	// (its SDP answer was still on the way); they are not echoed.
	SRTPEarly uint64 `json:"srtp_early,omitempty"`
	// PayloadTypes counts RTP received by payload type ("0": PCMU, "101":
	// telephone-event as the SDP numbered it, ...).
	PayloadTypes map[string]uint64 `json:"payload_types,omitempty"`
}

// newCallSid makes a Twilio-style CallSid.
func newCallSid() CallID { return CallID("CA" + randomHex(16)) }

func randomUint63() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	return binary.BigEndian.Uint64(b[:]) >> 1
}

// Calls lists every call in progress and the most recent finished ones
// (calls.history), oldest first.
func (s *Sim) Calls() []CallStatus {
	cs := s.calls.list()
	out := make([]CallStatus, 0, len(cs))
	for _, c := range cs {
		st, _ := c.status()
		out = append(out, st)
	}
	return out
}

// Call reports one call.
func (s *Sim) Call(id CallID) (CallStatus, error) {
	c, err := s.calls.get(id)
	if err != nil {
		return CallStatus{}, err
	}
	st, _ := c.status()
	return st, nil
}

// WaitCall waits until cond holds for the call's status and returns that
// status. It wakes on every change of state, fork or SDP; media counters
// change without waking it, so poll Call for those.
func (s *Sim) WaitCall(ctx context.Context, id CallID, cond func(CallStatus) bool) (CallStatus, error) {
	c, err := s.calls.get(id)
	if err != nil {
		return CallStatus{}, err
	}
	for {
		st, changed := c.status()
		if cond(st) {
			return st, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return st, fmt.Errorf("call %s still %s: %w", id, st.State, ctx.Err())
		}
	}
}

// HangUp ends a call from edgesim's side: a placed call still ringing is
// cancelled (CANCEL), a received one still ringing is refused with 480, an
// answered call gets a BYE. It returns at once; WaitCall tells when the
// call is over.
func (s *Sim) HangUp(id CallID) error {
	c, err := s.calls.get(id)
	if err != nil {
		return err
	}
	if c.isFinished() {
		return fmt.Errorf("%w: %s", ErrCallEnded, id)
	}
	c.requestHangUp("hung up by edgesim")
	return nil
}

// IsOver reports whether a call has ended or failed; a handy WaitCall
// condition.
func (st CallStatus) IsOver() bool { return st.State == CallEnded || st.State == CallFailed }
