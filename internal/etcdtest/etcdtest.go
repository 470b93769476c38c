// Package etcdtest is the test harness the control plane's packages share
// for a real embedded etcd (no fake): a member's etcd on a temporary data
// dir with an in-process client, a member cache over it, and helpers that
// write records as the API, the controllers and the workers write them.
// (It does not import the cache, so that the cache's own tests use it too.)
package etcdtest

import (
	"context"
	"net/url"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"google.golang.org/protobuf/proto"
)

// Start starts a one-member etcd with no client listener (tests use the
// in-process client) and its peer listener on a free loopback port, and
// stops it when the test ends.
func Start(tb testing.TB) *clientv3.Client {
	tb.Helper()
	cfg := embed.NewConfig()
	cfg.Dir = tb.TempDir()
	cfg.LogLevel = "fatal"
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{}, []url.URL{}
	peer, _ := url.Parse("http://127.0.0.1:0")
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.TickMs, cfg.ElectionMs = 10, 100
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		tb.Fatal("etcd did not start within 30s")
	}
	cli := v3client.New(e.Server)
	tb.Cleanup(func() { _ = cli.Close(); e.Close() })
	return cli
}

// Run runs start (a component's Start) until the test ends: its context
// is cancelled then, and Run's cleanup waits for it to return.
func Run(tb testing.TB, start func(context.Context) error) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = start(ctx) }()
	tb.Cleanup(func() { cancel(); <-done })
}

// Put writes a record as protobuf and returns the revision of the write.
func Put(tb testing.TB, cli *clientv3.Client, key string, m proto.Message, opts ...clientv3.OpOption) int64 {
	tb.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	resp, err := cli.Put(context.Background(), key, string(b), opts...)
	if err != nil {
		tb.Fatal(err)
	}
	return resp.Header.Revision
}
