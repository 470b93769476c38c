package worker

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// metrics are a worker's Prometheus metrics (observe): its instances by
// state, their restarts and exits, and how long starts take.
type metrics struct {
	restarts *prometheus.CounterVec
	exits    *prometheus.CounterVec
	starts   prometheus.Histogram
}

// newMetrics registers w's metrics with reg; nil reg: none.
func newMetrics(reg prometheus.Registerer, w *Worker) *metrics {
	if reg == nil {
		return nil
	}
	m := &metrics{
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wasmorch_worker_instance_restarts_total",
			Help: "Instances this worker started again after they exited, by workload."}, []string{"workload"}),
		exits: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wasmorch_worker_instance_exits_total",
			Help: "Instance exits on this worker (not stops it asked for), by workload and reason (Completed, Error, Trap, OOMKilled ...)."}, []string{"workload", "reason"}),
		starts: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "wasmorch_worker_instance_start_seconds",
			Help: "Time of one start of an instance: fetching its module if needed, preparing and starting it.", Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 14)}),
	}
	// edge: the module cache (worker/modcache) against its bound.
	cache := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "wasmorch_worker_module_cache_bytes",
		Help: "Bytes of modules (and image archives) this worker keeps on disk."}, func() float64 { return float64(w.modules.Usage().Bytes) })
	evicted := prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "wasmorch_worker_module_cache_evictions_total",
		Help: "Modules this worker evicted from its cache to stay within --module-cache-size (none in use by its instances)."}, func() float64 { return float64(w.modules.Usage().Evicted) })
	reg.MustRegister(cache, evicted)
	reg.MustRegister(m.restarts, m.exits, m.starts, &instanceCollector{w: w,
		desc: prometheus.NewDesc("wasmorch_worker_instances", "Instances this worker holds, by the state it last reported.", []string{"node", "state"}, nil)})
	return m
}

func (m *metrics) restarted(workload string) {
	if m != nil {
		m.restarts.WithLabelValues(workload).Inc()
	}
}

func (m *metrics) exited(workload, reason string) {
	if m != nil {
		m.exits.WithLabelValues(workload, reason).Inc()
	}
}

func (m *metrics) started(took time.Duration) {
	if m != nil {
		m.starts.Observe(took.Seconds())
	}
}

// instanceCollector counts the worker's instances by state when scraped.
type instanceCollector struct {
	w    *Worker
	desc *prometheus.Desc
}

func (c *instanceCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *instanceCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[pb.InstanceState]int{}
	for _, st := range c.w.currentStatuses() {
		counts[st.GetState()]++
	}
	for st, n := range counts {
		name := st.String()[len("INSTANCE_STATE_"):]
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), c.w.cfg.NodeName, name[:1]+lower(name[1:]))
	}
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
