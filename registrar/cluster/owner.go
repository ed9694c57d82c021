package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/edgewise-sip/edgewise/registrar/location"
)

// Owners decides which node registers each user at Twilio: exactly one live
// node at a time, so Twilio holds one Contact of the cluster per user (plus,
// briefly, a dead node's until it lapses), well inside its ten per user.
//
// Each node holds an etcd lease that it keeps alive; ownership of a user is
// the key owners/<user> under that lease, created by a transaction that
// succeeds only when the key is absent. A node that dies or loses etcd
// stops renewing, its lease lapses after the TTL, its keys vanish, and the
// survivors claim its users. Claims prefer the node the user's phones
// registered through: others wait a moment before claiming, so the owner
// is usually where the NAT pinholes are. An owner gives a user up only when
// none of the user's bindings came through it any more (its phones
// re-registered elsewhere), so a node coming back takes users back as their
// phones move, not in one storm.
//
// Owners is the upstream manager's view of the bindings table: it passes
// on the live count of owned users only, and counts zero for the others.
type Owners struct {
	st    *Store
	table *location.Table
	ttl   time.Duration
	rate  float64 // claims per second
	log   *slog.Logger

	mu     sync.Mutex
	owners map[string]string    // user → owning node, as etcd says
	nodes  map[string]string    // nodes with a live lease → their SIP address
	secret []byte               // the cluster's key for signing forks between nodes
	owned  map[string]time.Time // users this node owns, since when
	defers map[string]time.Time // claims held back until
	subs   []func(user string, live int)
	lease  clientv3.LeaseID
	queue  map[string]time.Time // users to look at, and not before when
	kick   chan struct{}
}

// OwnerSettings tune Owners.
type OwnerSettings struct {
	// LeaseTTL is how long after a node stops renewing its lease the others
	// take its users; 0 means 5 s.
	LeaseTTL time.Duration
	// ClaimRate bounds how many users a node claims per second, like an
	// edge move; 0 means 500.
	ClaimRate float64
}

// claimDefer is how long a node waits before claiming a user none of whose
// phones registered through it, so that a node they did register through
// claims first.
const claimDefer = time.Second

// reviewEvery is how often a node looks again at the users it owns.
const reviewEvery = 5 * time.Second

// NewOwners returns the ownership view of t for st's node.
func NewOwners(st *Store, t *location.Table, s OwnerSettings) *Owners {
	if s.LeaseTTL <= 0 {
		s.LeaseTTL = 5 * time.Second
	}
	if s.ClaimRate <= 0 {
		s.ClaimRate = 500
	}
	o := &Owners{
		st: st, table: t, ttl: s.LeaseTTL, rate: s.ClaimRate, log: st.log,
		owners: map[string]string{}, nodes: map[string]string{}, owned: map[string]time.Time{},
		defers: map[string]time.Time{}, queue: map[string]time.Time{},
		kick: make(chan struct{}, 1),
	}
	t.Subscribe(func(user string, _ int) { o.look(user, time.Time{}) })
	return o
}

func (o *Owners) ownersPrefix() string { return o.st.set.Prefix + "owners/" }
func (o *Owners) nodesPrefix() string  { return o.st.set.Prefix + "nodes/" }

// Nodes lists the nodes with a live lease, this one included, sorted.
func (o *Owners) Nodes() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]string, 0, len(o.nodes))
	for n := range o.nodes {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// Subscribe implements the upstream manager's Bindings: fn hears the live
// count of each user this node owns, and 0 when it stops owning one.
func (o *Owners) Subscribe(fn func(user string, live int)) {
	o.mu.Lock()
	o.subs = append(o.subs, fn)
	o.mu.Unlock()
}

// Lookup is the table's, for users this node owns; nil for the others.
func (o *Owners) Lookup(user string) []location.Binding {
	o.mu.Lock()
	_, owned := o.owned[user]
	o.mu.Unlock()
	if !owned {
		return nil
	}
	return o.table.Lookup(user)
}

// Users are the users this node owns that have live bindings.
func (o *Owners) Users() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for _, u := range o.table.Users() {
		if _, ok := o.owned[u]; ok {
			out = append(out, u)
		}
	}
	return out
}

// Owned counts the users this node owns, for status.
func (o *Owners) Owned() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.owned)
}

