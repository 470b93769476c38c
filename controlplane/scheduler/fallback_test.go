package scheduler

import (
	"fmt"
	"strings"
	"testing"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// withFallback gives insts a fallback image; unsupported is why their
// module cannot run as Wasm ("" when it can).
func withFallback(insts []*v1.Instance, unsupported string, containerMem int64) []*v1.Instance {
	for _, inst := range insts {
		inst.Spec.FallbackImage = "team/app:1.0"
		inst.Spec.WasmUnsupported = unsupported
		inst.Spec.FallbackMemoryRequestBytes = containerMem
	}
	return insts
}

func TestScheduleFallback(t *testing.T) {
	const badImport = "import env.nope is not provided by the wasm runtime (WASI preview 1 only)"
	both := func(name string) NodeInfo { return node(name, 1<<30, 100, "wasm", "container") }
	tests := []struct {
		name        string
		nodes       []NodeInfo
		pending     []*v1.Instance
		want        map[string]string // node → runtime of every instance bound there
		wantReason  string            // substring of every container choice's reason
		wantPending string            // substring of every unplaced reason
	}{
		{"runs as wasm where the node offers wasm",
			[]NodeInfo{both("a")}, withFallback(instances("app", 2, 1<<20), "", 128<<20),
			map[string]string{"a": "wasm"}, "", ""},
		{"falls back to the image on a node without wasm",
			[]NodeInfo{node("c", 1<<30, 100, "container")}, withFallback(instances("app", 1, 1<<20), "", 128<<20),
			map[string]string{"c": "container"}, "no wasm runtime", ""},
		{"falls back to the image when the module cannot run as wasm",
			[]NodeInfo{both("a")}, withFallback(instances("app", 1, 1<<20), badImport, 128<<20),
			map[string]string{"a": "container"}, "env.nope", ""},
		{"decides per node, wasm nodes first",
			[]NodeInfo{node("c", 1<<30, 100, "container"), node("w", 1<<30, 100, "wasm")}, withFallback(instances("app", 1, 1<<20), "", 128<<20),
			map[string]string{"w": "wasm"}, "", ""},
		{"uses container nodes once the wasm nodes are full",
			[]NodeInfo{node("c", 1<<30, 100, "container"), node("w", 1<<30, 1, "wasm")}, withFallback(instances("app", 2, 1<<20), "", 128<<20),
			map[string]string{"w": "wasm", "c": "container"}, "no wasm runtime", ""},
		{"an unsupported module never goes to a wasm-only node",
			[]NodeInfo{node("w", 1<<30, 100, "wasm")}, withFallback(instances("app", 1, 1<<20), badImport, 128<<20),
			map[string]string{}, "", "1 no container runtime for the fallback image"},
		{"the container reserves its own memory",
			[]NodeInfo{node("c", 200<<20, 100, "container")}, withFallback(instances("app", 2, 1<<20), "", 128<<20),
			map[string]string{"c": "container"}, "no wasm runtime", "insufficient memory"},
		{"without a fallback a container-only node does not fit",
			[]NodeInfo{node("c", 1<<30, 100, "container")}, instances("app", 1, 1<<20),
			map[string]string{}, "", "no wasm runtime"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			plan := Schedule(Snapshot{Nodes: tc.nodes}, tc.pending)
			got := map[string]string{}
			for id, n := range plan.Bindings {
				c, ok := plan.Runtimes[id]
				if !ok && HasFallback(tc.pending[0].GetSpec()) {
					t.Errorf("instance %s bound to %s without a runtime choice", id, n)
				}
				if !ok {
					c.Runtime = RuntimeWasm
				}
				if prev, seen := got[n]; seen && prev != c.Runtime {
					t.Errorf("node %s runs instances as both %s and %s", n, prev, c.Runtime)
				}
				got[n] = c.Runtime
				switch {
				case c.Runtime == RuntimeContainer && !strings.Contains(c.Reason, tc.wantReason):
					t.Errorf("instance %s runs as a container because %q, want a reason containing %q", id, c.Reason, tc.wantReason)
				case c.Runtime == RuntimeWasm && c.Reason != "":
					t.Errorf("instance %s runs as wasm with reason %q", id, c.Reason)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("runtime per node = %v, want %v", got, tc.want)
			}
			for id, reason := range plan.Unplaced {
				if tc.wantPending == "" || !strings.Contains(reason, tc.wantPending) {
					t.Errorf("instance %s unplaced: %q (want a reason containing %q)", id, reason, tc.wantPending)
				}
			}
			if tc.wantPending != "" && len(plan.Unplaced) == 0 {
				t.Errorf("every instance was placed, want some pending with %q", tc.wantPending)
			}
		})
	}
}

// A placed instance running as its fallback container holds the
// container's memory on its node, not the module's.
func TestPlacedFallbackHoldsContainerMemory(t *testing.T) {
	placed := withFallback(withNode(instances("old", 1, 1<<20), "c"), "", 128<<20)
	placed[0].Runtime = RuntimeContainer
	plan := Schedule(SnapshotOf([]NodeInfo{node("c", 200<<20, 100, "container")}, placed),
		withFallback(instances("app", 1, 1<<20), "", 128<<20))
	if len(plan.Bindings) != 0 || !strings.Contains(plan.Unplaced["app-0"], "insufficient memory") {
		t.Fatalf("bindings %v, unplaced %v: want app-0 pending for memory", plan.Bindings, plan.Unplaced)
	}
}
