package controller

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/events"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/etcdtest"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestBigSpecsAreWrittenInTransactionsThatFit: a workload whose spec is
// 230 KB (stored before the API refused such specs) and its 10 replicas
// are more than one etcd request may carry. The controller writes its
// instances in transactions under the limit, and a small workload
// reconciled in the same rounds is created and placed too: one workload's
// size never stops the others.
func TestBigSpecsAreWrittenInTransactionsThatFit(t *testing.T) {
	cli := etcdtest.Start(t)
	st := store.New(cli)
	ctx := context.Background()
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	etcdtest.Put(t, cli, store.NodesPrefix+"n1", &v1.Node{Name: "n1", Runtimes: []string{"wasm"},
		Capacity: &v1.Resources{MemoryBytes: 64 << 30, CpuMillis: 64000, Instances: 100}})
	if _, err := cli.Put(ctx, store.AlivePrefix+"n1", "", clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	big := &v1.WorkloadSpec{ModuleDigest: "sha256:" + strings.Repeat("0", 64), Replicas: 10}
	for i := range 10000 {
		big.Env = append(big.Env, &v1.EnvVar{Name: fmt.Sprintf("VAR_%05d", i), Value: "some value"})
	}
	etcdtest.Put(t, cli, store.WorkloadsPrefix+"big", &v1.Workload{Name: "big", Generation: 1, PromotedGeneration: 1, Spec: big})
	etcdtest.Put(t, cli, store.WorkloadsPrefix+"small", &v1.Workload{Name: "small", Generation: 1, PromotedGeneration: 1,
		Spec: &v1.WorkloadSpec{ModuleDigest: "sha256:" + strings.Repeat("1", 64), Replicas: 3}})

	c := cache.New(cache.Config{Client: cli})
	etcdtest.Run(t, c.Start)
	etcdtest.Run(t, func(ctx context.Context) error {
		return Run(ctx, Config{Store: st, Cache: c, KV: cli, Events: events.New(cli, "test"),
			Metrics: NewMetrics(prometheus.NewRegistry()), Resync: time.Hour})
	})
	bound := func(workload string) int {
		n := 0
		for _, e := range c.InstancesOf(workload) {
			if e.Value.GetNode() != "" {
				n++
			}
		}
		return n
	}
	for deadline := time.Now().Add(60 * time.Second); bound("big") != 10 || bound("small") != 3; {
		if time.Now().After(deadline) {
			t.Fatalf("after a minute: %d of big's 10 and %d of small's 3 instances placed", bound("big"), bound("small"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
