package media

// reason is why a packet was not relayed. The set is closed so metric labels
// stay bounded.
type reason uint8

const (
	reasonOK reason = iota
	// dropStranger: from a source other than the latched one, or, on a
	// strict leg (Leg.RestrictSources), from an address the peer did not
	// signal from.
	dropStranger
	// dropNotAllowed: leg B, before latching, from outside Settings.AllowB.
	dropNotAllowed
	// dropMalformed: not RTP/RTCP (wrong version, bad padding, unknown RTCP type).
	dropMalformed
	// dropTruncated: shorter than its own header says.
	dropTruncated
	// dropOversize: larger than the receive buffer (cut by the kernel).
	dropOversize
	// dropNoRemote: the other leg has no destination yet (no SDP, no latch).
	dropNoRemote
	// dropSendError: the kernel refused the send.
	dropSendError
	// dropSRTP: on an SRTP leg, a packet that failed authentication (a
	// wrong key, a forgery, noise), was replayed, or could not be
	// encrypted for the peer. Never relayed: decrypting it would pass on
	// noise.
	dropSRTP
	numReasons
)

var reasonNames = [numReasons]string{
	"", "stranger", "not_allowed", "malformed", "truncated", "oversize", "no_remote", "send_error", "srtp",
}

func (r reason) String() string { return reasonNames[r] }

// drops counts packets per reason.
type drops [numReasons]uint64

func (d *drops) asMap() map[string]uint64 {
	m := make(map[string]uint64)
	for r := reason(1); r < numReasons; r++ {
		if d[r] > 0 {
			m[r.String()] = d[r]
		}
	}
	return m
}
