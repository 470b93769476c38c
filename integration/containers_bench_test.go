package integration

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/wasmorch/wasmorch/controlplane/blobs"
	"github.com/wasmorch/wasmorch/ctrrt"
	"github.com/wasmorch/wasmorch/ctrrt/ociarchive"
	"github.com/wasmorch/wasmorch/internal/ctrtest"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
	"github.com/wasmorch/wasmorch/worker/runtimeapi/rtconformance"
)

// containerRuntime connects a container runtime to d for the all-in-one's
// worker, which closes it.
func containerRuntime(tb testing.TB, d *ctrtest.Daemon) runtimeapi.Runtime {
	tb.Helper()
	cfg := ctrrt.DefaultConfig()
	cfg.Socket, cfg.FIFODir = d.Socket, filepath.Join(d.Dir, "fifo")
	rt, err := ctrrt.New(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("ctrrt.New: %v", err)
	}
	return rt
}

// BenchmarkContainerDeployToRunning compares, in the same run and
// interleaved, a container's start through wasmorch (ApplyWorkload of a
// one-replica workload of an uploaded image archive, to the moment the
// worker records its instance Running: control plane, scheduler, session,
// worker, ctrrt) with the raw
// containerd client's create+start of the same image, spec and
// snapshotter. Target (TARGETS.md): wasmorch ≤ 1.25× raw. Tearing each
// container down is not timed.
func BenchmarkContainerDeployToRunning(b *testing.B) {
	d := ctrtest.Start(b)
	archive := ctrtest.ImageArchive(b, rtconformance.BuildProgram(b, "linux", runtime.GOARCH))
	a := start(b, options{containerd: d})
	ctx := context.Background()
	digest := a.uploadArchive(b, archive)
	spec := func() *v1.WorkloadSpec {
		return &v1.WorkloadSpec{Kind: "container", ModuleDigest: digest, Replicas: 1, Args: []string{"sleep"}}
	}
	// The first deploy imports and unpacks the image: not measured.
	a.applyAndWaitReady(b, "warm", spec())
	c := d.Client(b, "wasmorch")
	img, err := c.GetImage(ctx, "wasmorch.local/archive:"+strings.TrimPrefix(digest, "sha256:"))
	if err != nil {
		b.Fatal(err)
	}

	var raw, orch, before, starting []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("raw-%d", i)
		t0 := time.Now()
		ctr, err := c.NewContainer(ctx, id, client.WithImage(img), client.WithSnapshotter("overlayfs"),
			client.WithNewSnapshot(id, img), client.WithRuntime("io.containerd.runc.v2", nil),
			client.WithNewSpec(oci.WithImageConfigArgs(img, []string{"sleep"}), oci.WithMemoryLimit(128<<20)))
		if err != nil {
			b.Fatal(err)
		}
		task, err := ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, io.Discard, io.Discard), cio.WithFIFODir(filepath.Join(d.Dir, "fifo"))))
		if err != nil {
			b.Fatal(err)
		}
		exited, err := task.Wait(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := task.Start(ctx); err != nil {
			b.Fatal(err)
		}
		raw = append(raw, time.Since(t0))
		b.StopTimer()
		if err := task.Kill(ctx, 9); err != nil {
			b.Fatal(err)
		}
		<-exited
		if _, err := task.Delete(ctx); err != nil {
			b.Fatal(err)
		}
		if err := ctr.Delete(ctx, client.WithSnapshotCleanup); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()

		name := fmt.Sprintf("c%d", i)
		t0 = time.Now()
		a.applyAndWaitReady(b, name, spec())
		b.StopTimer()
		// Measured to the moment the worker (in this process, on the same
		// clock) recorded the instance Running, so that the polling's
		// period is not counted; and split there: until the worker began
		// the runtime's Start, and the Start itself.
		st := a.instances(b, name)[0].GetStatus()
		running := time.Unix(0, st.GetUpdatedUnixNano())
		orch = append(orch, running.Sub(t0))
		before = append(before, time.Unix(0, st.GetStartedUnixNano()).Sub(t0))
		starting = append(starting, running.Sub(time.Unix(0, st.GetStartedUnixNano())))
		if _, err := a.control.DeleteWorkload(ctx, &v1.DeleteWorkloadRequest{Name: name}); err != nil {
			b.Fatal(err)
		}
		a.waitFor(b, name+"'s container removed", func() (bool, string) {
			list, err := c.Containers(ctx)
			return err == nil && len(list) == 1, fmt.Sprintf("%d containers (%v)", len(list), err)
		})
		b.StartTimer()
	}
	b.StopTimer()
	rawP50, orchP50 := median(raw), median(orch)
	b.ReportMetric(float64(rawP50.Microseconds())/1000, "raw-p50-ms")
	b.ReportMetric(float64(orchP50.Microseconds())/1000, "wasmorch-p50-ms")
	b.ReportMetric(float64(orchP50)/float64(rawP50), "ratio-p50")
	b.ReportMetric(float64(median(before).Microseconds())/1000, "to-start-p50-ms")
	b.ReportMetric(float64(median(starting).Microseconds())/1000, "start-p50-ms")
	b.ReportMetric(0, "ns/op")
}

