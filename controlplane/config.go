package controlplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/blobs"
	"github.com/wasmorch/wasmorch/controlplane/cloud/provider"
	"github.com/wasmorch/wasmorch/controlplane/controller"
	"github.com/wasmorch/wasmorch/controlplane/membership"
)

// Config configures one control-plane member. cobra and viper fill it in
// cmd/; nothing in this package reads flags or the environment.
type Config struct {
	// Name is this member's name in the etcd cluster and in elections.
	Name string `json:"name" yaml:"name"`
	// DataDir holds the member's state; etcd's data lives in DataDir/etcd.
	DataDir string `json:"dataDir" yaml:"dataDir"`
	// APIAddr is where the gRPC API listens ("127.0.0.1:0" picks a port).
	APIAddr string `json:"apiAddr" yaml:"apiAddr"`
	// HTTPAddr is where the HTTP gateway, /healthz and /readyz listen.
	HTTPAddr string `json:"httpAddr" yaml:"httpAddr"`
	// MetricsAddr is where GET /metrics (Prometheus) answers, apart from
	// the gateway so that the clients of functions cannot read it; it has
	// no authentication: keep it on loopback. "" turns it off.
	MetricsAddr string `json:"metricsAddr" yaml:"metricsAddr"`
	// EtcdPeerAddr is etcd's peer listener, where the other members reach
	// this one (mutual TLS with member certificates only); loopback with
	// a free port by default. etcd has no client listener: clients go
	// through the gRPC API.
	EtcdPeerAddr string `json:"etcdPeerAddr" yaml:"etcdPeerAddr"`
	// HeartbeatInterval is how often workers heartbeat; NodeGrace is how
	// long a node may stay silent before it is NotReady.
	HeartbeatInterval time.Duration `json:"heartbeatInterval" yaml:"heartbeatInterval"`
	NodeGrace         time.Duration `json:"nodeGrace" yaml:"nodeGrace"`
	// ElectionTTL bounds how long a dead leader keeps its leadership.
	ElectionTTL time.Duration `json:"electionTTL" yaml:"electionTTL"`
	// InitialCluster lists every member of a new multi-member cluster, as
	// etcd's --initial-cluster ("cp1=https://10.0.0.1:2380,cp2=https://...");
	// it must name this member with EtcdPeerAddr. Empty: a cluster of one,
	// or the one Join returns. Ignored once DataDir holds etcd data.
	InitialCluster string `json:"initialCluster" yaml:"initialCluster"`
	// CADir holds the cluster CA (ca.crt, ca.key, as 'wasmorch ca create'
	// writes them) that a member copies into its data dir on its first
	// start: how the members of a static bootstrap share one CA, which
	// their etcd peer connections need before etcd starts.
	CADir string `json:"caDir" yaml:"caDir"`
	// Join lists API addresses of running members; a member starting on an
	// empty data dir asks one of them to add it to the etcd cluster.
	Join   []string     `json:"join" yaml:"join"`
	Logger *slog.Logger `json:"-" yaml:"-"`

	// security: JoinToken is the server-role join token a member joining
	// through Join presents (it receives the cluster CA in return).
	JoinToken string `json:"joinToken" yaml:"joinToken"`
	// CertLifetime is the lifetime of the certificates this member issues
	// (zero: a year); holders renew at two thirds of it. Tests shorten it.
	CertLifetime time.Duration `json:"certLifetime" yaml:"certLifetime"`
	// UserCredentialsDir, when set, also receives a copy of the admin
	// credential, named after the API address, where the CLI of the same
	// user finds it (auth.UserCredentialsDir).
	UserCredentialsDir string `json:"userCredentialsDir" yaml:"userCredentialsDir"`

	// rollouts: RevisionHistoryLimit is how many revisions of each
	// workload are kept (zero: workloads.DefaultRevisionHistoryLimit).
	RevisionHistoryLimit int `json:"revisionHistoryLimit" yaml:"revisionHistoryLimit"`
	// RolloutMinReady is how long a new instance must have been running
	// before a rolling update counts it as available and lets an old one
	// go (zero: DefaultMinReady).
	RolloutMinReady time.Duration `json:"rolloutMinReady" yaml:"rolloutMinReady"`
	// RolloutFailureRestarts and ProgressDeadline trigger an automatic
	// rollback of a rollout: an instance of the new generation restarted
	// this many times, or one not placed this long after the change (0
	// turns each off).
	RolloutFailureRestarts int           `json:"rolloutFailureRestarts" yaml:"rolloutFailureRestarts"`
	ProgressDeadline       time.Duration `json:"progressDeadline" yaml:"progressDeadline"`
	// RolloutMaxErrorPercent rolls back a function's rollout whose new
	// generation failed more than this percentage of the requests the
	// gateways sent it (at least rolloutMinRequests), and more than twice
	// the rate of the older generations (0 turns it off).
	RolloutMaxErrorPercent int `json:"rolloutMaxErrorPercent" yaml:"rolloutMaxErrorPercent"`

	// DebugAddr, when set, is where Go's profiler answers
	// (/debug/pprof/, net/http/pprof): keep it on loopback, it has no
	// authentication.
	DebugAddr string `json:"debugAddr" yaml:"debugAddr"`

	// ControllerResync is how often the leader's controller looks at every
	// workload and node again although nothing said they changed (zero:
	// 30 s): the safety net under the changes the member's cache reports.
	ControllerResync time.Duration `json:"controllerResync" yaml:"controllerResync"`

	// blob GC: BlobGCInterval is how often the leader looks for blobs
	// that no workload, instance or kept revision references (0 turns the
	// collector off); it deletes those that stayed unreferenced for
	// BlobGCGrace (zero: DefaultBlobGCGrace). See controller/blobgc.go.
	BlobGCInterval time.Duration `json:"blobGCInterval" yaml:"blobGCInterval"`
	BlobGCGrace    time.Duration `json:"blobGCGrace" yaml:"blobGCGrace"`
	// MaxUploadBytes bounds an uploaded module or image archive (at most
	// blobs.MaxSize; zero: DefaultMaxUploadBytes). Uploads are spooled in
	// DataDir/uploads while they are checked.
	MaxUploadBytes int64 `json:"maxUploadBytes" yaml:"maxUploadBytes"`

	// cloud: NodeGroups are the node groups the cloud controller keeps
	// (docs/cloud.md); ScaleDownDelay is how long a node of one must hold
	// nothing before it is deleted (zero: cloud.DefaultScaleDownDelay).
	NodeGroups     []provider.NodeGroup `json:"nodeGroups" yaml:"nodeGroups"`
	ScaleDownDelay time.Duration        `json:"scaleDownDelay" yaml:"scaleDownDelay"`
	// NodeProviders are external node providers, by name: the unix socket
	// each answers the plugin protocol on (proto/wasmorch/provider/v1);
	// their groups are theirs.
	NodeProviders map[string]string `json:"nodeProviders" yaml:"nodeProviders"`
}

