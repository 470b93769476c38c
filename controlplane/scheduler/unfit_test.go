package scheduler

import (
	"strings"
	"testing"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// A node where a workload's generation could not run at all takes none of
// that generation again, whatever room it has; another generation of the
// workload, or another workload, is placed there as before.
func TestUnfitNodesAreAvoidedForTheirGeneration(t *testing.T) {
	nodes := []NodeInfo{node("big", 64<<30, 1000), node("small", 1<<30, 1000)}
	gen := func(insts []*v1.Instance, g int64) []*v1.Instance {
		for _, in := range insts {
			in.Generation = g
		}
		return insts
	}
	avoid := map[string]*Avoid{"app": {Generation: 2, Nodes: map[string]string{"big": "ModuleTooLarge"}}}

	snap := SnapshotOf(nodes, nil)
	snap.Avoid = avoid
	plan := Schedule(snap, gen(instances("app", 4, 64<<20), 2))
	for id, n := range plan.Bindings {
		if n != "small" {
			t.Errorf("%s placed on %s, which could not run its generation", id, n)
		}
	}
	if len(plan.Bindings) != 4 {
		t.Fatalf("placed %d of 4: %v", len(plan.Bindings), plan.Unplaced)
	}

	// Without the record the least allocated node, big, would take them:
	// the avoidance is what sent them to small.
	plan = Schedule(SnapshotOf(nodes, nil), gen(instances("app", 1, 64<<20), 2))
	if plan.Bindings["app-0"] != "big" {
		t.Fatalf("without a record app-0 went to %q, want big (the test's premise)", plan.Bindings["app-0"])
	}

	// Another generation, and another workload, are not held to it.
	snap = SnapshotOf(nodes, nil)
	snap.Avoid = avoid
	plan = Schedule(snap, append(gen(instances("app", 1, 64<<20), 3), gen(instances("web", 1, 64<<20), 2)...))
	if plan.Bindings["app-0"] != "big" || plan.Bindings["web-0"] != "big" {
		t.Fatalf("bindings %v: generation 3 of app and web should go to big", plan.Bindings)
	}
}

// When every node that could take the generation has failed to run it,
// its instances wait, saying so.
func TestAllNodesUnfitSaysWhy(t *testing.T) {
	nodes := []NodeInfo{node("a", 1<<30, 100), node("b", 1<<30, 100), node("c", 1<<30, 100)}
	snap := SnapshotOf(nodes, nil)
	snap.Avoid = map[string]*Avoid{"app": {Generation: 1, Nodes: map[string]string{"a": "ModuleTooLarge", "b": "ModuleTooLarge", "c": "WrongArchitecture"}}}
	pending := instances("app", 2, 64<<20)
	for _, in := range pending {
		in.Generation = 1
	}
	plan := Schedule(snap, pending)
	if len(plan.Bindings) != 0 {
		t.Fatalf("placed %v on nodes that cannot run it", plan.Bindings)
	}
	want := "0/3 nodes fit: 2 could not run this revision before (ModuleTooLarge), 1 could not run this revision before (WrongArchitecture)"
	for id, why := range plan.Unplaced {
		if why != want {
			t.Errorf("%s pending because %q, want %q", id, why, want)
		}
	}
}

// edge: a node whose wasm runtime failed a workload's module (InvalidModule,
// ImportError: WasmOnly) still takes the workload's fallback container, as
// a node without the wasm runtime does; a node unfit for another cause,
// or one without the container runtime, takes none.
func TestWasmUnfitNodeTakesTheFallbackContainer(t *testing.T) {
	both := func(name string) NodeInfo { return node(name, 1<<30, 100, "wasm", "container") }
	pending := func(n int) []*v1.Instance {
		insts := withFallback(instances("app", n, 1<<20), "", 128<<20)
		for _, in := range insts {
			in.Generation = 4
		}
		return insts
	}
	avoid := func(wasmOnly bool, nodes ...string) map[string]*Avoid {
		a := &Avoid{Generation: 4, Nodes: map[string]string{}, WasmOnly: map[string]bool{}}
		for _, n := range nodes {
			a.Nodes[n] = "InvalidModule"
			a.WasmOnly[n] = wasmOnly
		}
		return map[string]*Avoid{"app": a}
	}

	snap := SnapshotOf([]NodeInfo{both("edge")}, nil)
	snap.Avoid = avoid(true, "edge")
	plan := Schedule(snap, pending(2))
	if len(plan.Bindings) != 2 {
		t.Fatalf("placed %d of 2: %v", len(plan.Bindings), plan.Unplaced)
	}
	for id := range plan.Bindings {
		c := plan.Runtimes[id]
		if c.Runtime != RuntimeContainer || !strings.Contains(c.Reason, "its wasm runtime could not run this revision before (InvalidModule)") {
			t.Errorf("%s runs as %+v on the node whose wasm runtime failed it, want its container saying why", id, c)
		}
	}

	// Between that node and one whose wasm runtime is fine, the module runs
	// as Wasm on the other.
	snap = SnapshotOf([]NodeInfo{both("edge"), node("ok", 1<<30, 100, "wasm")}, nil)
	snap.Avoid = avoid(true, "edge")
	plan = Schedule(snap, pending(1))
	if plan.Bindings["app-0"] != "ok" || plan.Runtimes["app-0"].Runtime != RuntimeWasm {
		t.Errorf("bound to %q as %+v, want ok as wasm", plan.Bindings["app-0"], plan.Runtimes["app-0"])
	}

	// Not the wasm runtime's failure (a record without WasmOnly): avoided.
	snap = SnapshotOf([]NodeInfo{both("edge")}, nil)
	snap.Avoid = avoid(false, "edge")
	if plan = Schedule(snap, pending(1)); len(plan.Bindings) != 0 || !strings.Contains(plan.Unplaced["app-0"], "could not run this revision before (InvalidModule)") {
		t.Errorf("bindings %v, unplaced %v: want none, saying the node could not run it", plan.Bindings, plan.Unplaced)
	}

	// No container runtime there: nothing to fall back to.
	snap = SnapshotOf([]NodeInfo{node("w", 1<<30, 100, "wasm")}, nil)
	snap.Avoid = avoid(true, "w")
	if plan = Schedule(snap, pending(1)); len(plan.Bindings) != 0 || !strings.Contains(plan.Unplaced["app-0"], "its wasm runtime could not run this revision before (InvalidModule) and no container runtime") {
		t.Errorf("bindings %v, unplaced %v: want none, saying why", plan.Bindings, plan.Unplaced)
	}

	// A workload without a fallback is avoided there as before.
	plain := instances("app", 1, 1<<20)
	plain[0].Generation = 4
	snap = SnapshotOf([]NodeInfo{both("edge")}, nil)
	snap.Avoid = avoid(true, "edge")
	if plan = Schedule(snap, plain); len(plan.Bindings) != 0 {
		t.Errorf("a workload without a fallback was placed on the node that failed it: %v", plan.Bindings)
	}
}
