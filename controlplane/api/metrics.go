package api

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// clusterCollector exports what the member's cache holds of workloads and
// nodes (observe), computed when scraped: every member reports the same
// (aggregate across members with max), and a scrape costs one pass over
// the cache's instances. Heartbeat ages are this member's own: a node
// heartbeats to the member its session is on.
type clusterCollector struct {
	c          *cache.Cache
	heartbeats *sync.Map // node name → time.Time of its last heartbeat here

	replicas, instances, ready, restarts, nodeReady, heartbeatAge *prometheus.Desc
}

func newClusterCollector(c *cache.Cache, heartbeats *sync.Map) *clusterCollector {
	return &clusterCollector{c: c, heartbeats: heartbeats,
		replicas:     prometheus.NewDesc("wasmorch_workload_replicas", "Replicas a workload asks for.", []string{"workload"}, nil),
		instances:    prometheus.NewDesc("wasmorch_workload_instances", "A workload's instances by effective state.", []string{"workload", "state"}, nil),
		ready:        prometheus.NewDesc("wasmorch_workload_instances_ready", "A workload's ready instances (running, or serving for a function).", []string{"workload"}, nil),
		restarts:     prometheus.NewDesc("wasmorch_workload_restarts", "Restarts of a workload's current instances, as their nodes report them.", []string{"workload"}, nil),
		nodeReady:    prometheus.NewDesc("wasmorch_node_ready", "1 while a node's lease is alive (it heartbeats), else 0.", []string{"node"}, nil),
		heartbeatAge: prometheus.NewDesc("wasmorch_node_heartbeat_age_seconds", "Time since the node's last heartbeat to this member (nodes whose session is on another member are not reported here).", []string{"node"}, nil),
	}
}

func (cc *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{cc.replicas, cc.instances, cc.ready, cc.restarts, cc.nodeReady, cc.heartbeatAge} {
		ch <- d
	}
}

func (cc *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	type counts struct {
		replicas, ready int32
		restarts        int64
		states          map[v1.InstanceState]int
	}
	byWorkload := map[string]*counts{}
	nodes := map[string]bool{}
	cc.c.Read(func(r cache.Reader) {
		for _, w := range r.Workloads() {
			byWorkload[w.Value.GetName()] = &counts{replicas: w.Value.GetSpec().GetReplicas(), ready: w.Counts.Ready, states: map[v1.InstanceState]int{}}
		}
		r.EachInstance(func(e cache.Instance) bool {
			if k := byWorkload[e.Value.GetWorkload()]; k != nil {
				k.states[e.State]++
				k.restarts += int64(e.Status.GetRestarts())
			}
			return true
		})
		for _, n := range r.Nodes() {
			nodes[n.Value.GetName()] = n.Alive
		}
	})
	for name, k := range byWorkload {
		ch <- prometheus.MustNewConstMetric(cc.replicas, prometheus.GaugeValue, float64(k.replicas), name)
		ch <- prometheus.MustNewConstMetric(cc.ready, prometheus.GaugeValue, float64(k.ready), name)
		ch <- prometheus.MustNewConstMetric(cc.restarts, prometheus.GaugeValue, float64(k.restarts), name)
		for st, n := range k.states {
			ch <- prometheus.MustNewConstMetric(cc.instances, prometheus.GaugeValue, float64(n), name, stateLabel(st))
		}
	}
	now := time.Now()
	for name, alive := range nodes {
		v := 0.0
		if alive {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(cc.nodeReady, prometheus.GaugeValue, v, name)
		if at, ok := cc.heartbeats.Load(name); ok {
			ch <- prometheus.MustNewConstMetric(cc.heartbeatAge, prometheus.GaugeValue, now.Sub(at.(time.Time)).Seconds(), name)
		}
	}
}

// stateLabel is an instance state as the metrics spell it: "Running".
func stateLabel(s v1.InstanceState) string {
	name := s.String()[len("INSTANCE_STATE_"):]
	out := []byte{name[0]}
	for i := 1; i < len(name); i++ {
		c := name[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		out = append(out, c)
	}
	return string(out)
}
