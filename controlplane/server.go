// Package controlplane is a wasmorch control-plane member: an embedded etcd
// holding all cluster state, the gRPC API that the CLI (Control) and the
// workers (Agent) speak, and the leader-only loops — the workload controller
// and the scheduler — that run behind an etcd election even with a single
// member, so that adding members is additive.
package controlplane

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.etcd.io/etcd/server/v3/embed"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/wasmorch/wasmorch/controlplane/api"
	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/controlplane/blobs"
	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/cloud"
	"github.com/wasmorch/wasmorch/controlplane/cloud/provider"
	"github.com/wasmorch/wasmorch/controlplane/controller"
	"github.com/wasmorch/wasmorch/controlplane/events"
	"github.com/wasmorch/wasmorch/controlplane/gateway"
	"github.com/wasmorch/wasmorch/controlplane/membership"
	"github.com/wasmorch/wasmorch/controlplane/secretstore"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/datadir"
)

// Server is one control-plane member.
type Server struct {
	cfg   Config
	log   *slog.Logger
	etcd  *embed.Etcd
	store *store.Store
	// cache is the member's view of the cluster, which every reader here
	// uses instead of etcd (writes go to etcd).
	cache   *cache.Cache
	blobs   *blobs.Store
	grpc    *grpc.Server
	apiLis  net.Listener
	http    *http.Server
	httpLis net.Listener
	debug   *http.Server // the profiler, when Config.DebugAddr is set
	dbgLis  net.Listener
	api     *api.Server
	metrics *metrics
	loops   *controller.Metrics // the leader's loops
	events  *events.Recorder
	gateway *gateway.Gateway
	sec     *security            // the cluster CA and this member's certificate
	keys    *secretstore.Keyring // configs: the secrets key and the data keys it unwrapped

	// metricsSrv serves /metrics on Config.MetricsAddr, apart from the
	// gateway's public port; nil when it is off.
	metricsSrv *http.Server
	metricsLis net.Listener
	// selfConn is the dashboard's connection to this member's API
	// (dashboard.go), served with /metrics.
	selfConn *grpc.ClientConn

	providers    []provider.Provider // cloud: the node providers (cloud.go)
	cloudMetrics *cloud.Metrics

	lock      *datadir.Lock // this member's hold on its data dir
	stopping  chan struct{}
	closeOnce sync.Once
}