// Defaults of the leader's loops (package controller), as the flags of
// up and server show them.
const (
	DefaultMinReady               = controller.DefaultMinReady
	DefaultRolloutFailureRestarts = controller.DefaultRolloutFailureRestarts
	DefaultProgressDeadline       = controller.DefaultProgressDeadline
	DefaultRolloutMaxErrorPercent = controller.DefaultRolloutMaxErrorPercent
	DefaultBlobGCInterval         = controller.DefaultBlobGCInterval
	DefaultBlobGCGrace            = controller.DefaultBlobGCGrace
	DefaultMaxUploadBytes         = blobs.DefaultMaxUpload
)

// DefaultMetricsAddr is where a member serves its metrics unless told
// otherwise: loopback, beside the API's 7070 (not Prometheus' own 9090,
// which a Prometheus scraping this host over loopback would hold).
const DefaultMetricsAddr = "127.0.0.1:7072"

// DefaultConfig returns the defaults `wasmorch up` and `server` start with.
func DefaultConfig() Config {
	name, err := os.Hostname()
	if err != nil || name == "" {
		name = "wasmorch"
	}
	return Config{
		Name:              name,
		DataDir:           ".wasmorch",
		APIAddr:           "127.0.0.1:7070",
		HTTPAddr:          "127.0.0.1:8080",
		MetricsAddr:       DefaultMetricsAddr,
		EtcdPeerAddr:      "127.0.0.1:0",
		HeartbeatInterval: 500 * time.Millisecond,
		NodeGrace:         2 * time.Second,
		ElectionTTL:       2 * time.Second,
		// rollouts
		RolloutFailureRestarts: DefaultRolloutFailureRestarts,
		ProgressDeadline:       DefaultProgressDeadline,
		RolloutMaxErrorPercent: DefaultRolloutMaxErrorPercent,
		// blob GC
		BlobGCInterval: DefaultBlobGCInterval,
		BlobGCGrace:    DefaultBlobGCGrace,
		MaxUploadBytes: DefaultMaxUploadBytes,
	}
}

