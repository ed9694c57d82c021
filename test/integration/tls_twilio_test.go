package integration

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/registrar/twilio/edge"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// SIP over TLS toward Twilio, end to end: edgewise with twilio.transport
// tls against edgesim's TLS ports, whose certificates come from a test CA
// edgewise is told to trust with twilio.ca_file.

// tlsTwTimeout is twilio.timeout in these tests: long enough that a
// certificate refusal that waited for it would show.
const tlsTwTimeout = 3 * time.Second

// tlsTwSim is edgesim with SIP over TLS on port 5061 of every edge IP; its
// test CA is written to caFile.
type tlsTwSim struct {
	*sim
	caFile string
}

func tlsTwStartSim(t *testing.T) *tlsTwSim {
	t.Helper()
	return tlsTwStartSimWith(t, "")
}

// tlsTwStartSimWith is tlsTwStartSim with extra lines of edgesim config.
func tlsTwStartSimWith(t *testing.T, extra string) *tlsTwSim {
	t.Helper()
	s := &tlsTwSim{sim: &sim{ips: map[string][]string{}}, caFile: filepath.Join(t.TempDir(), "edgesim-ca.pem")}
	ctl := nextIP(t)
	s.control = "http://" + ctl + ":9070"
	s.dns = ctl + ":5353"
	var edges strings.Builder
	for _, name := range []string{"ashburn", "umatilla"} {
		ips := []string{nextIP(t), nextIP(t), nextIP(t)}
		s.ips[name] = ips
		fmt.Fprintf(&edges, "  - {name: %s, ips: [%s], port: 5060, tls_port: 5061}\n", name, strings.Join(ips, ", "))
	}
	cfg := fmt.Sprintf(`domain: itest
edges:
%stransports: [udp, tcp, tls]
ca_file: %s
dns: {listen: "%s", ttl: 600}
control: {listen: "%s:9070"}
credentials:
  - {user: alice, password: AliceTwilio123}
  - {user: bob, password: BobTwilio1234}
  - {user: carol, password: CarolTwilio123}
%s`, edges.String(), s.caFile, s.dns, ctl, extra)
	path := filepath.Join(t.TempDir(), "edgesim.yaml")
	writeFile(t, path, cfg)
	s.proc = startProc(t, "edgesim", "-c", path, "-log-level", "debug")
	kit.WaitFor(t, 10*time.Second, "edgesim /healthz", func() bool {
		resp, err := http.Get(s.control + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return s
}

// tlsTwConfig is upstreamConfig with a tls: listener on 5061 (Twilio calls
// in over it), twilio.transport tls and, when caFile is set, twilio.ca_file.
func tlsTwConfig(t *testing.T, s *tlsTwSim, caFile string) func(ip, dir string) string {
	return func(ip, dir string) string {
		cert, key := writeCert(t, dir, ip)
		cfg := upstreamConfig(s.sim, "")(ip, dir)
		old := fmt.Sprintf(`listen: ["udp:%[1]s:5060", "tcp:%[1]s:5060"]`, ip)
		if !strings.Contains(cfg, old) {
			t.Fatalf("daemonConfig changed its listen line: %s", old)
		}
		cfg = strings.Replace(cfg, old, fmt.Sprintf(`listen: ["udp:%[1]s:5060", "tcp:%[1]s:5060", "tls:%[1]s:5061"]
  tls: {cert_file: %[2]s, key_file: %[3]s}`, ip, cert, key), 1)
		twilio := fmt.Sprintf("  timeout: %s\n  transport: tls\n", tlsTwTimeout)
		if caFile != "" {
			twilio += "  ca_file: " + caFile + "\n"
		}
		if !strings.Contains(cfg, "  timeout: 500ms\n") {
			t.Fatal("upstreamConfig changed its timeout line")
		}
		return strings.Replace(cfg, "  timeout: 500ms\n", twilio, 1)
	}
}

// tlsTwBinding is one of edgesim's bindings.
type tlsTwBinding struct {
	User      string `json:"user"`
	Contact   string `json:"contact"`
	Edge      string `json:"edge"`
	IP        string `json:"ip"`
	Port      int    `json:"port"`
	Transport string `json:"transport"`
}

func tlsTwBindings(t *testing.T, s *tlsTwSim, user string) []tlsTwBinding {
	t.Helper()
	var body struct {
		Bindings []tlsTwBinding `json:"bindings"`
	}
	tlsTwGet(t, s.control+"/v1/bindings?user="+user, &body)
	return body.Bindings
}

// tlsTwIP is one edge IP as edgesim counts it.
type tlsTwIP struct {
	Requests   map[string]uint64 `json:"requests"`
	Authorized uint64            `json:"authorized"`
	TLS        *struct {
		Handshakes uint64 `json:"handshakes"`
		Failed     uint64 `json:"failed"`
		LastError  string `json:"last_error"`
	} `json:"tls"`
}

func tlsTwIPStatus(t *testing.T, s *tlsTwSim, ip string) tlsTwIP {
	t.Helper()
	var st tlsTwIP
	tlsTwGet(t, s.control+"/v1/ips/"+ip, &st)
	if st.TLS == nil {
		t.Fatalf("edgesim reports no TLS for %s", ip)
	}
	return st
}

// tlsTwCall is the part of an edgesim call these tests read.
type tlsTwCall struct {
	ID        string `json:"id"`
	State     string `json:"state"`
	EndedBy   string `json:"ended_by"`
	IP        string `json:"ip"`
	Transport string `json:"transport"`
	Forks     []struct {
		Transport string `json:"transport"`
		State     string `json:"state"`
	} `json:"forks"`
	Media *struct {
		PacketsReceived uint64 `json:"packets_received"`
		PacketsEchoed   uint64 `json:"packets_echoed"`
		SRTP            bool   `json:"srtp"`
		SRTPFailed      uint64 `json:"srtp_failed"`
	} `json:"media"`
}

func tlsTwCalls(t *testing.T, s *tlsTwSim) []tlsTwCall {
	t.Helper()
	var body struct {
		Calls []tlsTwCall `json:"calls"`
	}
	tlsTwGet(t, s.control+"/v1/calls", &body)
	return body.Calls
}

func tlsTwGet(t *testing.T, url string, out any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// tlsTwEdgeIP is one IP of one edge in edgewise's /v1/status.
func tlsTwEdgeIP(t *testing.T, d *daemon, edgeName, ip string) edge.IPStatus {
	t.Helper()
	for _, e := range d.status(t).Edges {
		if e.Name != edgeName {
			continue
		}
		for _, is := range e.IPs {
			if is.IP == ip {
				return is
			}
		}
	}
	t.Fatalf("edgewise's status has no %s ip %s", edgeName, ip)
	return edge.IPStatus{}
}

func tlsTwEdge(t *testing.T, d *daemon, name string) edge.EdgeStatus {
	t.Helper()
	for _, e := range d.status(t).Edges {
		if e.Name == name {
			return e
		}
	}
	t.Fatalf("edgewise's status has no edge %s", name)
	return edge.EdgeStatus{}
}

// tlsTwRegisterPhone registers alice from a SIPp phone on its own IP
// (port 5060, so a SIPp UAS can answer there later) and returns the IP.
func tlsTwRegisterPhone(t *testing.T, d *daemon) string {
	t.Helper()
	ip := nextIP(t)
	if code, out := sippRun(t, "register.xml", ip, d.ip+":5060", [][]string{authRow("alice", "alice-secret", 3600)}, 1, "-p", "5060"); code != 0 {
		t.Fatalf("register alice: sipp exited %d:\n%s", code, out)
	}
	return ip
}

// tlsTwRegisteredAt waits for alice's one binding at Twilio, over TLS
// with a transport=tls Contact on edgewise's tls: port, and returns it.
func tlsTwRegisteredAt(t *testing.T, s *tlsTwSim, d *daemon, within time.Duration) tlsTwBinding {
	t.Helper()
	var b tlsTwBinding
	kit.WaitFor(t, within, "alice registered at edgesim over TLS", func() bool {
		bs := tlsTwBindings(t, s, "alice")
		if len(bs) != 1 {
			return false
		}
		b = bs[0]
		return true
	})
	if b.Transport != "TLS" || b.Port != 5061 || !strings.Contains(b.Contact, d.ip+":5061") || !strings.Contains(b.Contact, "transport=tls") {
		t.Fatalf("binding %+v, want registered over TLS on 5061 with a transport=tls Contact on %s:5061", b, d.ip)
	}
	return b
}

// TestTLSTwilioRegisterKeepaliveCalls: a SIPp phone registers over UDP to
// edgewise, which registers its user at edgesim over TLS, keeps the edge
// alive with OPTIONS over TLS, and carries an outbound and an inbound call
// over TLS with RTP echoed by edgesim.
func TestTLSTwilioRegisterKeepaliveCalls(t *testing.T) {
	s := tlsTwStartSim(t)
	d := startDaemon(t, tlsTwConfig(t, s, s.caFile))
	phoneIP := tlsTwRegisterPhone(t, d)
	b := tlsTwRegisteredAt(t, s, d, 15*time.Second)
	if b.Edge != "ashburn" {
		t.Fatalf("registered on %s, want ashburn", b.Edge)
	}

	// Keepalives: every IP of the active edge gets OPTIONS over TLS
	// (edgewise speaks only TLS to Twilio here; edgesim counts the
	// handshakes on each TLS port) and is up in edgewise's status.
	kit.WaitFor(t, 10*time.Second, "OPTIONS over TLS to every ashburn IP, each up", func() bool {
		for _, ip := range s.ips["ashburn"] {
			st := tlsTwIPStatus(t, s, ip)
			if st.Requests["OPTIONS"] < 2 || st.TLS.Handshakes == 0 || st.TLS.Failed != 0 {
				return false
			}
			if is := tlsTwEdgeIP(t, d, "ashburn", ip); is.State != edge.StateUp {
				return false
			}
		}
		return true
	})

	// Phone → Twilio.
	res := sippAsync(t, "call_rtp.xml", nextIP(t), d.ip+":5060", dialRow("alice", "15550001111"))
	checkRTPFlow(t, d)
	waitSipp(t, res, "outbound call over TLS")
	kit.WaitFor(t, 10*time.Second, "edgesim to see the outbound call ended by the gateway", func() bool {
		cs := tlsTwCalls(t, s)
		return len(cs) == 1 && cs[0].State == "ended" && cs[0].EndedBy == "gateway"
	})
	out := tlsTwCalls(t, s)[0]
	if out.Transport != "TLS" || out.Media == nil || out.Media.PacketsEchoed == 0 {
		t.Fatalf("outbound call at edgesim: %+v media %+v, want over TLS with RTP echoed", out, out.Media)
	}
	t.Logf("outbound over TLS: edgesim echoed %d packets", out.Media.PacketsEchoed)
	noCallsLeft(t, d)

	// Twilio → phone: edgesim calls the transport=tls Contact over TLS.
	phone := sippUAS(t, "uas_answer_rtp.xml", phoneIP)
	placed := s.placeCall(t, "alice")
	var in tlsTwCall
	kit.WaitFor(t, 15*time.Second, "the inbound call answered, RTP echoed", func() bool {
		for _, c := range tlsTwCalls(t, s) {
			if c.ID == placed.ID {
				in = c
			}
		}
		return in.State == "answered" && in.Media != nil && in.Media.PacketsEchoed > 20
	})
	if in.Transport != "TLS" || len(in.Forks) != 1 || in.Forks[0].Transport != "TLS" {
		t.Fatalf("inbound call %+v, want its one fork over TLS", in)
	}
	checkRTPFlow(t, d)
	s.hangUp(t, placed.ID)
	waitSipp(t, phone, "the phone that answered the inbound call")
	noCallsLeft(t, d)
}

// TestTLSTwilioBadCertificates: ashburn's first IP presents an expired
// certificate, its second one for another name. edgewise reports each IP
// down with the certificate's reason (in /v1/status, one warning each in
// the log however often it probes) and registers on the third IP without
// waiting for a timeout. When the third IP presents a self-signed
// certificate too, ashburn is down and the registration moves to umatilla.
func TestTLSTwilioBadCertificates(t *testing.T) {
	s := tlsTwStartSim(t)
	ash := s.ips["ashburn"]
	s.setMode(t, "ips/"+ash[0], "expired-cert")
	s.setMode(t, "ips/"+ash[1], "wrong-name-cert")
	d := startDaemon(t, tlsTwConfig(t, s, s.caFile))
	start := time.Now()
	tlsTwRegisterPhone(t, d)
	b := tlsTwRegisteredAt(t, s, d, 15*time.Second)
	took := time.Since(start)
	t.Logf("registered upstream %v after the phone's REGISTER began", took.Round(time.Millisecond))
	if b.Edge != "ashburn" || b.IP != ash[2] {
		t.Fatalf("registered at %s %s, want ashburn's good IP %s", b.Edge, b.IP, ash[2])
	}
	if took >= tlsTwTimeout {
		t.Errorf("registration took %v: two refused certificates must not cost a %v timeout", took, tlsTwTimeout)
	}

	const fqdn = "itest.sip.ashburn.twilio.com"
	wants := map[string]string{
		ash[0]: "tls: certificate for " + fqdn + " expired at ",
		ash[1]: "tls: certificate is for wrong-name.edgesim.invalid, not " + fqdn,
	}
	for ip, want := range wants {
		is := tlsTwEdgeIP(t, d, "ashburn", ip)
		if is.State != edge.StateDown || !strings.HasPrefix(is.LastError, want) {
			t.Errorf("ashburn %s: %s %q, want down with %q…", ip, is.State, is.LastError, want)
		}
		if st := tlsTwIPStatus(t, s, ip); st.Requests["REGISTER"] != 0 || st.Authorized != 0 {
			t.Errorf("edgesim %s got %d REGISTERs, %d with credentials; want none past the handshake", ip, st.Requests["REGISTER"], st.Authorized)
		}
	}
	// Keepalives keep probing the down IPs: still one warning per IP.
	kit.WaitFor(t, 15*time.Second, "three refused handshakes on each bad IP", func() bool {
		return tlsTwIPStatus(t, s, ash[0]).TLS.Failed >= 3 && tlsTwIPStatus(t, s, ash[1]).TLS.Failed >= 3
	})
	for ip, want := range wants {
		line := fmt.Sprintf("ip %s refused: %s", ip, want)
		if n := strings.Count(d.out.String(), line); n != 1 {
			t.Errorf("edgewise logged %q %d times, want once", line, n)
		}
	}
	if got := scrapeMetrics(t, d).value("edgewise_edge_results_total", "edge", "ashburn", "outcome", "tls"); got < 6 {
		t.Errorf("edge_results_total{edge=ashburn,outcome=tls} = %v, want every refused handshake counted", got)
	}

	// The last good IP goes bad too: the edge is down, with every IP's
	// reason, and alice moves to umatilla.
	s.setMode(t, "ips/"+ash[2], "self-signed-cert")
	kit.WaitFor(t, 20*time.Second, "alice registered on umatilla only", func() bool {
		bs := tlsTwBindings(t, s, "alice")
		return len(bs) > 0 && !slices.ContainsFunc(bs, func(b tlsTwBinding) bool { return b.Edge != "umatilla" })
	})
	e := tlsTwEdge(t, d, "ashburn")
	if e.State != edge.StateDown || !strings.Contains(e.Reason, "failed the certificate check") || !strings.Contains(e.Reason, "unknown authority") {
		t.Fatalf("ashburn %s %q, want down for failed certificate checks", e.State, e.Reason)
	}
	if got := scrapeMetrics(t, d).value("edgewise_edge_failovers_total", "reason", "tls"); got != 1 {
		t.Errorf("edge_failovers_total{reason=tls} = %v, want 1", got)
	}
}

// TestTLSTwilioSystemRootsOnly: without twilio.ca_file edgewise trusts the
// system roots only, which do not hold edgesim's CA: nothing registers,
// every IP is down saying "unknown authority", and no credentials reach
// any edge. A reload that adds the CA file applies without a restart: the
// next handshake succeeds and alice registers.
func TestTLSTwilioSystemRootsOnly(t *testing.T) {
	s := tlsTwStartSim(t)
	d := startDaemon(t, tlsTwConfig(t, s, ""))
	tlsTwRegisterPhone(t, d)
	all := slices.Concat(s.ips["ashburn"], s.ips["umatilla"])
	kit.WaitFor(t, 20*time.Second, "every IP of both edges down for an unknown authority", func() bool {
		for _, e := range d.status(t).Edges {
			if e.State != edge.StateDown {
				return false
			}
			for _, is := range e.IPs {
				if is.State != edge.StateDown || !strings.Contains(is.LastError, "unknown authority") {
					return false
				}
			}
		}
		return true
	})
	if bs := tlsTwBindings(t, s, "alice"); len(bs) != 0 {
		t.Fatalf("alice registered at %+v with no CA to trust", bs)
	}
	for _, ip := range all {
		if st := tlsTwIPStatus(t, s, ip); st.Requests["REGISTER"] != 0 || st.Authorized != 0 {
			t.Errorf("edgesim %s got %d REGISTERs, %d with credentials", ip, st.Requests["REGISTER"], st.Authorized)
		}
	}
	var user string
	for _, u := range d.status(t).Users {
		if u.User == "alice" && u.Upstream != nil {
			user = u.Upstream.LastError
		}
	}
	t.Logf("alice's upstream error: %s", user)

	cfg, err := os.ReadFile(d.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	writeFileAtomic(t, d.cfgPath, strings.Replace(string(cfg), "  transport: tls\n", "  transport: tls\n  ca_file: "+s.caFile+"\n", 1))
	tlsTwRegisteredAt(t, s, d, 30*time.Second)
	last := d.status(t).Config.LastReload
	if !last.OK || !slices.Contains(last.Changed, "twilio.ca_file") || len(last.NeedsRestart) != 0 {
		t.Fatalf("reload %+v, want twilio.ca_file applied without a restart", last)
	}
}

// tlsTwOptions sends an OPTIONS over conn and returns the status line of
// the answer.
func tlsTwOptions(t *testing.T, conn *tls.Conn, rd *bufio.Reader, target string) string {
	t.Helper()
	local := conn.LocalAddr().String()
	n := time.Now().UnixNano()
	msg := fmt.Sprintf("OPTIONS sip:%[1]s;transport=tls SIP/2.0\r\n"+
		"Via: SIP/2.0/TLS %[2]s;branch=z9hG4bK-tlstw%[3]d;rport\r\n"+
		"Max-Forwards: 70\r\nFrom: <sip:probe@%[2]s>;tag=%[3]d\r\nTo: <sip:%[1]s>\r\n"+
		"Call-ID: tlstw-%[3]d\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", target, local, n)
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(msg)); err != nil {
		t.Fatalf("OPTIONS over the open TLS connection: %v", err)
	}
	line, err := rd.ReadString('\n')
	if err != nil {
		t.Fatalf("answer over the open TLS connection: %v", err)
	}
	for { // the rest of the answer
		l, err := rd.ReadString('\n')
		if err != nil || l == "\r\n" {
			break
		}
	}
	return strings.TrimSpace(line)
}

// tlsTwServedSerial is the serial of the certificate a new TLS handshake
// with addr gets.
func tlsTwServedSerial(t *testing.T, addr string) string {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) // serial, not trust
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
}

// TestTLSTwilioLocalCertReload: edgewise's own tls: certificate (the one
// Twilio's calls in meet) is renewed on disk, by rename as renewal tools
// do: new handshakes get the new certificate at once, a connection opened
// before keeps working, a broken renewal is refused with an event and a
// metric while the renewed certificate stays, and alice's calls from
// Twilio still come in over TLS.
func TestTLSTwilioLocalCertReload(t *testing.T) {
	s := tlsTwStartSim(t)
	d := startDaemon(t, tlsTwConfig(t, s, s.caFile))
	addr := d.ip + ":5061"
	first := tlsTwServedSerial(t, addr)

	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) // the test's self-signed cert
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rd := bufio.NewReader(conn)
	if got := tlsTwOptions(t, conn, rd, addr); !strings.HasPrefix(got, "SIP/2.0 200") {
		t.Fatalf("OPTIONS before the renewal: %q", got)
	}

	// Renewal: a new pair written elsewhere, renamed over the old files.
	certFile, keyFile := filepath.Join(d.dir, "cert.pem"), filepath.Join(d.dir, "key.pem")
	staging := t.TempDir()
	newCert, newKey := writeCert(t, staging, d.ip)
	renewed := time.Now()
	for _, mv := range [][2]string{{newKey, keyFile}, {newCert, certFile}} {
		if err := os.Rename(mv[0], mv[1]); err != nil {
			t.Fatal(err)
		}
	}
	var second string
	kit.WaitFor(t, 10*time.Second, "new handshakes to get the renewed certificate", func() bool {
		second = tlsTwServedSerial(t, addr)
		return second != first
	})
	t.Logf("renewed certificate served %v after the rename", time.Since(renewed).Round(time.Millisecond))
	if got := tlsTwOptions(t, conn, rd, addr); !strings.HasPrefix(got, "SIP/2.0 200") {
		t.Fatalf("OPTIONS over the connection opened before the renewal: %q", got)
	}
	if got := conn.ConnectionState().PeerCertificates[0].SerialNumber.String(); got != first {
		t.Errorf("the open connection's certificate changed to %s", got)
	}

	// A broken renewal: garbage where the certificate should be.
	writeFileAtomic(t, certFile, "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
	kit.WaitFor(t, 10*time.Second, "the broken pair refused", func() bool {
		return scrapeMetrics(t, d).value("edgewise_sip_tls_certificate_reloads_total", "result", "refused") >= 1
	})
	if got := tlsTwServedSerial(t, addr); got != second {
		t.Fatalf("after a broken renewal new handshakes get serial %s, want the renewed %s", got, second)
	}
	var applied, refused bool
	for _, ev := range d.status(t).Events {
		if ev.Kind != "tls_certificate" {
			continue
		}
		applied = applied || ev.Severity == "info" && strings.Contains(ev.Text, "replaced")
		refused = refused || ev.Severity == "warn" && strings.Contains(ev.Text, "not replaced") && strings.Contains(ev.Text, "still serving")
	}
	if !applied || !refused {
		t.Errorf("events lack the renewal (%v) or the refusal (%v): %+v", applied, refused, d.status(t).Events)
	}

	// Twilio still calls in over TLS (a new connection: a handshake with
	// the renewed certificate).
	phoneIP := tlsTwRegisterPhone(t, d)
	tlsTwRegisteredAt(t, s, d, 15*time.Second)
	phone := sippUAS(t, "uas_answer_rtp.xml", phoneIP)
	placed := s.placeCall(t, "alice")
	kit.WaitFor(t, 15*time.Second, "the call from Twilio answered over TLS", func() bool {
		for _, c := range tlsTwCalls(t, s) {
			if c.ID == placed.ID {
				return c.State == "answered" && c.Transport == "TLS"
			}
		}
		return false
	})
	s.hangUp(t, placed.ID)
	waitSipp(t, phone, "the phone that answered")
	noCallsLeft(t, d)
}