// New validates cfg, starts the embedded etcd and binds the API and HTTP
// listeners. On any failure it closes what it had started.
func New(ctx context.Context, cfg Config) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("control plane config: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "controlplane"), stopping: make(chan struct{})}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	// A second member on this data dir would wait forever on etcd's lock
	// of its database: say at once who holds it.
	if s.lock, err = datadir.Acquire(cfg.DataDir); err != nil {
		return nil, err
	}
	if s.apiLis, err = net.Listen("tcp", cfg.APIAddr); err != nil {
		return nil, fmt.Errorf("API address %s: %w", cfg.APIAddr, err)
	}
	if s.httpLis, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("HTTP address %s: %w", cfg.HTTPAddr, err)
	}
	if cfg.MetricsAddr != "" {
		if s.metricsLis, err = net.Listen("tcp", cfg.MetricsAddr); err != nil {
			return nil, fmt.Errorf("metrics address %s: %w", cfg.MetricsAddr, err)
		}
	}
	if cfg.DebugAddr != "" {
		if s.dbgLis, err = net.Listen("tcp", cfg.DebugAddr); err != nil {
			return nil, fmt.Errorf("debug address %s: %w", cfg.DebugAddr, err)
		}
		dm := http.NewServeMux()
		dm.HandleFunc("/debug/pprof/", pprof.Index)
		dm.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		dm.HandleFunc("/debug/pprof/profile", pprof.Profile)
		dm.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		dm.HandleFunc("/debug/pprof/trace", pprof.Trace)
		s.debug = &http.Server{Handler: dm, ReadHeaderTimeout: 10 * time.Second}
	}
	join := membership.JoinConfig{Name: cfg.Name, PeerAddr: cfg.EtcdPeerAddr, Servers: cfg.Join, Token: cfg.JoinToken, Logger: cfg.Logger}
	var joined membership.Joined
	if len(cfg.Join) > 0 && !membership.HasData(cfg.DataDir) {
		if joined, err = membership.Join(ctx, join); err != nil {
			return nil, err
		}
		// Every member holds the CA and the secrets key.
		if err := auth.SaveCA(pkiDir(cfg.DataDir), joined.CACert, joined.CAKey); err != nil {
			return nil, fmt.Errorf("the cluster CA received on joining: %w", err)
		}
		if err := secretstore.SaveReceivedSecretsKey(cfg.DataDir, joined.SecretsKey); err != nil {
			return nil, fmt.Errorf("the secrets key received on joining: %w", err)
		}
	}
	if cfg.CADir != "" && !hasCA(cfg.DataDir) {
		if err := auth.CopyCA(cfg.CADir, pkiDir(cfg.DataDir)); err != nil {
			return nil, err
		}
	}
	// The CA and this member's certificate come before etcd: its peer
	// listener serves with them (peerTLS).
	if s.sec, err = newSecurity(cfg, s.APIAddr()); err != nil {
		return nil, fmt.Errorf("cluster credentials in %s: %w", pkiDir(cfg.DataDir), err)
	}
	var cli *clientv3.Client
	pki := pkiDir(cfg.DataDir)
	if s.etcd, cli, err = membership.StartEtcd(ctx, membership.EtcdConfig{Name: cfg.Name, DataDir: cfg.DataDir, PeerAddr: cfg.EtcdPeerAddr,
		InitialCluster: cfg.InitialCluster, Joined: joined.InitialCluster,
		CertFile: filepath.Join(pki, memberCertFile), KeyFile: filepath.Join(pki, memberKeyFile), CAFile: auth.CACertPath(pki)}); err != nil {
		return nil, err
	}
	s.store = store.New(cli)
	s.cache = cache.New(cache.Config{Client: cli, Logger: s.log.With("component", "cache")})
	// configs: the secrets key: shared through etcd by a static
	// bootstrap, received by a joining member, created otherwise.
	if cfg.InitialCluster != "" && !secretstore.HasSecretsKey(cfg.DataDir) {
		if err := secretstore.AdoptBootstrapSecretsKey(ctx, cli, cfg.DataDir); err != nil {
			return nil, err
		}
	}
	if s.keys, err = secretstore.LoadKeyring(cfg.DataDir); err != nil {
		return nil, err
	}
	if err := s.sec.writeAdminCredential(cfg, s.clientAddr()); err != nil {
		return nil, fmt.Errorf("admin credential: %w", err)
	}
	if joined.InitialCluster != "" {
		if err := membership.Promote(ctx, join, s.sec.ca, s.sec.member); err != nil {
			return nil, err
		}
	}
	s.blobs = blobs.New(cli)
	uploads := filepath.Join(cfg.DataDir, "uploads")
	if err := os.MkdirAll(uploads, 0o700); err != nil {
		return nil, fmt.Errorf("upload spool directory: %w", err)
	}
	s.metrics = newMetrics()
	s.loops = controller.NewMetrics(s.metrics.registry)
	s.events = events.New(cli, cfg.Name)

	s.api = api.New(api.Config{
		Name: cfg.Name, Logger: s.log, Store: s.store, Cache: s.cache, Blobs: s.blobs, Events: s.events, Etcd: s.etcd,
		CA: s.sec.ca, Identity: s.sec.member, Secrets: s.keys, Registry: s.metrics.registry,
		HeartbeatInterval: cfg.HeartbeatInterval, NodeGrace: cfg.NodeGrace, RevisionHistoryLimit: cfg.RevisionHistoryLimit,
		Stopping: s.stopping, MaxUploadBytes: cfg.MaxUploadBytes, UploadDir: uploads,
		RolloutMinReady: cmp.Or(cfg.RolloutMinReady, DefaultMinReady),
	})
	s.grpc = grpc.NewServer(s.api.ServerOptions()...)
	s.api.Register(s.grpc)
	if s.providers, err = s.newProviders(); err != nil {
		return nil, err
	}

	if s.metricsLis != nil {
		mm := http.NewServeMux()
		mm.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{}))
		dash, err := s.newDashboard()
		if err != nil {
			return nil, err
		}
		mm.Handle("/ui/", dash)
		mm.Handle("/ui", dash)
		s.metricsSrv = &http.Server{Handler: mm, ReadHeaderTimeout: 10 * time.Second}
	}
	// The public port: functions, and the two probes a load balancer
	// needs; nothing else about the member.
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", s.readyz)
	s.gateway = gateway.New(gateway.Config{
		Store: s.store, Cache: s.cache, Member: cfg.Name, Logger: s.log.With("component", "gateway"),
		TLS: auth.NodesClientTLS(s.sec.ca.Pool(), s.sec.member), Registry: s.metrics.registry,
		Record: func(ctx context.Context, object, reason, message string) {
			if err := s.events.Record(ctx, object, reason, "%s", message); err != nil {
				s.log.Debug("recording an event failed", "object", object, "reason", reason, "err", err)
			}
		},
	})
	mux.Handle("/", s.gateway)
	s.http = &http.Server{Handler: gateway.Strict(mux), ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// ServeFunctionsLocally lets the gateway call the function server of a
// worker in this process (node) directly, without an HTTP hop.
func (s *Server) ServeFunctionsLocally(node string, h http.Handler) {
	s.gateway.ServeLocally(node, h)
}

// APIAddr is the bound gRPC address.
func (s *Server) APIAddr() string { return s.apiLis.Addr().String() }

// HTTPAddr is the bound HTTP address.
func (s *Server) HTTPAddr() string { return s.httpLis.Addr().String() }

// MetricsAddr is the bound metrics address, "" when metrics are off.
func (s *Server) MetricsAddr() string {
	if s.metricsLis == nil {
		return ""
	}
	return s.metricsLis.Addr().String()
}

// Start serves the API and HTTP, and takes part in the controller election,
// until ctx is done; then it shuts everything down.
func (s *Server) Start(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.cache.Start(gctx) })
	g.Go(func() error { return s.api.Start(gctx) })
	g.Go(func() error {
		if err := s.grpc.Serve(s.apiLis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("gRPC API: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		if err := s.http.Serve(gateway.StrictListener(s.httpLis)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("HTTP: %w", err)
		}
		return nil
	})
	if s.metricsSrv != nil {
		g.Go(func() error {
			if err := s.metricsSrv.Serve(s.metricsLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("metrics listener: %w", err)
			}
			return nil
		})
	}
	if s.debug != nil {
		g.Go(func() error {
			if err := s.debug.Serve(s.dbgLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("debug listener: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error { return s.lead(gctx) })
	g.Go(func() error { return s.gateway.Start(gctx) })
	m := &membership.Member{Name: s.cfg.Name, PeerAddr: s.cfg.EtcdPeerAddr, APIAddr: s.APIAddr(), HTTPAddr: s.HTTPAddr(), ElectionTTL: s.cfg.ElectionTTL,
		Etcd: s.etcd, Client: s.store.Client, Events: s.events, Logger: s.log, Registry: s.metrics.registry}
	g.Go(func() error { return m.Advertise(gctx) })
	g.Go(func() error { return m.UpdatePeerURL(gctx) })
	g.Go(func() error { return m.WatchRaft(gctx) })
	g.Go(func() error { return m.ExpediteFailover(gctx) })
	g.Go(func() error { return s.keepCertificates(gctx) })
	g.Go(func() error {
		select {
		case <-gctx.Done():
		case err := <-s.etcd.Err():
			return fmt.Errorf("embedded etcd: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		s.shutdown()
		return nil
	})
	err := g.Wait()
	s.Close()
	return err
}

// shutdown stops the servers: streams (sessions, logs) are told to end, and
// the gRPC server is given a moment to finish calls in flight.
func (s *Server) shutdown() {
	s.closeStopping()
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		s.grpc.Stop()
	}
	sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = s.http.Shutdown(sctx)
	// Nothing waits on these two: closed, not drained.
	if s.metricsSrv != nil {
		_ = s.metricsSrv.Close()
	}
	if s.debug != nil {
		_ = s.debug.Close()
	}
}

func (s *Server) closeStopping() {
	select {
	case <-s.stopping:
	default:
		close(s.stopping)
	}
}

// Close releases everything; safe to call twice.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closeStopping()
		if s.grpc != nil {
			s.grpc.Stop()
		}
		if s.http != nil {
			_ = s.http.Close()
		}
		if s.apiLis != nil {
			_ = s.apiLis.Close()
		}
		if s.httpLis != nil {
			_ = s.httpLis.Close()
		}
		if s.metricsSrv != nil {
			_ = s.metricsSrv.Close()
		}
		if s.metricsLis != nil {
			_ = s.metricsLis.Close()
		}
		if s.selfConn != nil {
			_ = s.selfConn.Close()
		}
		if s.debug != nil {
			_ = s.debug.Close()
		}
		if s.dbgLis != nil {
			_ = s.dbgLis.Close()
		}
		s.closeProviders() // their agents, before the API they talk to
		if s.api != nil {
			s.api.Close()
		}
		if s.store != nil {
			_ = s.store.Client.Close()
		}
		if s.etcd != nil {
			s.etcd.Close()
		}
		s.lock.Release()
	})
	return nil
}

// lead campaigns for leadership and runs the controller while it leads.
func (s *Server) lead(ctx context.Context) error {
	for ctx.Err() == nil {
		if err := s.leadOnce(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("leadership lost or campaign failed; campaigning again", "err", err)
			select {
			case <-time.After(200 * time.Millisecond):
			case <-ctx.Done():
			}
		}
	}
	return nil
}

func (s *Server) leadOnce(ctx context.Context) error {
	ttl := int(s.cfg.ElectionTTL.Round(time.Second) / time.Second)
	sess, err := concurrency.NewSession(s.store.Client, concurrency.WithTTL(ttl), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("election session: %w", err)
	}
	defer sess.Close()
	// A previous incarnation of this member (killed before it could resign)
	// may still hold the election under its old lease: it is us, so end it
	// rather than wait for the lease to expire.
	if err := s.revokeStaleSelf(ctx, sess.Lease()); err != nil {
		s.log.Warn("could not clear a stale leadership of this member", "err", err)
	}
	el := concurrency.NewElection(sess, store.ElectionPrefix)
	if err := el.Campaign(ctx, s.cfg.Name); err != nil {
		return fmt.Errorf("campaign: %w", err)
	}
	s.log.Info("elected leader; running controllers", "member", s.cfg.Name)
	s.metrics.leader.Set(1)
	defer s.metrics.leader.Set(0)
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-sess.Done():
			cancel()
		case <-lctx.Done():
		}
	}()
	clouded := s.runCloud(lctx, el)
	err = controller.Run(lctx, controller.Config{
		Store: s.store, Cache: s.cache, KV: store.Fenced(s.store.Client, el), Events: s.events, Logger: s.log, Metrics: s.loops,
		Resync: s.cfg.ControllerResync, MinReady: s.cfg.RolloutMinReady, FailureRestarts: s.cfg.RolloutFailureRestarts,
		ProgressDeadline: s.cfg.ProgressDeadline, MaxErrorPercent: s.cfg.RolloutMaxErrorPercent, RevisionLimit: s.cfg.RevisionHistoryLimit,
		BlobGCInterval: s.cfg.BlobGCInterval, BlobGCGrace: s.cfg.BlobGCGrace,
	})
	cancel()
	<-clouded
	rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
	defer rcancel()
	_ = el.Resign(rctx)
	select {
	case <-sess.Done():
		return errors.New("election session ended")
	default:
		return err
	}
}

func (s *Server) revokeStaleSelf(ctx context.Context, mine clientv3.LeaseID) error {
	resp, err := s.store.Client.Get(ctx, store.ElectionPrefix+"/", clientv3.WithPrefix())
	if err != nil {
		return err
	}
	for _, kv := range resp.Kvs {
		if string(kv.Value) == s.cfg.Name && clientv3.LeaseID(kv.Lease) != mine {
			if _, err := s.store.Client.Revoke(ctx, clientv3.LeaseID(kv.Lease)); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if _, err := s.store.Client.Get(ctx, "health-probe"); err != nil {
		http.Error(w, "etcd not ready: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
}

// metrics are the member's Prometheus metrics.
type metrics struct {
	registry *prometheus.Registry
	leader   prometheus.Gauge
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		leader:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "wasmorch_controlplane_is_leader", Help: "1 while this member runs the controllers."}),
	}
	m.registry.MustRegister(m.leader, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// MetricsRegistry is where the member's metrics are registered: a worker
// in the same process (`wasmorch up`) adds its own there, so that one
// /metrics serves both.
func (s *Server) MetricsRegistry() prometheus.Registerer { return s.metrics.registry }
