package controlplane_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/wasmorch/wasmorch/controlplane/blobs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// fakeNodes registers n nodes over the real Agent API (labels zone=z0..z9)
// and keeps their leases alive with heartbeats until the benchmark ends.
// They never open a session: the scheduler binds to them, nothing runs.
func fakeNodes(b *testing.B, c *cluster, n int) {
	ctx, cancel := context.WithCancel(context.Background())
	var g errgroup.Group
	g.SetLimit(32)
	for i := range n {
		g.Go(func() error {
			_, err := c.agent.Register(ctx, &v1.RegisterRequest{Node: &v1.Node{
				Name: fmt.Sprintf("fake-%04d", i), Arch: "amd64", Os: "linux", Runtimes: []string{"wasm"},
				Labels:   map[string]string{"zone": fmt.Sprintf("z%d", i%10)},
				Capacity: &v1.Resources{MemoryBytes: 64 << 30, CpuMillis: 64000, Instances: 1000},
			}})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		cancel()
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(400 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			var hb errgroup.Group
			hb.SetLimit(32)
			for i := range n {
				hb.Go(func() error {
					_, _ = c.agent.Heartbeat(ctx, &v1.HeartbeatRequest{Node: fmt.Sprintf("fake-%04d", i)})
					return nil
				})
			}
			_ = hb.Wait()
		}
	}()
	b.Cleanup(func() { cancel(); wg.Wait() })
}

// boundInstances is how many instances are bound to a node (ListNodes
// counts them per node, a page of nodes at a time; its answer stays small
// with many instances).
func boundInstances(ctx context.Context, b *testing.B, c *cluster) int {
	bound := 0
	req := &v1.ListNodesRequest{}
	for {
		l, err := c.control.ListNodes(ctx, req)
		if err != nil {
			b.Fatal(err)
		}
		for _, nv := range l.GetNodes() {
			bound += int(nv.GetInstances())
		}
		if l.GetContinue() == "" {
			return bound
		}
		req.Continue = l.GetContinue()
	}
}

// benchmarkScheduling applies 10 workloads of 1,000 replicas against 1,000
// fake nodes over the real API and etcd, and reports placements per second
// from the first apply to the last binding stored (targets in TARGETS.md:
// ≥ 10,000/s; ≥ 1,000/s with spread across a label).
func benchmarkScheduling(b *testing.B, placement *v1.Placement) {
	c := startClusterB(b)
	fakeNodes(b, c, 1000)
	ctx := context.Background()
	hello := readModuleB(b, "hello.wasm")
	digest := blobs.Digest(hello)
	if err := uploadB(ctx, c.control, hello, digest); err != nil {
		b.Fatal(err)
	}
	const workloads, replicas = 10, 1000
	var elapsed time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		for w := range workloads {
			if _, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: fmt.Sprintf("s%d-%d", i, w), Spec: &v1.WorkloadSpec{
				ModuleDigest: digest, Replicas: replicas, Placement: placement,
			}}); err != nil {
				b.Fatal(err)
			}
		}
		for polls := 0; ; polls++ {
			if boundInstances(ctx, b, c) == workloads*replicas {
				break
			}
			if polls > 1200 {
				b.Fatalf("instances not all bound after %d polls", polls)
			}
			time.Sleep(50 * time.Millisecond)
		}
		elapsed += time.Since(t0)
		b.StopTimer()
		for w := range workloads {
			if _, err := c.control.DeleteWorkload(ctx, &v1.DeleteWorkloadRequest{Name: fmt.Sprintf("s%d-%d", i, w)}); err != nil {
				b.Fatal(err)
			}
		}
		for polls := 0; ; polls++ {
			if boundInstances(ctx, b, c) == 0 {
				break
			}
			if polls > 1200 {
				b.Fatal("instances not deleted")
			}
			time.Sleep(50 * time.Millisecond)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.N*workloads*replicas)/elapsed.Seconds(), "placements/s")
}

// BenchmarkSchedulingThroughput1000Nodes: 10,000 placements per iteration
// onto 1,000 fake nodes, least-allocated with spread across nodes.
func BenchmarkSchedulingThroughput1000Nodes(b *testing.B) { benchmarkScheduling(b, nil) }

// BenchmarkSchedulingThroughput1000NodesSpread: the same, every workload
// spread across a zone label of 10 values.
func BenchmarkSchedulingThroughput1000NodesSpread(b *testing.B) {
	benchmarkScheduling(b, &v1.Placement{Spread: "zone"})
}
