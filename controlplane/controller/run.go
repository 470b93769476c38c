package controller

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/events"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
)

// Config is what the leader's loops take from their member: where to
// read (the cache) and write (KV, fenced on the leadership), and the
// settings of the member's Config that concern them.
type Config struct {
	Store   *store.Store
	Cache   *cache.Cache
	KV      clientv3.KV
	Events  *events.Recorder
	Logger  *slog.Logger
	Metrics *Metrics

	// Resync is how often every workload and node is reconciled again
	// (zero: 30 s).
	Resync time.Duration
	// Rollouts: MinReady (zero: DefaultMinReady), the automatic rollback
	// triggers (zero turns each off) and the revision history limit
	// (zero: workloads.DefaultRevisionHistoryLimit).
	MinReady         time.Duration
	FailureRestarts  int
	ProgressDeadline time.Duration
	MaxErrorPercent  int
	RevisionLimit    int
	// BlobGCInterval (zero: no collector) and BlobGCGrace (zero:
	// DefaultBlobGCGrace).
	BlobGCInterval time.Duration
	BlobGCGrace    time.Duration
}

// Run runs the leader's loops — the workload controller with the
// scheduler, the autoscaler and the blob collector — until ctx ends (the
// leadership is over) or the controller fails.
func Run(ctx context.Context, cfg Config) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	minReady := cfg.MinReady
	if minReady <= 0 {
		minReady = DefaultMinReady
	}
	limit := cfg.RevisionLimit
	if limit <= 0 {
		limit = workloads.DefaultRevisionHistoryLimit
	}
	c := &controller{st: cfg.Store, cache: cfg.Cache, kv: cfg.KV, log: log.With("loop", "controller"), metrics: cfg.Metrics, events: cfg.Events,
		resync: cfg.Resync, minReady: minReady, failureRestarts: cfg.FailureRestarts, progressDeadline: cfg.ProgressDeadline,
		maxErrorPercent: cfg.MaxErrorPercent, revisionLimit: limit}
	scaled := make(chan struct{})
	go func() {
		defer close(scaled)
		as := &autoscaler{st: cfg.Store, cache: cfg.Cache, kv: cfg.KV, log: log.With("loop", "autoscaler"), events: cfg.Events, now: time.Now}
		_ = as.Start(ctx) // returns nil when ctx ends
	}()
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		if cfg.BlobGCInterval > 0 {
			_ = NewBlobCollector(cfg).Start(ctx) // returns nil when ctx ends
		}
	}()
	err := c.Start(ctx)
	cancel()
	<-scaled
	<-collected
	return err
}

// NewBlobCollector returns the blob collector of cfg's leadership.
func NewBlobCollector(cfg Config) *BlobCollector {
	grace := cfg.BlobGCGrace
	if grace <= 0 {
		grace = DefaultBlobGCGrace
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &BlobCollector{st: cfg.Store, cache: cfg.Cache, kv: cfg.KV, log: log.With("loop", "blobgc"), events: cfg.Events, metrics: cfg.Metrics,
		interval: cfg.BlobGCInterval, grace: grace, now: time.Now}
}

// SetClock makes the collector read the time from now (tests).
func (g *BlobCollector) SetClock(now func() time.Time) { g.now = now }

// Metrics are the leader's loops' Prometheus metrics, registered once per
// member and kept across its leaderships.
type Metrics struct {
	passes           prometheus.Counter
	queueDepth       prometheus.Gauge
	reconcileSeconds prometheus.Histogram
	reconciles       *prometheus.CounterVec

	// observe: the scheduler's placement passes, and the instances they
	// placed or could not place.
	scheduleSeconds prometheus.Histogram
	placements      prometheus.Counter
	unplaced        prometheus.Counter

	gcPasses       prometheus.Counter
	blobsCollected prometheus.Counter
	blobBytes      prometheus.Counter
	blobsStored    prometheus.Gauge
}

// NewMetrics makes the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		passes: prometheus.NewCounter(prometheus.CounterOpts{Name: "wasmorch_controller_passes_total",
			Help: "Rounds of reconciles run by the workload controller (each takes a batch of keys from its work queue)."}),
		queueDepth: prometheus.NewGauge(prometheus.GaugeOpts{Name: "wasmorch_controller_queue_depth",
			Help: "Keys (workloads, nodes) waiting in the workload controller's work queue."}),
		reconcileSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "wasmorch_controller_round_seconds",
			Help: "Time of one round of the workload controller: its reconciles, writes and placements.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wasmorch_controller_reconciles_total",
			Help: "Keys the workload controller reconciled, by kind (workload, node)."}, []string{"kind"}),
		scheduleSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "wasmorch_scheduler_pass_seconds",
			Help: "Time of one placement pass of the scheduler (the plan over a snapshot of the nodes), on the leader.", Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		placements: prometheus.NewCounter(prometheus.CounterOpts{Name: "wasmorch_scheduler_placements_total",
			Help: "Instances the scheduler bound to a node."}),
		unplaced: prometheus.NewCounter(prometheus.CounterOpts{Name: "wasmorch_scheduler_unplaced_total",
			Help: "Placement attempts that found no node for an instance (it stays Pending with the reason)."}),
		gcPasses: prometheus.NewCounter(prometheus.CounterOpts{Name: "wasmorch_blob_gc_passes_total",
			Help: "Passes of the blob garbage collector (on the leader)."}),
		blobsCollected: prometheus.NewCounter(prometheus.CounterOpts{Name: "wasmorch_blobs_collected_total",
			Help: "Unreferenced blobs (modules, image archives) the garbage collector deleted."}),
		blobBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "wasmorch_blob_bytes_collected_total",
			Help: "Bytes of the blobs the garbage collector deleted."}),
		blobsStored: prometheus.NewGauge(prometheus.GaugeOpts{Name: "wasmorch_blobs_stored",
			Help: "Blobs stored in etcd, as the last garbage collector pass on this member found them."}),
	}
	reg.MustRegister(m.passes, m.queueDepth, m.reconcileSeconds, m.reconciles, m.gcPasses, m.blobsCollected, m.blobBytes, m.blobsStored,
		m.scheduleSeconds, m.placements, m.unplaced)
	return m
}

// observePlan counts one placement pass (observe); a nil Metrics (tests)
// counts nothing.
func (m *Metrics) observePlan(took time.Duration, bound, unplaced int) {
	if m == nil {
		return
	}
	m.scheduleSeconds.Observe(took.Seconds())
	m.placements.Add(float64(bound))
	m.unplaced.Add(float64(unplaced))
}
