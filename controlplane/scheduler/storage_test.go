package scheduler

import (
	"fmt"
	"strings"
	"testing"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// An instance that asks for scratch space is placed only on a node that
// allows that much, whichever runtime runs it.
func TestScratchSpacePlacesOnNodesThatAllowIt(t *testing.T) {
	small, big := node("small", 1<<30, 100), node("big", 1<<30, 100)
	small.Node.MaxScratchBytes, big.Node.MaxScratchBytes = 64<<20, 1<<30
	pending := instances("a", 3, 1<<20)
	for _, inst := range pending {
		inst.Spec.ScratchBytes = 256 << 20
	}
	plan := Schedule(SnapshotOf([]NodeInfo{small, big}, nil), pending)
	for _, inst := range pending {
		if got := plan.Bindings[inst.GetId()]; got != "big" {
			t.Errorf("%s placed on %q, want big (the only node allowing 256Mi of scratch)", inst.GetId(), got)
		}
	}

	plan = Schedule(SnapshotOf([]NodeInfo{small}, nil), pending)
	for _, inst := range pending {
		if why := plan.Unplaced[inst.GetId()]; !strings.Contains(why, "0/1 nodes fit: 1 scratch space over the node's allowance") {
			t.Errorf("%s unplaced because %q", inst.GetId(), why)
		}
	}

	// A fallback running as its container has a tmpfs of the size, within
	// the node's allowance too.
	ctr := node("ctr", 1<<30, 100, "container")
	fallback := &v1.Instance{Id: "f-0", Workload: "f", Spec: &v1.WorkloadSpec{Kind: "wasm", FallbackImage: "team/f:1", ScratchBytes: 256 << 20}}
	plan = Schedule(SnapshotOf([]NodeInfo{ctr}, nil), []*v1.Instance{fallback})
	if why := plan.Unplaced["f-0"]; why != "0/1 nodes fit: 1 scratch space over the node's allowance" {
		t.Errorf("a fallback running as its container on a node without scratch space: %q", why)
	}
	ctr.Node.MaxScratchBytes = 1 << 30
	plan = Schedule(SnapshotOf([]NodeInfo{ctr}, nil), []*v1.Instance{fallback})
	if plan.Bindings["f-0"] != "ctr" {
		t.Errorf("a fallback running as its container was not placed: %v", plan.Unplaced)
	}
}

// volumeInstances are n pending instances of a workload that mounts the
// named volumes.
func volumeInstances(workload string, n int, volumes ...string) []*v1.Instance {
	out := instances(workload, n, 1<<20)
	for _, inst := range out {
		for _, v := range volumes {
			inst.Spec.Volumes = append(inst.Spec.Volumes, &v1.VolumeMount{Name: v, Path: "/" + v})
		}
	}
	return out
}

// A workload's volumes pin its instances to the node they live on; a
// volume that does not exist yet is created where its first instance is
// placed, and the rest of the pass follows it there, other workloads too.
func TestVolumesPinInstancesToTheirNode(t *testing.T) {
	nodes := []NodeInfo{node("a", 1<<30, 100), node("b", 1<<30, 100), node("c", 1<<30, 100)}

	snap := SnapshotOf(nodes, nil)
	snap.Volumes = map[string]string{"data": "b"}
	plan := Schedule(snap, volumeInstances("db", 3, "data"))
	for id, n := range plan.Bindings {
		if n != "b" {
			t.Errorf("%s placed on %s, want b, where its volume lives", id, n)
		}
	}
	if len(plan.Bindings) != 3 || len(plan.NewVolumes) != 0 {
		t.Errorf("bindings %v, new volumes %v", plan.Bindings, plan.NewVolumes)
	}

	pending := append(volumeInstances("web", 3, "fresh"), volumeInstances("batch", 2, "fresh")...)
	plan = Schedule(SnapshotOf(nodes, nil), pending)
	at := plan.NewVolumes["fresh"]
	if at == "" || len(plan.NewVolumes) != 1 {
		t.Fatalf("new volumes %v, want fresh on one node", plan.NewVolumes)
	}
	for id, n := range plan.Bindings {
		if n != at {
			t.Errorf("%s placed on %s, want %s with its new volume", id, n, at)
		}
	}
	if len(plan.Bindings) != 5 {
		t.Errorf("placed %d of 5: %v", len(plan.Bindings), plan.Unplaced)
	}

	full := []NodeInfo{node("a", 1<<30, 100), node("b", 1<<30, 1)}
	snap = SnapshotOf(full, nil)
	snap.Volumes = map[string]string{"data": "b", "logs": "a"}
	plan = Schedule(snap, append(volumeInstances("db", 2, "data"), volumeInstances("both", 1, "data", "logs")...))
	if plan.Bindings["db-0"] != "b" || plan.Unplaced["db-1"] != "volume data lives on node b: instance slots full" {
		t.Errorf("bindings %v, unplaced %v", plan.Bindings, plan.Unplaced)
	}
	if why := plan.Unplaced["both-0"]; why != "volumes data and logs live on different nodes (b and a)" {
		t.Errorf("an instance whose volumes are on two nodes waits because %q", why)
	}

	cordoned := node("b", 1<<30, 100)
	cordoned.Node.Cordoned = true
	snap = SnapshotOf([]NodeInfo{node("a", 1<<30, 100), cordoned}, nil)
	snap.Volumes = map[string]string{"data": "b"}
	plan = Schedule(snap, volumeInstances("db", 1, "data"))
	if why := plan.Unplaced["db-0"]; why != "volume data lives on node b: cordoned" {
		t.Errorf("on a cordoned node: %q", why)
	}
	snap.Volumes = map[string]string{"data": "gone"}
	plan = Schedule(snap, volumeInstances("db", 1, "data"))
	if why := plan.Unplaced["db-0"]; why != "volume data lives on node gone: it is not registered" {
		t.Errorf("on a removed node: %q", why)
	}
}

// An instance that mounts host directories is placed only on nodes that
// allow them all.
func TestHostMountsPlaceOnNodesThatAllowThem(t *testing.T) {
	srv, none := node("srv", 1<<30, 100), node("none", 1<<30, 100)
	srv.Node.AllowedMounts = []string{"/srv", "/tmp"}
	pending := instances("m", 2, 1<<20)
	for _, inst := range pending {
		inst.Spec.Mounts = []*v1.HostMount{{HostPath: "/srv/media", Path: "/media"}, {HostPath: "/tmp", Path: "/t"}}
	}
	plan := Schedule(SnapshotOf([]NodeInfo{srv, none}, nil), pending)
	if plan.Bindings["m-0"] != "srv" || plan.Bindings["m-1"] != "srv" {
		t.Errorf("bindings %v, unplaced %v", plan.Bindings, plan.Unplaced)
	}
	pending[0].Spec.Mounts = append(pending[0].Spec.Mounts, &v1.HostMount{HostPath: "/etc", Path: "/etc"})
	plan = Schedule(SnapshotOf([]NodeInfo{srv, none}, nil), pending[:1])
	if why := plan.Unplaced["m-0"]; why != "0/2 nodes fit: 2 host mount not allowed" {
		t.Errorf("an instance mounting /etc waits because %q", why)
	}
}

// Per-instance volumes: each replica slot has a volume of its own, so
// replicas whose volumes do not exist yet spread like any others, and
// each whose volume exists is pinned to that volume's node alone.
func TestPerInstanceVolumesPinEachReplicaToItsOwnNode(t *testing.T) {
	nodes := []NodeInfo{node("a", 1<<30, 100), node("b", 1<<30, 100), node("c", 1<<30, 100)}
	perInstance := func(n int) []*v1.Instance {
		out := volumeInstances("db", n)
		for i, inst := range out {
			inst.Ordinal = int32(i)
			inst.Spec.Volumes = []*v1.VolumeMount{{Name: "data", Path: "/data", PerInstance: true}}
		}
		return out
	}

	plan := Schedule(SnapshotOf(nodes, nil), perInstance(3))
	if len(plan.NewVolumes) != 3 {
		t.Fatalf("new volumes %v, want data-db-0, -1 and -2", plan.NewVolumes)
	}
	seen := map[string]bool{}
	for i := range 3 {
		id, vol := fmt.Sprintf("db-%d", i), fmt.Sprintf("data-db-%d", i)
		if at := plan.NewVolumes[vol]; at == "" || at != plan.Bindings[id] {
			t.Errorf("%s placed on %q, its new volume %s on %q", id, plan.Bindings[id], vol, at)
		}
		seen[plan.Bindings[id]] = true
	}
	if len(seen) != 3 {
		t.Errorf("three replicas whose volumes are new did not spread over three nodes: %v", plan.Bindings)
	}

	// Existing volumes: each replica goes to its own volume's node, even
	// all to the same one, and a replica whose node is full waits alone.
	snap := SnapshotOf([]NodeInfo{node("a", 1<<30, 100), node("b", 1<<30, 1), node("c", 1<<30, 100)}, nil)
	snap.Volumes = map[string]string{"data-db-0": "c", "data-db-1": "c", "data-db-2": "b"}
	pending := perInstance(4)
	plan = Schedule(snap, pending)
	if plan.Bindings["db-0"] != "c" || plan.Bindings["db-1"] != "c" || plan.Bindings["db-2"] != "b" {
		t.Errorf("bindings %v, want db-0 and db-1 on c, db-2 on b; unplaced %v", plan.Bindings, plan.Unplaced)
	}
	if plan.Bindings["db-3"] == "" || plan.NewVolumes["data-db-3"] != plan.Bindings["db-3"] || len(plan.NewVolumes) != 1 {
		t.Errorf("db-3, whose volume is new: bound %q, new volumes %v", plan.Bindings["db-3"], plan.NewVolumes)
	}
	snap.Volumes["data-db-3"] = "b"
	plan = Schedule(snap, pending[2:])
	if plan.Bindings["db-2"] != "b" || plan.Unplaced["db-3"] != "volume data-db-3 lives on node b: instance slots full" {
		t.Errorf("bindings %v, unplaced %v", plan.Bindings, plan.Unplaced)
	}
}
