package controlplane

import (
	"context"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/wasmorch/wasmorch/controlplane/cache"
)

// startTestEtcd starts a member's etcd alone, with the credentials its
// peer listener needs.
func startTestEtcd(ctx context.Context, cfg Config) (*embed.Etcd, *clientv3.Client, error) {
	if _, err := newSecurity(cfg, "127.0.0.1:0"); err != nil {
		return nil, nil, err
	}
	return startEtcd(ctx, cfg, "")
}

// startTestCache starts a member cache over cli until the test ends.
func startTestCache(t *testing.T, cli *clientv3.Client) *cache.Cache {
	t.Helper()
	c := cache.New(cache.Config{Client: cli})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}
