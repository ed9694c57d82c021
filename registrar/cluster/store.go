package cluster

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/edgewise-sip/edgewise/registrar/location"
)

// Settings say where etcd is and who this node is.
type Settings struct {
	Endpoints []string
	// Prefix is the key prefix, ending in "/"; "" means "/edgewise/".
	Prefix string
	// Node is this node's name, unique in the cluster.
	Node string
	// Advertise is this node's SIP address (ip:port, UDP) for the other
	// nodes: a fork to a phone registered here comes to it.
	Advertise string
	TLS       *tls.Config // nil: plain http endpoints
	Username  string
	Password  string
	// RequestTimeout bounds each etcd request; 0 means 500 ms. Short, so a
	// REGISTER never waits long on an etcd that lost its leader: the
	// write is retried, and the phone acknowledged from memory.
	RequestTimeout time.Duration
}

const (
	defaultPrefix  = "/edgewise/"
	defaultTimeout = 500 * time.Millisecond
	// maxOps is etcd's default limit of operations per transaction.
	maxOps = 128
	// leaseBucket groups the leases of bindings that expire close together.
	leaseBucket = 10 * time.Second
	// leaseGrace keeps a key a little past its binding's expiry, so a
	// refresh racing the expiry never finds the key gone.
	leaseGrace = 5 * time.Second
)

// Store is the etcd side of a node's bindings table (location.Backend).
type Store struct {
	set Settings
	cli *clientv3.Client
	log *slog.Logger
	now func() time.Time

	mu      sync.Mutex
	pending map[string]op // by key, latest change only
	waiters []func(error)
	kick    chan struct{}

	leaseMu  sync.Mutex
	leases   map[int64]clientv3.LeaseID // by bucket end (Unix seconds)
	degraded atomic.Bool
	since    atomic.Int64 // Unix ns the node became degraded
	stats    Stats
	statsMu  sync.Mutex
}

// op is one pending write: a binding to put, or a key to delete.
type op struct {
	del     bool
	value   []byte
	expires time.Time
}

// Stats count the store's work.
type Stats struct {
	Txns, Ops, Failures, Reloads uint64
	Applied                      uint64 // other nodes' changes applied to the table
}

// Open connects to etcd and loads every binding under the prefix. The
// returned revision is where Run's watch starts.
func Open(ctx context.Context, s Settings, log *slog.Logger) (*Store, map[string][]location.Binding, int64, error) {
	if s.Prefix == "" {
		s.Prefix = defaultPrefix
	}
	if s.RequestTimeout <= 0 {
		s.RequestTimeout = defaultTimeout
	}
	if s.Node == "" {
		return nil, nil, 0, errors.New("cluster: node name is empty")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: s.Endpoints, TLS: s.TLS, Username: s.Username, Password: s.Password,
		// The client's own zap log repeats every failed retry; the store
		// reports etcd's state itself, once per change.
		DialTimeout: 2 * time.Second, Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, nil, 0, fmt.Errorf("cluster: etcd client for %v: %w", s.Endpoints, err)
	}
	st := &Store{
		set: s, cli: cli, log: log, now: time.Now,
		pending: map[string]op{}, kick: make(chan struct{}, 1), leases: map[int64]clientv3.LeaseID{},
	}
	state, rev, err := st.load(ctx)
	if err != nil {
		cli.Close()
		return nil, nil, 0, err
	}
	return st, state, rev, nil
}

// Close closes the etcd client; call it after Run has returned.
func (st *Store) Close() error { return st.cli.Close() }

// Degraded reports whether etcd failed the last write or watch, and since
// when.
func (st *Store) Degraded() (bool, time.Time) {
	if !st.degraded.Load() {
		return false, time.Time{}
	}
	return true, time.Unix(0, st.since.Load())
}

// Stats returns the counters so far.
func (st *Store) Stats() Stats {
	st.statsMu.Lock()
	defer st.statsMu.Unlock()
	return st.stats
}

func (st *Store) bindingsPrefix() string { return st.set.Prefix + "bindings/" }

// key is where one binding of user lives.
func (st *Store) key(user, contact string) string {
	return st.bindingsPrefix() + user + "/" + contactKey(contact)
}

func contactKey(contact string) string {
	sum := sha256.Sum256([]byte(contact))
	return hex.EncodeToString(sum[:12])
}

// splitKey returns the user and contact key of a binding key.
func (st *Store) splitKey(k string) (user, ck string, ok bool) {
	rest, ok := strings.CutPrefix(k, st.bindingsPrefix())
	if !ok {
		return "", "", false
	}
	user, ck, ok = strings.Cut(rest, "/")
	return user, ck, ok && user != "" && ck != ""
}

// load reads every binding under the prefix.
func (st *Store) load(ctx context.Context) (map[string][]location.Binding, int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*st.set.RequestTimeout)
	defer cancel()
	res, err := st.cli.Get(ctx, st.bindingsPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("cluster: load bindings from %v: %w", st.set.Endpoints, err)
	}
	state := map[string][]location.Binding{}
	for _, kv := range res.Kvs {
		user, bs, err := location.DecodeRecord(kv.Value)
		if err != nil || len(bs) != 1 {
			st.log.Warn("unreadable binding in etcd, ignored", "key", string(kv.Key), "error", err)
			continue
		}
		state[user] = append(state[user], bs[0])
	}
	return state, res.Header.Revision, nil
}

// Save implements location.Backend: it queues the difference between prev
// and next for the writer and calls done once it is committed (or, with
// etcd unreachable, once it is queued: see Degraded).
func (st *Store) Save(user string, prev, next []location.Binding, done func(error)) {
	now := st.now()
	st.mu.Lock()
	changed := false
	for i := range next {
		b := next[i]
		if j := indexOf(prev, b.Contact); j >= 0 && same(&prev[j], &b) {
			continue
		}
		if b.Node == "" {
			b.Node = st.set.Node
		}
		st.pending[st.key(user, b.Contact)] = op{value: location.EncodeRecord(user, []location.Binding{b}), expires: b.Expires}
		changed = true
	}
	for i := range prev {
		p := &prev[i]
		if indexOf(next, p.Contact) >= 0 {
			continue
		}
		if !p.Expires.After(now) {
			continue // its lease takes the key away
		}
		st.pending[st.key(user, p.Contact)] = op{del: true}
		changed = true
	}
	if !changed {
		st.mu.Unlock()
		done(nil)
		return
	}
	if st.degraded.Load() {
		st.mu.Unlock()
		done(nil) // queued; acknowledged from memory while etcd is away
		st.wake()
		return
	}
	st.waiters = append(st.waiters, done)
	st.mu.Unlock()
	st.wake()
}

func (st *Store) wake() {
	select {
	case st.kick <- struct{}{}:
	default:
	}
}

func indexOf(bs []location.Binding, contact string) int {
	for i := range bs {
		if bs[i].Contact == contact {
			return i
		}
	}
	return -1
}

// same reports whether two versions of a binding persist the same (the
// qualify state is memory only).
func same(a, b *location.Binding) bool {
	return a.Contact == b.Contact && a.Source == b.Source && a.Local == b.Local && a.Transport == b.Transport &&
		a.CallID == b.CallID && a.CSeq == b.CSeq && a.Branch == b.Branch && a.Expires.Equal(b.Expires) &&
		a.Updated.Equal(b.Updated) && a.UserAgent == b.UserAgent && (a.Node == b.Node || b.Node == "") &&
		slices.Equal(a.Params, b.Params)
}
