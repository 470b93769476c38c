// Package api is the gRPC API a control-plane member serves: the Control
// service the CLI and other clients speak (workloads, instances, nodes,
// configs and secrets, rollouts, members, tokens, lists that page and a
// Watch), the Agent service the workers speak (join, register, heartbeat,
// sessions with deltas, status reports, blobs), their authorization by
// the caller's certificate, and the mapping of error categories to gRPC
// codes. It reads the member's cache and writes etcd with compare-and-
// swap; it holds no state of its own but the node sessions and leases of
// the workers connected to it.
package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/controlplane/blobs"
	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/certrecords"
	"github.com/wasmorch/wasmorch/controlplane/events"
	"github.com/wasmorch/wasmorch/controlplane/secretstore"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"go.etcd.io/etcd/server/v3/embed"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
)

// Config is what the API takes from its member.
type Config struct {
	// Name is the member's name (in events, errors and join answers).
	Name   string
	Logger *slog.Logger
	Store  *store.Store
	Cache  *cache.Cache
	Blobs  *blobs.Store
	Events *events.Recorder
	// Etcd is the member's embedded etcd: membership calls and the quorum
	// guard ask it directly.
	Etcd *embed.Etcd
	// CA and Identity are the cluster CA (it signs nodes' certificates)
	// and the member's own certificate (served, and presented to workers).
	CA       *auth.CA
	Identity *auth.Keypair
	// Secrets is the member's keyring (secretstore.LoadKeyring).
	Secrets *secretstore.Keyring
	// Registry receives the API's metrics.
	Registry prometheus.Registerer
	// HeartbeatInterval and NodeGrace are told to the workers at
	// registration; a node's lease lasts NodeGrace.
	HeartbeatInterval time.Duration
	NodeGrace         time.Duration
	// RevisionHistoryLimit is how many revisions of a workload are kept
	// (zero: workloads.DefaultRevisionHistoryLimit).
	RevisionHistoryLimit int
	// RolloutMinReady is how long an instance must have been running
	// before it counts as available, told to clients in GetWorkload's
	// answer (WorkloadView.min_ready_millis) for their waits.
	RolloutMinReady time.Duration
	// MaxUploadBytes bounds an uploaded module or image archive (zero:
	// blobs.DefaultMaxUpload; at most blobs.MaxSize). UploadDir is where
	// uploads are spooled while they are received and checked (empty: the
	// system's temporary directory).
	MaxUploadBytes int64
	UploadDir      string
	// Stopping is closed when the member shuts down: streams end.
	Stopping <-chan struct{}
	// SessionRefresh is how long a node's session may stay silent before
	// it is sent an empty delta with the current revision (zero: 30 s), so
	// that a quiet node's resume point stays within the changes the member
	// keeps however busy the rest of the cluster is.
	SessionRefresh time.Duration
}

// Server serves the API of one member.
type Server struct {
	cfg      Config
	log      *slog.Logger
	store    *store.Store
	cache    *cache.Cache
	blobs    *blobs.Store
	events   *events.Recorder
	etcd     *embed.Etcd
	sec      *security
	secrets  *secretstore.Store
	workers  *workerClients
	statuses *store.Batcher
	stopping <-chan struct{}
	calls    *prometheus.CounterVec
	// uploads (upload.go)
	maxUpload   int64
	uploadDir   string
	uploads     uploadLocks
	inspections chan struct{}
	revoked     *certrecords.Revocations // the revocation list

	routeChecked func()
	// usersChecked, when set, is called between checking that no workload
	// uses a volume, config or secret and removing it (tests).
	usersChecked func(kind, name string)

	exits      exitNotes // observe: rate limit of exit events
	heartbeats sync.Map  // observe: node name → time of its last heartbeat here

	nodeGroups nodeGroupHooks // cloud: what the member knows of its node providers (nodegroups.go)
}

// security is the member's CA and the certificate it serves with.
type security struct {
	ca     *auth.CA
	member *auth.Keypair
}

// New returns the API of a member.
func New(cfg Config) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sec := &security{ca: cfg.CA, member: cfg.Identity}
	s := &Server{cfg: cfg, log: log, store: cfg.Store, cache: cfg.Cache, blobs: cfg.Blobs, events: cfg.Events, etcd: cfg.Etcd,
		sec: sec, secrets: secretstore.New(cfg.Store, cfg.Secrets), workers: newWorkerClients(), statuses: store.NewBatcher(cfg.Store.Client), stopping: cfg.Stopping,
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "wasmorch_api_calls_total", Help: "Unary API calls by method and outcome."}, []string{"method", "code"})}
	s.workers.sec = sec
	s.maxUpload, s.uploadDir, s.inspections = cfg.MaxUploadBytes, cfg.UploadDir, make(chan struct{}, maxInspections)
	if s.maxUpload <= 0 {
		s.maxUpload = blobs.DefaultMaxUpload
	}
	s.revoked = certrecords.NewRevocations(cfg.Store.Client, log)
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(s.calls, newClusterCollector(cfg.Cache, &s.heartbeats))
	}
	return s
}

