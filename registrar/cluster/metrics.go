package cluster

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the node's cluster state: whether etcd is reachable,
// the store's work, the live nodes and the users this node owns.
func Collector(st *Store, o *Owners) prometheus.Collector { return &collector{st: st, o: o} }

type collector struct {
	st *Store
	o  *Owners
}

var (
	descDegraded = prometheus.NewDesc("edgewise_cluster_etcd_degraded",
		"1 while etcd is unreachable: the node serves from memory and queues its changes.", nil, nil)
	descTxns = prometheus.NewDesc("edgewise_cluster_etcd_txns_total",
		"etcd transactions that wrote the node's binding changes.", nil, nil)
	descOps = prometheus.NewDesc("edgewise_cluster_etcd_ops_total",
		"Binding changes (puts and deletes) written to etcd.", nil, nil)
	descFailures = prometheus.NewDesc("edgewise_cluster_etcd_failures_total",
		"etcd transactions that failed (the changes stay queued).", nil, nil)
	descApplied = prometheus.NewDesc("edgewise_cluster_applied_total",
		"Other nodes' binding changes applied to this node's table.", nil, nil)
	descReloads = prometheus.NewDesc("edgewise_cluster_reloads_total",
		"Full reloads of the bindings after a broken watch.", nil, nil)
	descNodes = prometheus.NewDesc("edgewise_cluster_nodes",
		"Nodes of the cluster with a live lease, this one included.", nil, nil)
	descOwned = prometheus.NewDesc("edgewise_cluster_owned_users",
		"Users this node registers at Twilio.", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDegraded, descTxns, descOps, descFailures, descApplied, descReloads, descNodes, descOwned} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	deg := 0.0
	if d, _ := c.st.Degraded(); d {
		deg = 1
	}
	s := c.st.Stats()
	ch <- prometheus.MustNewConstMetric(descDegraded, prometheus.GaugeValue, deg)
	ch <- prometheus.MustNewConstMetric(descTxns, prometheus.CounterValue, float64(s.Txns))
	ch <- prometheus.MustNewConstMetric(descOps, prometheus.CounterValue, float64(s.Ops))
	ch <- prometheus.MustNewConstMetric(descFailures, prometheus.CounterValue, float64(s.Failures))
	ch <- prometheus.MustNewConstMetric(descApplied, prometheus.CounterValue, float64(s.Applied))
	ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(s.Reloads))
	if c.o != nil {
		ch <- prometheus.MustNewConstMetric(descNodes, prometheus.GaugeValue, float64(len(c.o.Nodes())))
		ch <- prometheus.MustNewConstMetric(descOwned, prometheus.GaugeValue, float64(c.o.Owned()))
	}
}