// uploadArchive uploads the OCI image archive at path and returns its
// digest.
func (a *allInOne) uploadArchive(tb testing.TB, path string) string {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	digest := blobs.Digest(b)
	stream, err := a.control.UploadBlob(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	if err := stream.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Header{Header: &v1.UploadHeader{Digest: digest, Size: int64(len(b)), MediaType: ociarchive.MediaType}}}); err != nil {
		tb.Fatal(err)
	}
	for off := 0; off < len(b); off += 1 << 20 {
		if err := stream.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Chunk{Chunk: b[off:min(off+1<<20, len(b))]}}); err != nil && !errors.Is(err, io.EOF) {
			tb.Fatal(err)
		}
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		tb.Fatal(err)
	}
	return digest
}

// applyAndWaitReady applies a workload and polls every 20 ms (for at most
// a minute) until one replica is ready: more often, the polling's own load
// on the API and etcd slows the start it waits for.
func (a *allInOne) applyAndWaitReady(tb testing.TB, name string, spec *v1.WorkloadSpec) {
	tb.Helper()
	ctx := context.Background()
	if _, err := a.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: name, Spec: spec}); err != nil {
		tb.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		v, err := a.control.GetWorkload(ctx, &v1.GetWorkloadRequest{Name: name})
		if err != nil {
			tb.Fatal(err)
		}
		if v.GetReady() == 1 {
			return
		}
	}
	tb.Fatalf("%s not ready within a minute: %v", name, a.instances(tb, name))
}

// median sorts v and returns its middle value.
func median[T cmp.Ordered](v []T) T {
	slices.Sort(v)
	return v[len(v)/2]
}

// BenchmarkContainerDensity runs WASMORCH_CONTAINER_DENSITY (default 20)
// containers of a static Go program that sleeps, as one workload, and
// reports the time to all Running and the memory each costs: the resident
// memory of its process and of its containerd shim, and what the
// all-in-one process grew by, per instance. BenchmarkDensity is the Wasm
// side of the comparison.
func BenchmarkContainerDensity(b *testing.B) {
	n := 20
	if s := os.Getenv("WASMORCH_CONTAINER_DENSITY"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	d := ctrtest.Start(b)
	archive := ctrtest.ImageArchive(b, rtconformance.BuildProgram(b, "linux", runtime.GOARCH))
	a := start(b, options{containerd: d})
	digest := a.uploadArchive(b, archive)
	spec := &v1.WorkloadSpec{Kind: "container", ModuleDigest: digest, Replicas: 1, Args: []string{"sleep"}, MemoryBytes: 64 << 20}
	a.applyAndWaitReady(b, "warm", spec)
	baseRSS, _ := settle()
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		spec.Replicas = int32(n)
		t0 := time.Now()
		if _, err := a.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "dense", Spec: spec}); err != nil {
			b.Fatal(err)
		}
		waitReady(b, a, "dense", n, 5*time.Minute)
		b.ReportMetric(time.Since(t0).Seconds(), "s-to-all-running")
	}
	b.StopTimer()
	rss, _ := settle()
	c := d.Client(b, "wasmorch")
	list, err := c.Containers(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var procs, shims int64
	for _, ctr := range list {
		task, err := ctr.Task(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		procs += processRSS(int(task.Pid()))
		shims += processRSS(parentPid(int(task.Pid())))
	}
	b.ReportMetric(float64(n), "instances")
	b.ReportMetric(float64(procs)/float64(len(list))/(1<<20), "MiB-process-RSS/instance")
	b.ReportMetric(float64(shims)/float64(len(list))/(1<<20), "MiB-shim-RSS/instance")
	b.ReportMetric(float64(rss-baseRSS)/float64(n)/1024, "KiB-wasmorch-RSS/instance")
	b.ReportMetric(0, "ns/op")
}

// processRSS is the resident memory of process pid, from /proc.
func processRSS(pid int) int64 {
	return statusField(pid, "VmRSS:") << 10
}

// parentPid is the parent of process pid, from /proc.
func parentPid(pid int) int {
	return int(statusField(pid, "PPid:"))
}

func statusField(pid int, name string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == name {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}
