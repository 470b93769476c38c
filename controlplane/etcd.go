package controlplane

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"

	"github.com/wasmorch/wasmorch/controlplane/store"
)

// etcdMaxRequestBytes leaves room for one blob chunk plus its key.
const etcdMaxRequestBytes = 2 * 1024 * 1024

// etcdDir is where a member's etcd data lives under its data dir.
func etcdDir(dataDir string) string { return filepath.Join(dataDir, "etcd") }

// hasEtcdData reports whether the data dir already holds an etcd member,
// in which case etcd restarts from it and ignores every bootstrap setting.
func hasEtcdData(dataDir string) bool {
	_, err := os.Stat(filepath.Join(etcdDir(dataDir), "member"))
	return err == nil
}

// startEtcd starts the embedded etcd member and returns it with an
// in-process client (no network hop for the control plane's own calls).
// joined, when set, is the initial cluster a running member returned for
// this one (AddMember): the member then joins an existing cluster.
func startEtcd(ctx context.Context, cfg Config, joined string) (*embed.Etcd, *clientv3.Client, error) {
	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = etcdDir(cfg.DataDir)
	ec.Logger = "zap"
	// etcd reports its own shutdown as errors ("use of closed network
	// connection"); failures that matter reach us through StartEtcd and Err().
	ec.LogLevel = "fatal"
	ec.LogOutputs = []string{"stderr"}
	// wasmorch's clients go through its gRPC API; etcd's listeners stay on
	// loopback and only matter to future peers.
	clientURL, err := url.Parse("http://" + cfg.EtcdClientAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("etcd client address: %w", err)
	}
	peerURL, err := url.Parse("http://" + cfg.EtcdPeerAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("etcd peer address: %w", err)
	}
	ec.ListenClientUrls = []url.URL{*clientURL}
	ec.AdvertiseClientUrls = []url.URL{*clientURL}
	ec.ListenPeerUrls = []url.URL{*peerURL}
	ec.AdvertisePeerUrls = []url.URL{*peerURL}
	ec.InitialClusterToken = "wasmorch"
	switch {
	case joined != "":
		ec.InitialCluster = joined
		ec.ClusterState = embed.ClusterStateFlagExisting
	case cfg.InitialCluster != "":
		ec.InitialCluster = cfg.InitialCluster
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