// look queues user to be looked at, not before at.
func (o *Owners) look(user string, at time.Time) {
	o.mu.Lock()
	if cur, ok := o.queue[user]; !ok || at.Before(cur) {
		o.queue[user] = at
	}
	o.mu.Unlock()
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// Run keeps the node's lease alive and the ownership of users right until
// ctx ends; then it gives up its users (revoking the lease) so the others
// take them at once rather than after the TTL.
func (o *Owners) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		err := o.session(ctx)
		if ctx.Err() != nil {
			break
		}
		o.log.Warn("cluster lease lost; claiming again", "node", o.st.set.Node, "error", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	o.mu.Lock()
	lease := o.lease
	o.mu.Unlock()
	if lease != 0 {
		rctx, cancel := context.WithTimeout(context.Background(), o.st.set.RequestTimeout)
		_, _ = o.st.cli.Revoke(rctx, lease)
		cancel()
	}
	return nil
}

// session is one life of the node's lease: grant, load the owners, watch
// them, and work the queue, until the lease or the watch is lost.
func (o *Owners) session(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, o.st.set.RequestTimeout)
	g, err := o.st.cli.Grant(rctx, int64(o.ttl/time.Second))
	cancel()
	if err != nil {
		return fmt.Errorf("grant: %w", err)
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	alive, err := o.st.cli.KeepAlive(sctx, g.ID)
	if err != nil {
		return fmt.Errorf("keepalive: %w", err)
	}
	rctx, cancel = context.WithTimeout(ctx, 10*o.st.set.RequestTimeout)
	_, err = o.st.cli.Put(rctx, o.nodesPrefix()+o.st.set.Node, o.st.set.Advertise, clientv3.WithLease(g.ID))
	var nodesRev int64
	if err == nil {
		var nres *clientv3.GetResponse
		if nres, err = o.st.cli.Get(rctx, o.nodesPrefix(), clientv3.WithPrefix()); err == nil {
			nodesRev = nres.Header.Revision
			o.mu.Lock()
			o.nodes = map[string]string{}
			for _, kv := range nres.Kvs {
				o.nodes[string(kv.Key[len(o.nodesPrefix()):])] = string(kv.Value)
			}
			o.mu.Unlock()
		}
	}
	if err == nil {
		err = o.loadSecret(rctx)
	}
	var res *clientv3.GetResponse
	if err == nil {
		res, err = o.st.cli.Get(rctx, o.ownersPrefix(), clientv3.WithPrefix())
	}
	cancel()
	if err != nil {
		return fmt.Errorf("load owners: %w", err)
	}
	o.mu.Lock()
	o.lease = g.ID
	o.owners = map[string]string{}
	for _, kv := range res.Kvs {
		o.owners[string(kv.Key[len(o.ownersPrefix()):])] = string(kv.Value)
	}
	// The users the last lease held stay registered upstream (etcd being
	// away is no reason to drop them): each is claimed again under the new
	// lease, or given up if another node took it meanwhile.
	prev := make([]string, 0, len(o.owned))
	for u := range o.owned {
		prev = append(prev, u)
	}
	o.mu.Unlock()
	for _, u := range prev {
		o.look(u, time.Time{})
	}
	for _, u := range o.table.Users() {
		o.look(u, time.Time{})
	}
	watch := o.st.cli.Watch(sctx, o.ownersPrefix(), clientv3.WithPrefix(), clientv3.WithRev(res.Header.Revision+1))
	nodes := o.st.cli.Watch(sctx, o.nodesPrefix(), clientv3.WithPrefix(), clientv3.WithRev(nodesRev+1))
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	// A phone that re-registers through another node changes no live
	// count, so owned users are looked at again now and then.
	review := time.NewTicker(reviewEvery)
	defer review.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-alive:
			if !ok {
				return errors.New("lease keepalive ended")
			}
		case wr, ok := <-watch:
			if !ok || wr.Err() != nil {
				return fmt.Errorf("owners watch: %v", wr.Err())
			}
			for _, ev := range wr.Events {
				o.event(ev)
			}
		case wr, ok := <-nodes:
			if !ok || wr.Err() != nil {
				return fmt.Errorf("nodes watch: %v", wr.Err())
			}
			o.mu.Lock()
			for _, ev := range wr.Events {
				name := string(ev.Kv.Key[len(o.nodesPrefix()):])
				if ev.Type == mvccpb.PUT {
					o.nodes[name] = string(ev.Kv.Value)
				} else {
					delete(o.nodes, name)
				}
			}
			o.mu.Unlock()
		case <-o.kick:
			o.work(ctx)
		case <-tick.C:
			o.work(ctx)
		case <-review.C:
			o.mu.Lock()
			users := make([]string, 0, len(o.owned))
			for u := range o.owned {
				users = append(users, u)
			}
			o.mu.Unlock()
			for _, u := range users {
				o.look(u, time.Time{})
			}
		}
	}
}

// event applies a change of owners/<user>.
func (o *Owners) event(ev *clientv3.Event) {
	user := string(ev.Kv.Key[len(o.ownersPrefix()):])
	o.mu.Lock()
	if ev.Type == mvccpb.DELETE {
		delete(o.owners, user)
	} else {
		o.owners[user] = string(ev.Kv.Value)
	}
	_, wasMine := o.owned[user]
	// Only another node's claim ends this node's ownership; its own key
	// vanishing (an old lease lapsing) means claiming it again.
	taken := ev.Type == mvccpb.PUT && string(ev.Kv.Value) != o.st.set.Node
	if wasMine && taken {
		delete(o.owned, user)
	}
	o.mu.Unlock()
	if wasMine && taken {
		o.notify(user, 0)
	}
	if ev.Type == mvccpb.DELETE {
		o.look(user, time.Time{}) // its owner let go or died: someone claims
	}
}

