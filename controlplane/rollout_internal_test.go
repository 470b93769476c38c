package controlplane

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestRollbackRemovesTheFailedRevisionFirst: rolling back to revision 1
// (as generation 3) after a canary of generation 2, the canary's instance
// goes before any of generation 1's, which run the spec rolled out again.
func TestRollbackRemovesTheFailedRevisionFirst(t *testing.T) {
	specOf := func(v string) *v1.WorkloadSpec {
		return &v1.WorkloadSpec{Replicas: 4, Http: &v1.HttpTrigger{Route: "/shop"}, Env: []*v1.EnvVar{{Name: "V", Value: v}}}
	}
	w := &world{statuses: map[string]*v1.InstanceStatus{}, alive: map[string]bool{"n1": true}}
	var old []store.Versioned[*v1.Instance]
	add := func(id string, gen int64, spec *v1.WorkloadSpec, created int64) {
		old = append(old, store.Versioned[*v1.Instance]{Name: id, Value: &v1.Instance{Id: id, Generation: gen, Node: "n1", Spec: spec, CreatedUnixNano: created}})
		w.statuses[id] = &v1.InstanceStatus{Id: id, Node: "n1", State: v1.InstanceState_INSTANCE_STATE_RUNNING}
	}
	for i := range 4 {
		add(fmt.Sprintf("shop-v1-%d", i), 1, specOf("1"), int64(i))
	}
	canarySpec := specOf("2")
	canarySpec.Canary = "25%"
	add("shop-canary", 2, canarySpec, 10)

	rollback := specOf("1")
	rollback.Replicas = 4
	remove, create := rollingStep(4, 1, 1, 0, 0, old, rollback, w)
	if len(remove) != 2 || remove[0].Name != "shop-canary" || remove[1].Value.GetGeneration() != 1 || create != 2 {
		var names []string
		for _, r := range remove {
			names = append(names, r.Name)
		}
		t.Fatalf("rollingStep removes %v and creates %d; want shop-canary first, then one of generation 1, and 2 created", names, create)
	}
}

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
