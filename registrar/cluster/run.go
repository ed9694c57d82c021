package cluster

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/edgewise-sip/edgewise/registrar/location"
)

// Run writes the node's changes to etcd and applies other nodes' changes to
// t, watching from rev (Open's), until ctx ends. Pending writes get one
// last try before it returns.
func (st *Store) Run(ctx context.Context, t *location.Table, rev int64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		st.watch(wctx, t, rev)
	}()
	st.writer(ctx)
	cancel()
	<-watchDone
	return nil
}

// writer commits what is pending whenever there is something, retrying with
// a growing pause while etcd fails.
func (st *Store) writer(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			final, cancel := context.WithTimeout(context.Background(), st.set.RequestTimeout)
			st.flush(final)
			cancel()
			return
		case <-st.kick:
		}
		for {
			err := st.flush(ctx)
			if err == nil {
				backoff = 100 * time.Millisecond
				break
			}
			if ctx.Err() != nil {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
		}
	}
}

// flush writes everything pending in transactions of at most maxOps. On a
// failure the unwritten changes go back to the queue (unless a newer change
// of the same key arrived meanwhile), the node turns degraded and the
// callers are acknowledged from memory.
func (st *Store) flush(ctx context.Context) error {
	st.mu.Lock()
	batch, waiters := st.pending, st.waiters
	st.pending, st.waiters = map[string]op{}, nil
	st.mu.Unlock()
	if len(batch) == 0 {
		for _, w := range waiters {
			w(nil)
		}
		return nil
	}
	keys := make([]string, 0, len(batch))
	for k := range batch {
		keys = append(keys, k)
	}
	var err error
	written := 0
	for written < len(keys) && err == nil {
		end := min(written+maxOps, len(keys))
		err = st.commit(ctx, keys[written:end], batch)
		if err == nil {
			written = end
		}
	}
	if err != nil {
		st.mu.Lock()
		for _, k := range keys[written:] {
			if _, newer := st.pending[k]; !newer {
				st.pending[k] = batch[k]
			}
		}
		st.mu.Unlock()
		st.setDegraded(true, err)
	} else {
		st.setDegraded(false, nil)
	}
	// Acknowledged either way: committed, or queued while etcd is away.
	for _, w := range waiters {
		w(nil)
	}
	return err
}

// commit writes one transaction.
func (st *Store) commit(ctx context.Context, keys []string, batch map[string]op) error {
	ops := make([]clientv3.Op, 0, len(keys))
	for _, k := range keys {
		o := batch[k]
		if o.del {
			ops = append(ops, clientv3.OpDelete(k))
			continue
		}
		lease, err := st.lease(ctx, o.expires)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(k, string(o.value), clientv3.WithLease(lease)))
	}
	rctx, cancel := context.WithTimeout(ctx, st.set.RequestTimeout)
	defer cancel()
	_, err := st.cli.Txn(rctx).Then(ops...).Commit()
	st.statsMu.Lock()
	if err != nil {
		st.stats.Failures++
	} else {
		st.stats.Txns++
		st.stats.Ops += uint64(len(ops))
	}
	st.statsMu.Unlock()
	if err != nil {
		return fmt.Errorf("cluster: etcd transaction of %d changes: %w", len(ops), err)
	}
	return nil
}

// lease returns the lease for bindings expiring at exp: one per ten-second
// bucket, granted when first needed and forgotten once past.
func (st *Store) lease(ctx context.Context, exp time.Time) (clientv3.LeaseID, error) {
	st.leaseMu.Lock()
	defer st.leaseMu.Unlock()
	now := st.now()
	end := exp.Truncate(leaseBucket).Add(leaseBucket).Unix()
	for b := range st.leases {
		if b < now.Unix() {
			delete(st.leases, b)
		}
	}
	if id, ok := st.leases[end]; ok {
		return id, nil
	}
	ttl := int64(time.Unix(end, 0).Add(leaseGrace).Sub(now) / time.Second)
	rctx, cancel := context.WithTimeout(ctx, st.set.RequestTimeout)
	defer cancel()
	g, err := st.cli.Grant(rctx, max(ttl, 1))
	if err != nil {
		return 0, fmt.Errorf("cluster: etcd lease for %ds: %w", ttl, err)
	}
	st.leases[end] = g.ID
	return g.ID, nil
}

