package gateway

import (
	"net/http"
	"strconv"
	"sync"
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

	// byRoute keeps each function's series (routeKey: *routeMetrics),
	// so that a request looks its function up once rather than a series
	// per metric by its label values. Series are never deleted.
	byRoute sync.Map
}

// routeKey names a function's series.
type routeKey struct{ workload, route string }

// routeMetrics are one function's series.
type routeMetrics struct {
	m        *metrics
	key      routeKey
	inFlight prometheus.Gauge
	answers  sync.Map // answerKey: *answerMetrics
}

// answerKey names the series of the answers of one generation (0: none
// answered) with one status code.
type answerKey struct {
	generation int64
	code       int
}

// answerMetrics are the series of the answers of an answerKey.
type answerMetrics struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

// route returns a function's series (those of cold starts are made at
// the first one, on that rarer path).
func (m *metrics) route(workload, route string) *routeMetrics {
	key := routeKey{workload, route}
	if rm, ok := m.byRoute.Load(key); ok {
		return rm.(*routeMetrics)
	}
	rm, _ := m.byRoute.LoadOrStore(key, &routeMetrics{
		m: m, key: key, inFlight: m.inFlight.WithLabelValues(workload, route),
	})
	return rm.(*routeMetrics)
}

// answer returns the series of answers of a generation with a code.
func (rm *routeMetrics) answer(generation int64, code int) *answerMetrics {
	key := answerKey{generation, code}
	if am, ok := rm.answers.Load(key); ok {
		return am.(*answerMetrics)
	}
	gen := ""
	if generation != 0 {
		gen = strconv.FormatInt(generation, 10)
	}
	am, _ := rm.answers.LoadOrStore(key, &answerMetrics{
		requests: rm.m.requests.WithLabelValues(rm.key.workload, rm.key.route, gen, strconv.Itoa(code)),
		duration: rm.m.duration.WithLabelValues(rm.key.workload, rm.key.route, gen),
	})
	return am.(*answerMetrics)
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
	rm         *routeMetrics
	start      time.Time
	cold       bool
	generation atomic.Int64 // 0: no replica answered
}

// begin starts measuring a request of a function.
func (m *metrics) begin(workload, route string) *observed {
	if m == nil {
		return nil
	}
	rm := m.route(workload, route)
	rm.inFlight.Inc()
	return &observed{rm: rm, start: time.Now()}
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
		o.rm.m.cold.WithLabelValues(o.rm.key.workload, o.rm.key.route).Inc()
	}
}

// done records the request with the status it was answered with.
func (o *observed) done(code int) {
	if o == nil {
		return
	}
	took := time.Since(o.start).Seconds()
	if code == 0 {
		code = http.StatusOK
	}
	o.rm.inFlight.Dec()
	am := o.rm.answer(o.generation.Load(), code)
	am.requests.Inc()
	am.duration.Observe(took)
	if o.cold {
		o.rm.m.coldTaken.WithLabelValues(o.rm.key.workload, o.rm.key.route).Observe(took)
	}
}
