package api

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestDerivedApplyRefusesAWorkloadThatChanged: a rollback or restart,
// whose spec is derived from the workload as read, writes nothing when the
// workload changed in between (Conflict), so that a deploy in between is
// not undone; derived from the workload as it is, it is written.
func TestDerivedApplyRefusesAWorkloadThatChanged(t *testing.T) {
	g := newGCServer(t, 10)
	ctx := context.Background()
	digest := g.upload(t, testModules(t, "hello.wasm")[0])
	apply := func(v string) {
		t.Helper()
		spec := &v1.WorkloadSpec{ModuleDigest: digest, Replicas: 1, Env: []*v1.EnvVar{{Name: "V", Value: v}}}
		if _, err := g.api.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "app", Spec: spec}); err != nil {
			t.Fatal(err)
		}
	}
	apply("1")
	read, err := g.s.store.Workloads.Get(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	apply("2") // a deploy between the read and the write
	restart := func(from store.Versioned[*v1.Workload]) error {
		spec := proto.Clone(from.Value.GetSpec()).(*v1.WorkloadSpec)
		spec.RestartedUnixNano = time.Now().UnixNano()
		_, err := g.api.applyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "app", Spec: spec, ChangeCause: "rollout restart"}, true, from.ModRevision)
		return err
	}
	if err := restart(read); !errdefs.IsConflict(err) {
		t.Fatalf("a restart derived from generation 1 after generation 2 was written: %v, want a conflict", err)
	}
	now, err := g.s.store.Workloads.Get(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	if now.Value.GetGeneration() != 2 || now.Value.GetSpec().GetEnv()[0].GetValue() != "2" {
		t.Fatalf("after the refused restart: generation %d, %v; want generation 2 with V=2", now.Value.GetGeneration(), now.Value.GetSpec().GetEnv())
	}
	if err := restart(now); err != nil {
		t.Fatalf("a restart derived from the current workload: %v", err)
	}
	if after, err := g.s.store.Workloads.Get(ctx, "app"); err != nil || after.Value.GetGeneration() != 3 || after.Value.GetSpec().GetEnv()[0].GetValue() != "2" {
		t.Fatalf("after the restart: %v, %v; want generation 3 with V=2", after.Value, err)
	}
}
