package edge

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// State is the health of an edge or of one of its IPs.
type State string

// States. An edge is up when any IP is up and down when every IP has failed;
// in between it keeps its previous state, so one dead IP does not flap it.
const (
	StateUnknown State = "unknown"
	StateUp      State = "up"
	StateDown    State = "down"
)

// ErrNoResponse is what a Prober returns (wrapped) when nothing answered in
// time; a context deadline counts the same.
var ErrNoResponse = errors.New("no response")

// Target is one place a request can go: the edge FQDN (Request-URI, TLS SNI
// and certificate name) and one explicit IP:port to send it to.
type Target struct {
	Edge      string     `json:"edge"`
	FQDN      string     `json:"fqdn"`
	IP        netip.Addr `json:"ip"`
	Port      int        `json:"port"`
	Transport string     `json:"transport"` // udp, tcp or tls
}

// Addr is the explicit destination "ip:port" (sipgo's Request.SetDestination).
func (t Target) Addr() string {
	return net.JoinHostPort(t.IP.String(), strconv.Itoa(t.Port))
}

// String is for logs.
func (t Target) String() string {
	return t.Edge + "/" + t.Addr() + "/" + t.Transport
}

// Result is the outcome of one request to a Target, from a probe or from real
// traffic fed back with Monitor.Report.
type Result struct {
	// StatusCode of the first response; 0 = no response.
	StatusCode int
	// RTT from sending to the response.
	RTT time.Duration
	// RetryAfter from the response's Retry-After header (0 = none).
	RetryAfter time.Duration
}

// Prober checks one IP of an edge. It must return by the time ctx is done; the
// Monitor gives each probe a context bounded by Settings.Timeout. Declared
// here because the Monitor is its consumer; SIPProber is the real one.
type Prober interface {
	Probe(ctx context.Context, t Target) (Result, error)
}

// ProberFunc adapts a function to Prober.
type ProberFunc func(ctx context.Context, t Target) (Result, error)

// Probe calls f.
func (f ProberFunc) Probe(ctx context.Context, t Target) (Result, error) { return f(ctx, t) }

// ChangeKind says why the active edge changed. The set is closed, so it is
// safe as a metric label.
type ChangeKind string

// Change kinds.
const (
	// ChangeFailover: the active edge went down (or was removed); moved on.
	ChangeFailover ChangeKind = "failover"
	// ChangeFailback: a more-preferred edge has been up for the failback hold.
	ChangeFailback ChangeKind = "failback"
	// ChangeReload: Apply changed the order (or the edge set).
	ChangeReload ChangeKind = "reload"
	// ChangeUnavailable: every edge is down. To is the edge still tried as a
	// last resort; Active reports ok=false.
	ChangeUnavailable ChangeKind = "unavailable"
	// ChangeAvailable: an edge came back after every edge was down.
	ChangeAvailable ChangeKind = "available"
)

// Change is one change of the active-edge decision, delivered to Subscribe
// callbacks. Reason is a complete sentence fragment such as
// "edge ashburn down: 3/3 IPs timed out after 4s", ready for the upstream
// manager to log as "<reason>; moving N registrations to <To>".
type Change struct {
	From   string     `json:"from"`
	To     string     `json:"to"`
	Kind   ChangeKind `json:"kind"`
	Reason string     `json:"reason"`
	At     time.Time  `json:"at"`
}

// EdgeStatus is one edge in /v1/status ("edges": [...]).
type EdgeStatus struct {
	Name   string     `json:"name"`
	FQDN   string     `json:"fqdn"`
	State  State      `json:"state"`
	Active bool       `json:"active"`
	Since  time.Time  `json:"since"`
	Reason string     `json:"reason,omitempty"`
	DNS    DNSStatus  `json:"dns"`
	IPs    []IPStatus `json:"ips"`
}

// IPStatus is one resolved address of an edge.
type IPStatus struct {
	IP         string     `json:"ip"`
	State      State      `json:"state"`
	LastRTTMs  float64    `json:"last_rtt_ms"`
	LastStatus int        `json:"last_status,omitempty"`
	LastError  string     `json:"last_error"`
	Since      time.Time  `json:"since"`
	RetryAfter *time.Time `json:"retry_after,omitempty"`
}

// DNSStatus describes the edge's last DNS lookup. Stale means the IPs shown
// come from an earlier answer because the latest lookup failed.
type DNSStatus struct {
	ResolvedAt time.Time `json:"resolved_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	Stale      bool      `json:"stale"`
	LastError  string    `json:"last_error,omitempty"`
}
