package registrar

import (
	"bytes"
	"fmt"
	"hash/maphash"
	"log/slog"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/edgewise-sip/edgewise/registrar/directory"
	"github.com/edgewise-sip/edgewise/registrar/location"
	"github.com/edgewise-sip/edgewise/registrar/sip/digest"
)

// benchDirectory knows users u0, u1, ... all with password "pw".
type benchDirectory struct{}

func (benchDirectory) Credential(user string) (directory.Credential, bool) {
	if !strings.HasPrefix(user, "u") {
		return directory.Credential{}, false
	}
	return directory.Credential{User: user, Password: "pw"}, true
}

// recordTx serialises the response as the front end's stateless path does and
// counts it. It is detached, like the front end's: the registrar answers
// authenticated REGISTERs from the commit callback.
type recordTx struct {
	statelessLike
	mu   sync.Mutex
	code int
	buf  bytes.Buffer
	sent *atomic.Int64
	bad  *atomic.Int64 // responses other than 200, when counting
	sum  uint64        // the request bytes' hash, as the front end gives it
}

func (t *recordTx) Fingerprint() uint64 { return t.sum }

func (t *recordTx) Respond(res *sip.Response) error {
	t.mu.Lock()
	t.code = res.StatusCode
	t.buf.Reset()
	res.StringWrite(&t.buf)
	t.mu.Unlock()
	if t.sent != nil {
		t.sent.Add(1)
		if res.StatusCode != 200 {
			t.bad.Add(1)
		}
	}
	return nil
}

func (t *recordTx) Detached() bool { return true }

// statelessLike provides the rest of sip.ServerTransaction.
type statelessLike struct{}

func (statelessLike) Terminate()                         {}
func (statelessLike) OnTerminate(sip.FnTxTerminate) bool { return false }
func (statelessLike) Done() <-chan struct{}              { return nil }
func (statelessLike) Err() error                         { return nil }
func (statelessLike) Acks() <-chan *sip.Request          { return nil }
func (statelessLike) OnCancel(sip.FnTxCancel) bool       { return false }

func benchRegisterRaw(user string, n int64, auth string) []byte {
	return fmt.Appendf(nil, "REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-%d-%s;rport\r\n"+
		"From: <sip:%s@edgewise>;tag=%d\r\n"+
		"To: <sip:%s@edgewise>\r\n"+
		"Call-ID: %d-%s@127.0.0.1\r\n"+
		"CSeq: %d REGISTER\r\n"+
		"Contact: <sip:%s@127.0.0.1:5061;transport=udp>\r\n"+
		"Max-Forwards: 70\r\n"+
		"Expires: 3600\r\n"+
		"User-Agent: SIPp\r\n"+
		"%s"+
		"Content-Length: 0\r\n\r\n", n, user, user, n, user, n, user, 1+len(auth)%2, user, auth)
}

// BenchmarkRegister measures the REGISTER handler path as the front end runs it
// for each datagram: parse, ServeRegister (digest, location update persisted
// to bbolt with group commit), build and serialise the response. "challenge"
// is the first REGISTER of a login (401), "authenticated" the second (200, a
// new AOR each time, as SIPp's benchmark does); its 200s are sent from commit
// callbacks, and the benchmark waits for all of them.
var benchSeed = maphash.MakeSeed()

func BenchmarkRegister(b *testing.B) {
	table, err := location.Open(filepath.Join(b.TempDir(), "db"), slog.New(slog.DiscardHandler), location.Settings{})
	if err != nil {
		b.Fatal(err)
	}
	defer table.Close()
	s := defaultSettings()
	s.NonceTTL = time.Hour
	s.Algorithms = []digest.Algorithm{digest.MD5}
	reg, err := New(table, s, benchDirectory{}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	parser := sip.NewParser()
	laddr := sip.Addr{IP: net.IPv4(127, 0, 0, 1), Port: 5060}
	serve := func(raw []byte, tx *recordTx) {
		msg, err := parser.ParseSIP(raw)
		if err != nil {
			b.Fatal(err)
		}
		req := msg.(*sip.Request)
		req.SetTransport("UDP")
		req.SetSource("127.0.0.1:5061")
		req.Laddr = laddr
		tx.sum = maphash.Bytes(benchSeed, raw) | 1
		reg.ServeRegister(req, tx)
	}

	b.Run("challenge", func(b *testing.B) {
		raw := benchRegisterRaw("u1", 1, "")
		var tx recordTx
		b.ReportAllocs()
		for b.Loop() {
			serve(raw, &tx)
			if tx.code != 401 {
				b.Fatalf("got %d", tx.code)
			}
		}
	})

	b.Run("authenticated", func(b *testing.B) {
		// One nonce per chunk with increasing nonce-counts: the client side
		// costs little and the server does all its work (every request is
		// a new AOR, as in SIPp's benchmark).
		newNonce := func() string {
			var tx recordTx
			serve(benchRegisterRaw("u0", 0, ""), &tx)
			nonce := tx.buf.String()
			nonce = nonce[strings.Index(nonce, `nonce="`)+7:]
			return nonce[:strings.IndexByte(nonce, '"')]
		}
		const chunk = 4096
		var sent, bad atomic.Int64
		var batch [][]byte
		next := 0
		b.ReportAllocs()
		n := 0
		for b.Loop() {
			if len(batch) == 0 {
				b.StopTimer()
				nonce := newNonce()
				for i := next; i < next+chunk; i++ {
					user := fmt.Sprintf("u%d", i)
					cred := digest.Authorization{Username: user, Realm: "edgewise", Nonce: nonce, URI: "sip:127.0.0.1:5060",
						CNonce: "c0ffee", QOP: "auth", NC: fmt.Sprintf("%08x", i-next+1), Algorithm: "MD5"}
					cred.Response = digest.Response(digest.MD5, digest.HA1(digest.MD5, user, "edgewise", "pw"), "REGISTER", &cred)
					auth := fmt.Sprintf(`Authorization: Digest username="%s", realm="edgewise", nonce="%s", uri="%s", response="%s", algorithm=MD5, cnonce="%s", qop=auth, nc=%s`+"\r\n",
						user, nonce, cred.URI, cred.Response, cred.CNonce, cred.NC)
					batch = append(batch, benchRegisterRaw(user, int64(i), auth))
				}
				next += chunk
				b.StartTimer()
			}
			serve(batch[0], &recordTx{sent: &sent, bad: &bad})
			batch = batch[1:]
			n++
		}
		// The last 200s leave with the last commit.
		for sent.Load() < int64(n) {
			runtime.Gosched()
		}
		if bad.Load() != 0 {
			b.Fatalf("%d of %d REGISTERs not answered 200", bad.Load(), n)
		}
		st := table.Stats()
		b.ReportMetric(float64(st.Records)/float64(max(st.Commits, 1)), "records/commit")
	})
}
