package ctrrt_test

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// BenchmarkContainerStart compares one container's life (create, start,
// wait for its exit, delete task, container and snapshot) through ctrrt
// with the same steps on the raw containerd client, in the same run: the
// target is ctrrt ≤ 1.25× raw (TARGETS.md). The program exits at once, so
// what is measured is the orchestration, not the workload.
func BenchmarkContainerStart(b *testing.B) {
	f := newFixture(b)
	ctx := context.Background()
	if err := f.rt.Prepare(ctx, f.artifact, 0); err != nil {
		b.Fatal(err)
	}
	c := f.d.Client(b, f.d.Namespace)
	img, err := c.GetImage(ctx, "wasmorch.local/archive:"+strings.TrimPrefix(f.artifact.Digest, "sha256:"))
	if err != nil {
		b.Fatal(err)
	}

	b.Run("raw-containerd", func(b *testing.B) {
		n := 0
		for b.Loop() {
			n++
			id := fmt.Sprintf("raw-%d", n)
			ctr, err := c.NewContainer(ctx, id, client.WithImage(img), client.WithSnapshotter("overlayfs"),
				client.WithNewSnapshot(id, img),
				client.WithNewSpec(oci.WithImageConfigArgs(img, []string{"exit", "0"}), oci.WithMemoryLimit(128<<20)))
			if err != nil {
				b.Fatal(err)
			}
			task, err := ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, io.Discard, io.Discard)))
			if err != nil {
				b.Fatal(err)
			}
			exit, err := task.Wait(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := task.Start(ctx); err != nil {
				b.Fatal(err)
			}
			if st := <-exit; st.ExitCode() != 0 {
				b.Fatalf("exit %d", st.ExitCode())
			}
			if _, err := task.Delete(ctx); err != nil {
				b.Fatal(err)
			}
			if err := ctr.Delete(ctx, client.WithSnapshotCleanup); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ctrrt", func(b *testing.B) {
		n := 0
		for b.Loop() {
			n++
			inst, err := f.rt.Start(ctx, runtimeapi.InstanceSpec{
				ID: fmt.Sprintf("bench-%d", n), Artifact: f.artifact, Args: []string{"exit", "0"},
				Stdout: io.Discard, Stderr: io.Discard,
			})
			if err != nil {
				b.Fatal(err)
			}
			<-inst.Done()
			if e := inst.Exit(); e.Code != 0 {
				b.Fatalf("exit %+v", e)
			}
		}
	})
}
