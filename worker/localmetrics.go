package worker

import (
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// localMetrics are the local function listener's Prometheus metrics
// (`agent --local-http` with --metrics-addr): the gateway's function
// metrics, by the same labels, under names of their own, so that a
// site's requests, which no gateway sees, are counted too.
type localMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	inFlight *prometheus.GaugeVec
}

func newLocalMetrics(reg prometheus.Registerer) *localMetrics {
	if reg == nil {
		return nil
	}
	m := &localMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wasmorch_local_function_requests_total",
			Help: "Requests the local function listener (--local-http) answered for a function, by workload, route, generation of the replica that answered (\"\" when none did) and HTTP status code."},
			[]string{"workload", "route", "generation", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "wasmorch_local_function_request_duration_seconds",
			Help: "Time from a request's arrival at the local function listener to the end of its response, by workload, route and generation.", Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 14)},
			[]string{"workload", "route", "generation"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "wasmorch_local_function_requests_in_flight",
			Help: "Requests of a function the local function listener is answering now."}, []string{"workload", "route"}),
	}
	reg.MustRegister(m.requests, m.duration, m.inFlight)
	return m
}

// localObserved is one request's measurement.
type localObserved struct {
	m               *localMetrics
	workload, route string
	start           time.Time
	generation      atomic.Int64 // 0: no replica answered
}

func (m *localMetrics) begin(workload, route string) *localObserved {
	if m == nil {
		return nil
	}
	m.inFlight.WithLabelValues(workload, route).Inc()
	return &localObserved{m: m, workload: workload, route: route, start: time.Now()}
}

func (o *localObserved) answeredBy(generation int64) {
	if o != nil {
		o.generation.Store(generation)
	}
}

// done records the request with the status it was answered with.
func (o *localObserved) done(status int) {
	if o == nil {
		return
	}
	gen := ""
	if g := o.generation.Load(); g != 0 {
		gen = strconv.FormatInt(g, 10)
	}
	o.m.inFlight.WithLabelValues(o.workload, o.route).Dec()
	o.m.requests.WithLabelValues(o.workload, o.route, gen, strconv.Itoa(status)).Inc()
	o.m.duration.WithLabelValues(o.workload, o.route, gen).Observe(time.Since(o.start).Seconds())
}