func (st *Store) setDegraded(on bool, err error) {
	was := st.degraded.Swap(on)
	switch {
	case on && !was:
		st.since.Store(st.now().UnixNano())
		st.log.Warn("etcd unreachable: serving from memory, changes queued", "endpoints", st.set.Endpoints, "error", err)
	case !on && was:
		st.log.Info("etcd reachable again: queued changes written", "endpoints", st.set.Endpoints)
	}
}

// watch applies other nodes' changes from rev on; when the watch breaks it
// reloads everything and watches again from there.
func (st *Store) watch(ctx context.Context, t *location.Table, rev int64) {
	for ctx.Err() == nil {
		err := st.watchFrom(ctx, t, rev+1)
		if ctx.Err() != nil {
			return
		}
		st.log.Warn("etcd watch ended; reloading the bindings", "error", err)
		for ctx.Err() == nil {
			state, r, lerr := st.load(ctx)
			if lerr == nil {
				st.resync(t, state)
				rev = r
				break
			}
			st.setDegraded(true, lerr)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

func (st *Store) watchFrom(ctx context.Context, t *location.Table, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for res := range st.cli.Watch(wctx, st.bindingsPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev)) {
		if err := res.Err(); err != nil {
			return err
		}
		for _, ev := range res.Events {
			st.apply(t, ev)
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("watch channel closed")
}

// apply brings one event into the table. The node's own writes come back
// too; the table has them already.
func (st *Store) apply(t *location.Table, ev *clientv3.Event) {
	user, ck, ok := st.splitKey(string(ev.Kv.Key))
	if !ok {
		return
	}
	switch ev.Type {
	case mvccpb.PUT:
		_, bs, err := location.DecodeRecord(ev.Kv.Value)
		if err != nil || len(bs) != 1 {
			st.log.Warn("unreadable binding in etcd, ignored", "key", string(ev.Kv.Key), "error", err)
			return
		}
		b := bs[0]
		if b.Node == st.set.Node {
			return
		}
		t.Apply(user, func(cur []location.Binding) []location.Binding {
			if i := indexOf(cur, b.Contact); i >= 0 {
				cur[i] = b
				return cur
			}
			return append(cur, b)
		})
	case mvccpb.DELETE:
		t.Apply(user, func(cur []location.Binding) []location.Binding {
			for i := range cur {
				if contactKey(cur[i].Contact) == ck {
					return append(cur[:i], cur[i+1:]...)
				}
			}
			return cur
		})
	}
	st.statsMu.Lock()
	st.stats.Applied++
	st.statsMu.Unlock()
}

// resync replaces the view of other nodes' bindings with state, keeping
// this node's own (which may be queued, not yet in etcd).
func (st *Store) resync(t *location.Table, state map[string][]location.Binding) {
	users := map[string]bool{}
	for u := range state {
		users[u] = true
	}
	for _, u := range t.Users() {
		users[u] = true
	}
	for u := range users {
		loaded := state[u]
		t.Apply(u, func(cur []location.Binding) []location.Binding {
			out := make([]location.Binding, 0, len(loaded)+len(cur))
			for _, b := range cur {
				if b.Node == "" || b.Node == st.set.Node {
					out = append(out, b)
				}
			}
			for _, b := range loaded {
				if b.Node != st.set.Node && indexOf(out, b.Contact) < 0 {
					out = append(out, b)
				}
			}
			return out
		})
	}
	st.statsMu.Lock()
	st.stats.Reloads++
	st.statsMu.Unlock()
}
