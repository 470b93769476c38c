package controller

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/events"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/etcdtest"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestAutoscalerWritesThroughTheFence: the autoscaler, a leader-only loop,
// scales while its member leads and writes nothing once deposed.
func TestAutoscalerWritesThroughTheFence(t *testing.T) {
	ctx := context.Background()
	cli := etcdtest.Start(t)
	st := store.New(cli)
	fn := func(name string) *v1.Workload {
		return &v1.Workload{Name: name, Generation: 1, Spec: &v1.WorkloadSpec{
			Http: &v1.HttpTrigger{Route: "/" + name}, Autoscale: &v1.Autoscale{MinReplicas: 2, MaxReplicas: 4},
		}}
	}
	if _, err := st.Workloads.Create(ctx, "a", fn("a")); err != nil {
		t.Fatal(err)
	}

	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	el := concurrency.NewElection(sess, store.ElectionPrefix)
	if err := el.Campaign(ctx, "me"); err != nil {
		t.Fatal(err)
	}
	as := &autoscaler{st: st, cache: startCache(t, cli), kv: store.Fenced(cli, el), log: slog.New(slog.DiscardHandler), events: events.New(cli, "fence"), now: time.Now}
	replicas := func(name string) int32 {
		t.Helper()
		wl, err := st.Workloads.Get(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return wl.Value.GetSpec().GetReplicas()
	}
	if err := as.cache.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := as.pass(ctx); err != nil {
		t.Fatal(err)
	}
	if got := replicas("a"); got != 2 {
		t.Fatalf("while leading: replicas %d, want the minimum 2", got)
	}

	if _, err := cli.Revoke(ctx, sess.Lease()); err != nil {
		t.Fatal(err)
	}
	other, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := concurrency.NewElection(other, store.ElectionPrefix).Campaign(ctx, "other"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Workloads.Create(ctx, "b", fn("b")); err != nil {
		t.Fatal(err)
	}
	if err := as.cache.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := as.pass(ctx); err != nil {
		t.Fatal(err)
	}
	if got := replicas("b"); got != 0 {
		t.Fatalf("a deposed leader's autoscaler scaled b to %d", got)
	}
}

// startCache starts a member cache over cli until the test ends.
func startCache(t *testing.T, cli *clientv3.Client) *cache.Cache {
	t.Helper()
	c := cache.New(cache.Config{Client: cli})
	etcdtest.Run(t, c.Start)
	return c
}
