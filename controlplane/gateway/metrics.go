package gateway

import (
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the gateway's Prometheus metrics (observe), per function
// (workload and route) and, where a replica answered, per generation.
type metrics struct {
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	inFlight  *prometheus.GaugeVec
	cold      *prometheus.CounterVec
	coldTaken *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	if reg == nil {
		return nil
	}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wasmorch_function_requests_total",
			Help: "Requests the gateway answered for a function, by workload, route, generation of the replica that answered (\"\" when none did) and HTTP status code."},
			[]string{"workload", "route", "generation", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "wasmorch_function_request_duration_seconds",
			Help: "Time from a request's arrival at the gateway to the end of its response, by workload, route and generation.", Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 14)},
			[]string{"workload", "route", "generation"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "wasmorch_function_requests_in_flight",
			Help: "Requests of a function the gateway is answering or holding now."}, []string{"workload", "route"}),
		cold: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wasmorch_function_cold_starts_total",
			Help: "Requests that found a function scaled to zero (served cold while a replica starts)."}, []string{"workload", "route"}),
		coldTaken: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "wasmorch_function_cold_start_duration_seconds",
			Help: "Time to answer a request that found its function scaled to zero.", Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 14)},
			[]string{"workload", "route"}),
	}
	reg.MustRegister(m.requests, m.duration, m.inFlight, m.cold, m.coldTaken)
	return m
}

// observed is one request's measurement: ServeHTTP starts it, the
// replica that answers sets its generation, and done records it.
type observed struct {
	m          *metrics
	workload   string
	route      string
	start      time.Time
	cold       bool
	generation atomic.Int64 // 0: no replica answered
}

// begin starts measuring a request of a function.
func (m *metrics) begin(workload, route string) *observed {
	if m == nil {
		return nil
	}
	m.inFlight.WithLabelValues(workload, route).Inc()
	return &observed{m: m, workload: workload, route: route, start: time.Now()}
}

// answeredBy notes the generation of the replica that answered.
func (o *observed) answeredBy(generation int64) {
	if o != nil {
		o.generation.Store(generation)
	}
}

// coldStart notes that the request found the function scaled to zero.
func (o *observed) coldStart() {
	if o != nil {
		o.cold = true
		o.m.cold.WithLabelValues(o.workload, o.route).Inc()
	}
}

// done records the request with the status it was answered with.
func (o *observed) done(code int) {
	if o == nil {
		return
	}
	took := time.Since(o.start).Seconds()
	gen := ""
	if g := o.generation.Load(); g != 0 {
		gen = strconv.FormatInt(g, 10)
	}
	if code == 0 {
		code = http.StatusOK
	}
	o.m.inFlight.WithLabelValues(o.workload, o.route).Dec()
	o.m.requests.WithLabelValues(o.workload, o.route, gen, strconv.Itoa(code)).Inc()
	o.m.duration.WithLabelValues(o.workload, o.route, gen).Observe(took)
	if o.cold {
		o.m.coldTaken.WithLabelValues(o.workload, o.route).Observe(took)
	}
}
