package registrar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	icholy "github.com/icholy/digest"

	"github.com/edgewise-sip/edgewise/registrar/directory"
	"github.com/edgewise-sip/edgewise/registrar/location"
	"github.com/edgewise-sip/edgewise/registrar/lockout"
	"github.com/edgewise-sip/edgewise/registrar/sip/digest"
	"github.com/edgewise-sip/edgewise/registrar/sip/frontend"
)

// clock is a settable time source shared by the registrar and the table.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(time.Now().UnixNano())
	return c
}
func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

// logBuffer keeps log lines so tests can assert what was logged, and prints
// them (from the test goroutine) when the test fails. Background goroutines
// must not call t.Log: they may outlive the test.
type logBuffer struct {
	t     testing.TB
	mu    sync.Mutex
	lines []string
}

func (l *logBuffer) Write(p []byte) (int, error) {
	s := strings.TrimSpace(string(p))
	l.mu.Lock()
	l.lines = append(l.lines, s)
	l.mu.Unlock()
	return len(p), nil
}

func (l *logBuffer) dumpOnFailure() {
	if !l.t.Failed() {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		l.t.Log(s)
	}
}

func (l *logBuffer) count(substr string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, s := range l.lines {
		if strings.Contains(s, substr) {
			n++
		}
	}
	return n
}

func defaultSettings() Settings {
	return Settings{
		Realm:          "edgewise",
		MinExpires:     60 * time.Second,
		MaxExpires:     3600 * time.Second,
		DefaultExpires: 3600 * time.Second,
		MaxContacts:    10,
		NonceTTL:       30 * time.Second,
		Lockout:        lockout.Settings{Failures: 10, UserFailures: 30, Window: time.Minute, Duration: 5 * time.Minute},
	}
}

var testDir = directory.PhoneMap{
	"alice": {User: "alice", Password: "wonderland"},
	"bob":   {User: "bob", Password: "builder"},
	// carol's table stores only HA1, as some PBX user tables do.
	"carol": {User: "carol", HA1: digest.HA1(digest.MD5, "carol", "edgewise", "s3cret")},
}

type env struct {
	// events are the lockouts heard by Options.OnLockout.
	eventsMu sync.Mutex
	events   []lockout.Event

	t     *testing.T
	clock *clock
	logs  *logBuffer
	table *location.Table
	reg   *Registrar
	srv   *frontend.Server
	path  string
}

// newEnv runs a registrar behind a real SIP front end on loopback UDP and TCP.
func newEnv(t *testing.T, mutate func(*Settings)) *env {
	t.Helper()
	e := &env{t: t, clock: newClock(), logs: &logBuffer{t: t}, path: filepath.Join(t.TempDir(), "edgewise.db")}
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := defaultSettings()
	if mutate != nil {
		mutate(&s)
	}
	var err error
	e.table, err = location.Open(e.path, log, location.Settings{Now: e.clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	e.srv, err = frontend.New(frontend.Settings{
		Listen: []frontend.Listen{
			{Transport: "udp", Host: "127.0.0.1"}, {Transport: "tcp", Host: "127.0.0.1"}, {Transport: "ws", Host: "127.0.0.1"},
		},
		UserAgent: "edgewise-test",
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	e.reg, err = New(e.table, s, testDir, Options{Logger: log, Pinger: e.srv, Now: e.clock.Now, OnLockout: func(ev lockout.Event) {
		e.eventsMu.Lock()
		defer e.eventsMu.Unlock()
		e.events = append(e.events, ev)
	}})
	if err != nil {
		t.Fatal(err)
	}
	e.srv.HandleStateless(sip.REGISTER, e.reg.ServeRegister)
	e.srv.SetGuard(e.reg.Blocked)
	e.srv.OnConnClosed(e.reg.ConnClosed)

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := e.srv.Run(ctx); err != nil {
			t.Errorf("frontend: %v", err)
		}
	})
	wg.Go(func() { e.reg.Run(ctx) })
	wg.Go(func() { e.table.Run(ctx) })
	select {
	case <-e.srv.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("SIP front end not ready")
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		e.table.Close()
		e.logs.dumpOnFailure()
	})
	return e
}

// phone is a SIP client built on a real sipgo UA. It computes digest
// responses with github.com/icholy/digest, an independent implementation.
type phone struct {
	t         *testing.T
	e         *env
	ua        *sipgo.UserAgent
	client    *sipgo.Client
	transport string
	user      string
	password  string
	callID    string
	cseq      uint32
	algorithm string // challenge to answer; "" means the first offered

	lastChallenge *icholy.Challenge
	nc            int
}

func newPhone(t *testing.T, e *env, transport, user, password string) *phone {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("test-phone/1.0"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ua.Close() })
	return &phone{t: t, e: e, ua: ua, client: c, transport: transport, user: user, password: password,
		callID: fmt.Sprintf("%s-%d@test", user, time.Now().UnixNano()), cseq: 1}
}