// Validate checks the fields against each other.
func (c Config) Validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("name must not be empty"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir must not be empty"))
	}
	for flag, addr := range map[string]string{"api": c.APIAddr, "http": c.HTTPAddr, "etcd peer": c.EtcdPeerAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			errs = append(errs, fmt.Errorf("%s address %q is not host:port", flag, addr))
		}
	}
	if c.HeartbeatInterval <= 0 {
		errs = append(errs, errors.New("heartbeat interval must be positive"))
	}
	if c.NodeGrace < 2*c.HeartbeatInterval {
		errs = append(errs, fmt.Errorf("node grace %s must be at least twice the heartbeat interval %s", c.NodeGrace, c.HeartbeatInterval))
	}
	if c.InitialCluster != "" && len(c.Join) > 0 {
		errs = append(errs, errors.New("give either an initial cluster or members to join, not both"))
	}
	if c.InitialCluster != "" || len(c.Join) > 0 {
		if _, port, err := net.SplitHostPort(c.EtcdPeerAddr); err == nil && (port == "0" || port == "") {
			errs = append(errs, fmt.Errorf("etcd peer address %q needs a fixed port when the cluster has several members", c.EtcdPeerAddr))
		}
	}
	if c.InitialCluster != "" && c.CADir == "" && !hasCA(c.DataDir) && !membership.HasData(c.DataDir) {
		errs = append(errs, errors.New("a member of a statically bootstrapped cluster needs the cluster CA before it starts: create it once with 'wasmorch ca create --dir DIR' and start every member with --ca-dir DIR"))
	}
	if c.InitialCluster != "" {
		if _, err := parseInitialCluster(c.InitialCluster); err != nil {
			errs = append(errs, err)
		} else if !strings.Contains(","+c.InitialCluster+",", ","+c.Name+"=") {
			errs = append(errs, fmt.Errorf("initial cluster %q does not name this member %q", c.InitialCluster, c.Name))
		}
	}
	for _, a := range c.Join {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("join address %q is not host:port", a))
		}
	}
	if len(c.Join) > 0 && c.JoinToken == "" && !membership.HasData(c.DataDir) {
		errs = append(errs, errors.New("joining a cluster needs a server join token (create one on a running member with 'wasmorch token create --role server')"))
	}
	if c.CertLifetime < 0 {
		errs = append(errs, errors.New("certificate lifetime must not be negative"))
	}
	if c.RolloutFailureRestarts < 0 || c.ProgressDeadline < 0 {
		errs = append(errs, errors.New("rollout failure restarts and progress deadline must not be negative"))
	}
	if c.RolloutMaxErrorPercent < 0 || c.RolloutMaxErrorPercent > 100 {
		errs = append(errs, errors.New("rollout max error percent must be within 0..100"))
	}
	if c.RolloutMinReady < 0 {
		errs = append(errs, errors.New("rollout min ready must not be negative"))
	}
	if c.RevisionHistoryLimit < 0 {
		errs = append(errs, errors.New("revision history limit must not be negative"))
	}
	if c.BlobGCInterval < 0 || c.BlobGCGrace < 0 {
		errs = append(errs, errors.New("blob GC interval and grace must not be negative"))
	}
	if c.MaxUploadBytes < 0 || c.MaxUploadBytes > blobs.MaxSize {
		errs = append(errs, fmt.Errorf("max upload size must be within 0..%d MiB (0: %d MiB)", blobs.MaxSize>>20, DefaultMaxUploadBytes>>20))
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			errs = append(errs, fmt.Errorf("metrics address %q is not host:port (\"\" turns the metrics off)", c.MetricsAddr))
		}
	}
	if c.DebugAddr != "" {
		if _, _, err := net.SplitHostPort(c.DebugAddr); err != nil {
			errs = append(errs, fmt.Errorf("debug address %q is not host:port", c.DebugAddr))
		}
	}
	if c.ControllerResync < 0 {
		errs = append(errs, errors.New("controller resync must not be negative"))
	}
	if c.ElectionTTL < time.Second {
		errs = append(errs, errors.New("election TTL must be at least 1s"))
	}
	errs = append(errs, c.validateCloud()...)
	return errors.Join(errs...)
}

// parseInitialCluster checks etcd's NAME=URL[,NAME=URL...] list.
func parseInitialCluster(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		name, u, ok := strings.Cut(part, "=")
		if !ok || name == "" || u == "" {
			return nil, fmt.Errorf("initial cluster entry %q is not NAME=https://HOST:PORT", part)
		}
		pu, err := url.Parse(u)
		if err != nil || pu.Host == "" || (pu.Scheme != "http" && pu.Scheme != "https") {
			return nil, fmt.Errorf("initial cluster entry %q: %q is not a peer URL like https://HOST:PORT", part, u)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("initial cluster names member %q twice", name)
		}
		out[name] = u
	}
	return out, nil
}
