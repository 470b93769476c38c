package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/wasmorch/wasmorch/controlplane/blobs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// BenchmarkCloudLocalScaleUpAndDown measures the cloud controller with the
// local provider (issue 20), one `wasmorch server` with a group of min 0,
// max 1, 10 instances per node, and no agents. Each iteration:
//
//   - cold: a 1-replica workload applied while the group has no node; from
//     the apply to the instance Pending (the scheduler found no node), to
//     the new node Ready (the controller asked the provider, which started
//     a `wasmorch agent` process that joined), to the instance Running;
//   - warm, the baseline in the same run: the same deploy of a second
//     workload onto the node that is now running, apply to Running;
//   - idle: both workloads deleted; from the node holding no instance to
//     the node deleted (its process stopped, the node removed), which
//     includes the scale-down delay (1 s here, 5 min by default): the
//     figure past the delay is what the controller and provider add.
//
// State is polled over gRPC every 10 ms.
//
//	go test ./e2e -run '^$' -bench CloudLocal -benchtime 5x
func BenchmarkCloudLocalScaleUpAndDown(b *testing.B) {
	const delay = time.Second
	env := benchEnv(b)
	api, http := loopbackAddr(b, "127.0.0.1"), loopbackAddr(b, "127.0.0.1")
	dataDir := b.TempDir()
	startDaemon(b, "server", env, "server", "--data-dir", dataDir, "--api", api, "--http", http, "--metrics-addr", "127.0.0.1:0", "--name", "cp",
		"--node-group", "name=pool,provider=local,min=0,max=1,instances=10", "--scale-down-delay", delay.String())
	joinTokenWhenUp(b, env, api) // the server answers
	conn, err := grpc.NewClient(api, grpc.WithTransportCredentials(adminCreds(b, dataDir)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	control := v1.NewControlClient(conn)
	ctx := context.Background()
	digest := benchUpload(b, control, filepath.Join(repoRoot, "testdata", "ticker.wasm"))
	nodes := func() []*v1.NodeView {
		l, err := control.ListNodes(ctx, &v1.ListNodesRequest{})
		if err != nil {
			return nil
		}
		return l.GetNodes()
	}
	instance := func(workload string) *v1.InstanceView {
		l, err := control.ListInstances(ctx, &v1.ListInstancesRequest{Workload: workload})
		if err != nil || len(l.GetInstances()) != 1 {
			return nil
		}
		return l.GetInstances()[0]
	}
	apply := func(name string) {
		if _, err := control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: name, Spec: &v1.WorkloadSpec{ModuleDigest: digest, Replicas: 1}}); err != nil {
			b.Fatal(err)
		}
	}
	running := func(name string) bool {
		iv := instance(name)
		return iv != nil && iv.GetState() == v1.InstanceState_INSTANCE_STATE_RUNNING
	}
	var toPending, toReady, toRunning, warm, idleToDeleted []time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		benchWait(b, "no node", func() bool { return len(nodes()) == 0 })
		cold, warmName := fmt.Sprintf("cold-%d", i), fmt.Sprintf("warm-%d", i)
		b.StartTimer()

		t0 := time.Now()
		apply(cold)
		var pendingAt, readyAt time.Duration
		benchWait(b, cold+" Running on a new node", func() bool {
			if pendingAt == 0 {
				if iv := instance(cold); iv != nil && iv.GetInstance().GetPendingReason() != "" {
					pendingAt = time.Since(t0)
				}
			}
			if readyAt == 0 {
				if ns := nodes(); len(ns) == 1 && ns[0].GetReady() {
					readyAt = time.Since(t0)
					inNetns(b, ns[0].GetNode().GetAddress())
				}
			}
			return readyAt != 0 && running(cold)
		})
		toRunning = append(toRunning, time.Since(t0))
		toPending, toReady = append(toPending, pendingAt), append(toReady, readyAt)

		t1 := time.Now()
		apply(warmName)
		benchWait(b, warmName+" Running on the running node", func() bool { return running(warmName) })
		warm = append(warm, time.Since(t1))

		for _, w := range []string{cold, warmName} {
			if _, err := control.DeleteWorkload(ctx, &v1.DeleteWorkloadRequest{Name: w}); err != nil {
				b.Fatal(err)
			}
		}
		benchWait(b, "the node idle", func() bool { ns := nodes(); return len(ns) == 1 && ns[0].GetInstances() == 0 })
		t2 := time.Now()
		benchWait(b, "the node deleted", func() bool { return len(nodes()) == 0 })
		idleToDeleted = append(idleToDeleted, time.Since(t2))
	}
	b.StopTimer()
	ms := func(ds []time.Duration) float64 { return float64(median(ds).Microseconds()) / 1000 }
	b.ReportMetric(ms(toPending), "ms-to-pending")
	b.ReportMetric(ms(toReady), "ms-to-node-ready")
	b.ReportMetric(ms(toRunning), "ms-to-running")
	b.ReportMetric(ms(warm), "ms-warm-to-running")
	b.ReportMetric(ms(toRunning)/ms(warm), "cold/warm")
	b.ReportMetric(ms(idleToDeleted), "ms-idle-to-deleted")
	b.ReportMetric(ms(idleToDeleted)-float64(delay.Milliseconds()), "ms-past-delay")
	b.ReportMetric(0, "ns/op")
}

