package cluster

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgewise-sip/edgewise/registrar/location"
	"github.com/edgewise-sip/edgewise/test/kit"
)

// BenchmarkSharedRegister is REGISTERs committed to a three-member etcd
// before they are acknowledged, from many phones at once, as a node's
// registrar does: one key per contact, batched into transactions.
// go test -run '^$' -bench SharedRegister -benchtime 5s ./registrar/cluster
func BenchmarkSharedRegister(b *testing.B) {
	e := kit.StartEtcd(b, kit.NewNet(b), 3)
	st, state, rev, err := Open(b.Context(), Settings{Endpoints: e.Endpoints(), Node: "a", Prefix: "/bench/"}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	tb := location.NewShared(nil, location.Settings{}, st, state)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = st.Run(ctx, tb, rev) }()
	defer func() { cancel(); <-done; tb.Close() }()
	var n atomic.Int64
	b.SetParallelism(64) // phones registering at once, per core
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			user := fmt.Sprintf("u%d", i%20000)
			bnd := binding(fmt.Sprintf("sip:%s@192.0.2.10:%d", user, 5060+i%1000), time.Hour)
			if _, err := tb.Update(user, func(cur []location.Binding) ([]location.Binding, error) {
				return []location.Binding{bnd}, nil
			}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "registers/s")
	s := st.Stats()
	if s.Txns > 0 {
		b.ReportMetric(float64(s.Ops)/float64(s.Txns), "changes/txn")
	}
}
