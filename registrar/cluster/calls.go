package cluster

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// callClaimTTL keeps a claimed call's key past any INVITE retransmission
// and every fork Twilio sends for it.
const callClaimTTL = 2 * time.Minute

// ClaimCall collapses Twilio's forks of one call across the cluster: while
// a user's registration moves between nodes, Twilio holds a Contact of
// each and sends an INVITE to both, with the same CallSid. The first node
// to claim the CallSid (calls/<sid>, created only if absent) rings the
// phones; the others refuse their fork. With etcd unreachable every node
// rings: a phone that rings twice beats one that never rings.
func (st *Store) ClaimCall(ctx context.Context, callSid string) bool {
	key := st.set.Prefix + "calls/" + callSid
	lease, err := st.lease(ctx, st.now().Add(callClaimTTL))
	if err == nil {
		rctx, cancel := context.WithTimeout(ctx, st.set.RequestTimeout)
		var res *clientv3.TxnResponse
		res, err = st.cli.Txn(rctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, st.set.Node, clientv3.WithLease(lease))).
			Commit()
		cancel()
		if err == nil {
			return res.Succeeded
		}
	}
	st.log.Warn("cannot claim a call in etcd; ringing anyway", "call_sid", callSid, "error", err)
	return true
}