func (p *phone) server() netip.AddrPort { return p.e.srv.Addr(strings.ToLower(p.transport)) }

// contact returns a contact URI for this phone with a distinguishing port.
func (p *phone) contact(port int) string {
	return fmt.Sprintf("<sip:%s@127.0.0.1:%d;transport=%s>", p.user, port, strings.ToLower(p.transport))
}

// build makes a REGISTER with the next CSeq. headers are "Name: value".
func (p *phone) build(headers ...string) *sip.Request {
	srv := p.server()
	req := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: srv.Addr().String(), Port: int(srv.Port())})
	req.SetTransport(p.transport)
	req.SetDestination(srv.String())
	from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: p.user, Host: "edgewise"}}
	from.Params.Add("tag", "t"+p.callID[:8])
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: p.user, Host: "edgewise"}})
	cid := sip.CallIDHeader(p.callID)
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: p.cseq, MethodName: sip.REGISTER})
	p.cseq++
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.AppendHeader(sip.NewHeader("User-Agent", "test-phone/1.0"))
	for _, h := range headers {
		name, value, _ := strings.Cut(h, ":")
		value = strings.TrimSpace(value)
		if strings.EqualFold(name, "Contact") {
			var c sip.ContactHeader
			if value == "*" {
				c.Address.Wildcard = true
			} else if _, err := sip.ParseAddressValue(value, &c.Address, &c.Params); err != nil {
				p.t.Fatalf("contact %q: %v", value, err)
			}
			req.AppendHeader(&c)
			continue
		}
		req.AppendHeader(sip.NewHeader(name, value))
	}
	req.SetBody(nil)
	return req
}

// send sends req and returns the final response, or nil if none arrives
// within wait.
func (p *phone) send(req *sip.Request, wait time.Duration) *sip.Response {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	res, err := p.client.Do(ctx, req, sipgo.ClientRequestAddVia)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, sip.ErrTransactionTimeout) {
			return nil
		}
		p.t.Fatalf("send: %v", err)
	}
	return res
}

func (p *phone) expect(req *sip.Request, code int) *sip.Response {
	p.t.Helper()
	res := p.send(req, 5*time.Second)
	if res == nil {
		p.t.Fatalf("%s: no response, want %d", p.transport, code)
	}
	if res.StatusCode != code {
		p.t.Fatalf("%s: got %d %s, want %d\n%s", p.transport, res.StatusCode, res.Reason, code, res)
	}
	if code == 401 {
		p.learn(res)
	}
	return res
}

// learn keeps the challenge for the configured algorithm.
func (p *phone) learn(res *sip.Response) {
	p.t.Helper()
	for _, h := range res.GetHeaders("WWW-Authenticate") {
		c, err := icholy.ParseChallenge(h.Value())
		if err != nil {
			p.t.Fatalf("challenge %q: %v", h.Value(), err)
		}
		if p.algorithm == "" || c.Algorithm == p.algorithm {
			p.lastChallenge, p.nc = c, 0
			return
		}
	}
	p.t.Fatalf("no %q challenge in %s", p.algorithm, res)
}

// authorization answers the last challenge with the next nonce-count.
func (p *phone) authorization(password string) string {
	p.t.Helper()
	p.nc++
	cred, err := icholy.Digest(p.lastChallenge, icholy.Options{
		Method: "REGISTER", URI: "sip:" + p.server().String(), Username: p.user, Password: password, Count: p.nc,
	})
	if err != nil {
		p.t.Fatal(err)
	}
	return "Authorization: " + cred.String()
}

// register does the full dance: REGISTER, 401, REGISTER with credentials.
func (p *phone) register(code int, headers ...string) *sip.Response {
	p.t.Helper()
	p.expect(p.build(headers...), 401)
	return p.expect(p.build(append(headers, p.authorization(p.password))...), code)
}

// registerAgain re-uses the last nonce with the next nonce-count.
func (p *phone) registerAgain(code int, headers ...string) *sip.Response {
	p.t.Helper()
	return p.expect(p.build(append(headers, p.authorization(p.password))...), code)
}

func contactsOf(res *sip.Response) map[string]int {
	out := map[string]int{}
	for _, h := range res.GetHeaders("Contact") {
		v := h.Value()
		uri := v[strings.Index(v, "<")+1 : strings.Index(v, ">")]
		exp := -1
		if i := strings.LastIndex(v, ";expires="); i >= 0 {
			exp, _ = strconv.Atoi(v[i+len(";expires="):])
		}
		out[uri] = exp
	}
	return out
}

func eachTransport(t *testing.T, f func(t *testing.T, transport string)) {
	for _, tp := range []string{"UDP", "TCP"} {
		t.Run(strings.ToLower(tp), func(t *testing.T) { f(t, tp) })
	}
}