// Register adds the Control and Agent services to g, and for any gRPC
// client (observe) the standard health service and server reflection
// (auth.go says who may call them).
func (s *Server) Register(g *grpc.Server) {
	v1.RegisterControlServer(g, &controlAPI{s: s})
	v1.RegisterAgentServer(g, &agentAPI{s: s, leases: map[string]nodeLease{}})
	hs := health.NewServer()
	for _, name := range []string{"", v1.Control_ServiceDesc.ServiceName, v1.Agent_ServiceDesc.ServiceName} {
		hs.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	if s.stopping != nil {
		go func() {
			<-s.stopping
			hs.Shutdown() // NOT_SERVING while the member stops
		}()
	}
	healthpb.RegisterHealthServer(g, healthServer{Server: hs, s: s})
	reflection.Register(g)
}

// MaxMessageBytes is the largest message the API takes. The CLI refuses a
// larger request before sending it (cliclient.MaxRequestBytes); an upload
// is streamed in chunks well under it.
const MaxMessageBytes = 4 << 20

// ServerOptions are the options of the member's gRPC server that the API
// needs: its transport credentials (TLS, the caller's certificate judged
// by authorize) and its interceptors (metrics, error codes,
// authorization, the quorum guard), and the largest message it takes.
func (s *Server) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.Creds(newAPICreds(s.sec)),
		grpc.ChainUnaryInterceptor(s.countCalls, unaryErrors, s.unaryAuth, s.quorumGuard),
		grpc.ChainStreamInterceptor(streamErrors, s.streamAuth),
		grpc.MaxRecvMsgSize(MaxMessageBytes),
	}
}

// Start runs what the API does in the background — writing the nodes'
// status reports, following the revocation list — until ctx ends.
func (s *Server) Start(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.revoked.Run(ctx)
	}()
	s.statuses.Run(ctx)
	<-done
	return nil
}

// SetRouteChecked makes ApplyWorkload call f between checking the routes
// and writing the workload: tests line two deploys up in that window.
func (s *Server) SetRouteChecked(f func()) { s.routeChecked = f }

// SetUsersChecked makes the removals of volumes, configs and secrets call
// f between checking that no workload uses them and removing them: tests
// deploy a user in that window.
func (s *Server) SetUsersChecked(f func(kind, name string)) { s.usersChecked = f }

// Close closes the API's connections to workers.
func (s *Server) Close() { s.workers.close() }

func (s *Server) countCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	code := "OK"
	if err != nil {
		code = "error"
	}
	s.calls.WithLabelValues(info.FullMethod, code).Inc()
	return resp, err
}

// unaryErrors maps error categories to gRPC codes at the API edge.
func unaryErrors(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	return resp, errdefs.ToGRPC(err)
}

func streamErrors(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return errdefs.ToGRPC(h(srv, ss))
}

// workerClients caches connections to workers (for logs), mutual TLS
// with this member's certificate, each checked to be its node's worker.
type workerClients struct {
	sec   *security
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn // by node and address
}

func newWorkerClients() *workerClients { return &workerClients{conns: map[string]*grpc.ClientConn{}} }

func (w *workerClients) client(node, addr string) (v1.WorkerClient, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	key := node + "@" + addr
	if c, ok := w.conns[key]; ok {
		return v1.NewWorkerClient(c), nil
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(auth.NodeClientTLS(w.sec.ca.Pool(), w.sec.member, node))))
	if err != nil {
		return nil, err
	}
	w.conns[key] = c
	return v1.NewWorkerClient(c), nil
}

func (w *workerClients) logs(ctx context.Context, node, addr string, req *v1.InstanceLogsRequest, send func(*v1.LogChunk) error) error {
	c, err := w.client(node, addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	stream, err := c.InstanceLogs(ctx, req)
	if err != nil {
		return err
	}
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := send(chunk); err != nil {
			return err
		}
	}
}

func (w *workerClients) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.conns {
		_ = c.Close()
	}
	w.conns = map[string]*grpc.ClientConn{}
}
