// Package membership is a member's place in the control plane's etcd
// cluster: its embedded etcd (no client listener; peers on mutual TLS),
// joining a running cluster with a server token and being promoted from
// learner, advertising where it serves, following raft, ending a dead
// controller leader's leadership early, and restoring a snapshot into a
// new data dir. Quorum, leader election and replication are etcd's;
// nothing here decides them.
package membership

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/diskspace"
)

// etcdMaxRequestBytes leaves room for one blob chunk plus its key.
const etcdMaxRequestBytes = store.MaxRequestBytes

// Dir is where a member's etcd data lives under its data dir.
func Dir(dataDir string) string { return filepath.Join(dataDir, "etcd") }

// HasData reports whether the data dir already holds an etcd member, in
// which case etcd restarts from it and ignores every bootstrap setting.
func HasData(dataDir string) bool {
	_, err := os.Stat(filepath.Join(Dir(dataDir), "member"))
	return err == nil
}

// PeerURL is the URL of an etcd peer listener: always TLS.
func PeerURL(addr string) string { return "https://" + addr }

// peerTLS is how members talk to each other over etcd's peer port: mutual
// TLS with their member certificates (member.crt holds the CA after the
// certificate), each verifying the other's against the cluster CA under
// the name every member certificate carries. A certificate of the same CA
// issued to a node or an admin is refused: only member certificates carry
// auth.MemberServerName. The client's addresses are not in member
// certificates (members move), so etcd's check of the client's SAN
// against its IP address is replaced by that name.
func peerTLS(cfg EtcdConfig) transport.TLSInfo {
	return transport.TLSInfo{
		CertFile:            cfg.CertFile,
		KeyFile:             cfg.KeyFile,
		TrustedCAFile:       cfg.CAFile,
		ClientCertAuth:      true,
		ServerName:          auth.MemberServerName,
		AllowedHostnames:    []string{auth.MemberServerName},
		SkipClientSANVerify: true,
		MinVersion:          tls.VersionTLS13,
	}
}

// httpsInitialCluster turns the peer URLs of an initial cluster list into
// https ones: peers always speak TLS, and http:// is accepted in the list
// for the sake of scripts written before they did.
func httpsInitialCluster(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		name, u, _ := strings.Cut(p, "=")
		parts[i] = name + "=" + "https://" + strings.TrimPrefix(strings.TrimPrefix(u, "http://"), "https://")
	}
	return strings.Join(parts, ",")
}

// EtcdConfig is a member's embedded etcd.
type EtcdConfig struct {
	Name     string
	DataDir  string // etcd's data goes in Dir(DataDir)
	PeerAddr string // host:port of the peer listener
	// InitialCluster is the static membership of a new cluster (etcd's
	// --initial-cluster; http:// URLs are read as https://). Joined, when
	// set, is the one a running member returned (Join): the member then
	// joins an existing cluster. Neither: a cluster of one.
	InitialCluster string
	Joined         string
	// CertFile and KeyFile are the member's certificate (with the CA after
	// it) and key; CAFile the cluster CA: the peer listener's mutual TLS.
	CertFile, KeyFile, CAFile string
	// MinFreeBytes is the free space etcd must find on the disk of DataDir
	// to start; zero: DefaultMinFreeBytes.
	MinFreeBytes int64
}

// DefaultMinFreeBytes is the free space a member needs to start its etcd:
// room for its write-ahead log (64 MB files, the next one made ahead of
// time) and for its database to grow. Below it etcd would stop at its
// first write that does not fit, and take the process with it.
const DefaultMinFreeBytes = 256 << 20

// checkFreeSpace refuses to start etcd on a disk too full for it.
func checkFreeSpace(cfg EtcdConfig) error {
	need := cfg.MinFreeBytes
	if need <= 0 {
		need = DefaultMinFreeBytes
	}
	space, err := diskspace.Of(cfg.DataDir)
	if err != nil {
		return err
	}
	if space.Free < need {
		return &diskspace.LowError{Dir: cfg.DataDir, Space: space, Need: need, For: "the embedded etcd"}
	}
	return nil
}

// StartEtcd starts the embedded etcd member and returns it with an
// in-process client (no network hop for the control plane's own calls).
func StartEtcd(ctx context.Context, cfg EtcdConfig) (*embed.Etcd, *clientv3.Client, error) {
	if err := checkFreeSpace(cfg); err != nil {
		return nil, nil, err
	}
	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = Dir(cfg.DataDir)
	ec.Logger = "zap"
	ec.LogLevel = "fatal"
	ec.LogOutputs = []string{"stderr"}
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(etcdLogger(cfg.DataDir))
	// etcd serves no clients over the network: the control plane uses an
	// in-process client (v3client), and everything else goes through the
	// gRPC API and its mutual TLS. Only the peer listener is open, for the
	// other members, and it admits nothing but a member certificate of the
	// cluster CA (see peerTLS).
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{}, []url.URL{}
	peerURL, err := url.Parse(PeerURL(cfg.PeerAddr))
	if err != nil {
		return nil, nil, fmt.Errorf("etcd peer address: %w", err)
	}
	ec.ListenPeerUrls = []url.URL{*peerURL}
	ec.AdvertisePeerUrls = []url.URL{*peerURL}
	ec.PeerTLSInfo = peerTLS(cfg)
	ec.InitialClusterToken = "wasmorch"
	switch {
	case cfg.Joined != "":
		ec.InitialCluster = cfg.Joined
		ec.ClusterState = embed.ClusterStateFlagExisting
	case cfg.InitialCluster != "":
		ec.InitialCluster = httpsInitialCluster(cfg.InitialCluster)
	default:
		ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	}
	ec.MaxTxnOps = store.MaxOpsPerTxn
	ec.MaxRequestBytes = etcdMaxRequestBytes
	ec.QuotaBackendBytes = 8 << 30
	ec.AutoCompactionMode = "periodic"
	ec.AutoCompactionRetention = "5m"
	// A single member elects itself at once; keep raft ticks short so that
	// the member is ready in well under a second.
	ec.TickMs = 50
	ec.ElectionMs = 500

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, nil, fmt.Errorf("start embedded etcd in %s: %w", ec.Dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, nil, fmt.Errorf("embedded etcd: %w", err)
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		e.Close()
		return nil, nil, fmt.Errorf("embedded etcd in %s did not become ready within 60s", ec.Dir)
	case <-ctx.Done():
		e.Close()
		return nil, nil, ctx.Err()
	}
	cli := v3client.New(e.Server)
	return e, cli, nil
}
