package cloud

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the cloud controller's Prometheus metrics, registered once
// per member and kept across its leaderships; a nil *Metrics counts
// nothing.
type Metrics struct {
	scaleUps       *prometheus.CounterVec
	nodesAsked     *prometheus.CounterVec
	nodesDeleted   *prometheus.CounterVec
	providerErrors *prometheus.CounterVec
	targetSize     *prometheus.GaugeVec
	readyNodes     *prometheus.GaugeVec
}

// NewMetrics makes the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		scaleUps: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wasmorch_cloud_scale_ups_total",
			Help: "Scale-ups of a node group the cloud controller asked its provider for."}, []string{"group"}),
		nodesAsked: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wasmorch_cloud_nodes_requested_total",
			Help: "Nodes the cloud controller asked a node group's provider to make."}, []string{"group"}),
		nodesDeleted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wasmorch_cloud_nodes_removed_total",
			Help: "Nodes of a node group the cloud controller removed, by reason: idle (scale-down of an empty node), drained (scale-down of a node whose instances moved), gone (its provider no longer lists it) or unjoined (it never joined)."}, []string{"group", "reason"}),
		providerErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wasmorch_cloud_provider_errors_total",
			Help: "Calls to a node provider that failed (the controller retries at its next pass)."}, []string{"provider"}),
		targetSize: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "wasmorch_cloud_group_target_size",
			Help: "Nodes a node group is asked to have, as its provider last said (on the leader)."}, []string{"group"}),
		readyNodes: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "wasmorch_cloud_group_ready_nodes",
			Help: "Ready nodes of a node group (on the leader)."}, []string{"group"}),
	}
	reg.MustRegister(m.scaleUps, m.nodesAsked, m.nodesDeleted, m.providerErrors, m.targetSize, m.readyNodes)
	return m
}

func (m *Metrics) scaledUp(group string, nodes int) {
	if m != nil {
		m.scaleUps.WithLabelValues(group).Inc()
		m.nodesAsked.WithLabelValues(group).Add(float64(nodes))
	}
}

func (m *Metrics) removed(group, reason string) {
	if m != nil {
		m.nodesDeleted.WithLabelValues(group, reason).Inc()
	}
}

func (m *Metrics) providerError(provider string) {
	if m != nil {
		m.providerErrors.WithLabelValues(provider).Inc()
	}
}

func (m *Metrics) group(group string, target, ready int) {
	if m != nil {
		m.targetSize.WithLabelValues(group).Set(float64(target))
		m.readyNodes.WithLabelValues(group).Set(float64(ready))
	}
}

// forget drops the gauges of a group that is gone.
func (m *Metrics) forget(group string) {
	if m != nil {
		m.targetSize.DeleteLabelValues(group)
		m.readyNodes.DeleteLabelValues(group)
	}
}