// inNetns fails the benchmark when a node of the local provider is not
// in a network namespace of its own (its address one of the provider's
// subnet) on a host that allows them: the figures are with namespaces.
func inNetns(b *testing.B, addr string) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || netnsAllowed() != nodeSubnet.Contains(net.ParseIP(host)) {
		b.Fatalf("node address %q: want one of %s where the host allows namespaces (it does: %v), else loopback", addr, nodeSubnet, netnsAllowed())
	}
}

// benchUpload uploads the file at path and returns its digest.
func benchUpload(b *testing.B, control v1.ControlClient, path string) string {
	b.Helper()
	wasm, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	digest := blobs.Digest(wasm)
	up, err := control.UploadBlob(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	if err := up.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Header{Header: &v1.UploadHeader{Digest: digest, Size: int64(len(wasm))}}}); err != nil {
		b.Fatal(err)
	}
	if err := up.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Chunk{Chunk: wasm}}); err != nil && !errors.Is(err, io.EOF) {
		b.Fatal(err)
	}
	if _, err := up.CloseAndRecv(); err != nil {
		b.Fatal(err)
	}
	return digest
}

// BenchmarkCloudLocalDrain measures scale-down that moves instances, with
// the local provider: a group of min 0, max 2, 10 instances per node,
// --scale-down-delay 1s. Each round a's 10 replicas, which mount a named
// volume (so that their node can never be drained), fill one node and b's
// 1 replica gets a second; a scaled to 9 leaves room for b on the first
// node. From the scale: the second node draining (after the delay), b's
// replacement Running on the first node, the second node deleted.
//
//	go test ./e2e -run '^$' -bench CloudLocalDrain -benchtime 5x
func BenchmarkCloudLocalDrain(b *testing.B) {
	const delay = time.Second
	env := benchEnv(b)
	api, http := loopbackAddr(b, "127.0.0.1"), loopbackAddr(b, "127.0.0.1")
	dataDir := b.TempDir()
	startDaemon(b, "server", env, "server", "--data-dir", dataDir, "--api", api, "--http", http, "--metrics-addr", "127.0.0.1:0", "--name", "cp",
		"--node-group", "name=pool,provider=local,min=0,max=2,instances=10", "--scale-down-delay", delay.String())
	joinTokenWhenUp(b, env, api)
	conn, err := grpc.NewClient(api, grpc.WithTransportCredentials(adminCreds(b, dataDir)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	control := v1.NewControlClient(conn)
	ctx := context.Background()
	digest := benchUpload(b, control, filepath.Join(repoRoot, "testdata", "ticker.wasm"))
	nodes := func() []*v1.NodeView {
		l, err := control.ListNodes(ctx, &v1.ListNodesRequest{})
		if err != nil {
			return nil
		}
		return l.GetNodes()
	}
	apply := func(name string, replicas int32, vol string) {
		spec := &v1.WorkloadSpec{ModuleDigest: digest, Replicas: replicas}
		if vol != "" {
			spec.Volumes = []*v1.VolumeMount{{Name: vol, Path: "/data"}}
		}
		if _, err := control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: name, Spec: spec}); err != nil {
			b.Fatal(err)
		}
	}
	var toDraining, toMoved, toDeleted []time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		benchWait(b, "no node", func() bool { return len(nodes()) == 0 })
		apply("a", 10, fmt.Sprintf("v%d", i))
		benchWait(b, "a's 10 Running on one node", func() bool {
			return len(runningOn(ctx, control, "a")) == 1 && runningOn(ctx, control, "a")[nodeOf(nodes(), 10)] == 10
		})
		full := nodeOf(nodes(), 10)
		apply("b", 1, "")
		var second string
		benchWait(b, "b Running on a second node", func() bool {
			for n, c := range runningOn(ctx, control, "b") {
				second = n
				return c == 1 && n != full
			}
			return false
		})
		b.StartTimer()

		t0 := time.Now()
		if _, err := control.ScaleWorkload(ctx, &v1.ScaleRequest{Name: "a", Replicas: 9}); err != nil {
			b.Fatal(err)
		}
		var drainingAt, movedAt time.Duration
		benchWait(b, "node "+second+" deleted", func() bool {
			ns := nodes()
			if drainingAt == 0 && slices.ContainsFunc(ns, func(n *v1.NodeView) bool { return n.GetNode().GetName() == second && n.GetNode().GetDraining() }) {
				drainingAt = time.Since(t0)
			}
			if movedAt == 0 && runningOn(ctx, control, "b")[full] == 1 {
				movedAt = time.Since(t0)
			}
			return len(ns) == 1
		})
		toDeleted = append(toDeleted, time.Since(t0))
		toDraining, toMoved = append(toDraining, drainingAt), append(toMoved, movedAt)

		b.StopTimer()
		for _, w := range []string{"a", "b"} {
			if _, err := control.DeleteWorkload(ctx, &v1.DeleteWorkloadRequest{Name: w}); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
	b.StopTimer()
	ms := func(ds []time.Duration) float64 { return float64(median(ds).Microseconds()) / 1000 }
	b.ReportMetric(ms(toDraining), "ms-to-draining")
	b.ReportMetric(ms(toMoved), "ms-to-moved")
	b.ReportMetric(ms(toDeleted), "ms-to-deleted")
	b.ReportMetric(ms(toDeleted)-float64(delay.Milliseconds()), "ms-past-delay")
	b.ReportMetric(0, "ns/op")
}

// nodeOf is the node holding n instances ("" if none).
func nodeOf(ns []*v1.NodeView, n int32) string {
	for _, nv := range ns {
		if nv.GetInstances() == n {
			return nv.GetNode().GetName()
		}
	}
	return ""
}