// work looks at the queued users that are due, claiming at most rate per
// second.
func (o *Owners) work(ctx context.Context) {
	now := time.Now()
	budget := max(1, int(o.rate/20)) // per 50 ms tick
	o.mu.Lock()
	var due []string
	for u, at := range o.queue {
		if !at.After(now) {
			due = append(due, u)
		}
	}
	slices.Sort(due)
	if len(due) > budget {
		due = due[:budget]
	}
	for _, u := range due {
		delete(o.queue, u)
	}
	o.mu.Unlock()
	for _, u := range due {
		o.decide(ctx, u, now)
	}
}

// decide claims, keeps or releases one user.
func (o *Owners) decide(ctx context.Context, user string, now time.Time) {
	bs := o.table.Lookup(user)
	through := false
	for _, b := range bs {
		if b.Node == "" || b.Node == o.st.set.Node {
			through = true
		}
	}
	o.mu.Lock()
	owner := o.owners[user]
	since, mine := o.owned[user]
	o.mu.Unlock()
	switch {
	case mine && owner == "" && len(bs) > 0:
		// Owned under a lease that lapsed (etcd was away): claim again,
		// keeping the registration upstream meanwhile.
		o.claim(ctx, user, len(bs))
	case mine && owner != "" && owner != o.st.set.Node:
		o.mu.Lock()
		delete(o.owned, user)
		o.mu.Unlock()
		o.notify(user, 0)
	case mine && (len(bs) == 0 || !through):
		// No phone of the user registered through this node: let the
		// node they use take it, once one of them registered there after
		// this node took the user (a node that comes back gets its users
		// as their phones re-register, not all at once), or nobody, with
		// no phone left.
		if len(bs) > 0 && !o.movedSince(bs, since) {
			o.notify(user, len(bs))
			return
		}
		o.release(ctx, user)
	case mine:
		o.notify(user, len(bs))
	case owner == "" && len(bs) > 0:
		if !through {
			o.mu.Lock()
			until, ok := o.defers[user]
			if !ok {
				until = now.Add(claimDefer)
				o.defers[user] = until
			}
			o.mu.Unlock()
			if now.Before(until) {
				o.look(user, until)
				return
			}
		}
		o.mu.Lock()
		delete(o.defers, user)
		o.mu.Unlock()
		o.claim(ctx, user, len(bs))
	}
}

// movedSince reports whether one of bs was registered through another live
// node after since.
func (o *Owners) movedSince(bs []location.Binding, since time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, b := range bs {
		if _, alive := o.nodes[b.Node]; b.Node != "" && b.Node != o.st.set.Node && alive && b.Updated.After(since) {
			return true
		}
	}
	return false
}

func (o *Owners) claim(ctx context.Context, user string, live int) {
	o.mu.Lock()
	lease := o.lease
	o.mu.Unlock()
	key := o.ownersPrefix() + user
	rctx, cancel := context.WithTimeout(ctx, o.st.set.RequestTimeout)
	res, err := o.st.cli.Txn(rctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, o.st.set.Node, clientv3.WithLease(lease))).
		Commit()
	cancel()
	if err != nil {
		o.log.Warn("cannot claim a user", "user", user, "error", err)
		o.look(user, time.Now().Add(time.Second))
		return
	}
	if !res.Succeeded {
		return // another node was quicker; the watch tells (and ends a stale ownership)
	}
	o.mu.Lock()
	o.owners[user] = o.st.set.Node
	o.owned[user] = time.Now()
	o.mu.Unlock()
	o.log.Debug("user claimed", "user", user, "node", o.st.set.Node)
	o.notify(user, live)
}

func (o *Owners) release(ctx context.Context, user string) {
	key := o.ownersPrefix() + user
	rctx, cancel := context.WithTimeout(ctx, o.st.set.RequestTimeout)
	_, err := o.st.cli.Txn(rctx).
		If(clientv3.Compare(clientv3.Value(key), "=", o.st.set.Node)).
		Then(clientv3.OpDelete(key)).
		Commit()
	cancel()
	if err != nil {
		o.log.Warn("cannot release a user", "user", user, "error", err)
		o.look(user, time.Now().Add(time.Second))
		return
	}
	o.mu.Lock()
	delete(o.owned, user)
	if o.owners[user] == o.st.set.Node {
		delete(o.owners, user)
	}
	o.mu.Unlock()
	o.log.Debug("user released", "user", user, "node", o.st.set.Node)
	o.notify(user, 0)
}

func (o *Owners) notify(user string, live int) {
	o.mu.Lock()
	subs := slices.Clone(o.subs)
	o.mu.Unlock()
	for _, fn := range subs {
		fn(user, live)
	}
}
