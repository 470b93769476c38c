package cloud

import (
	"fmt"
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/cloud/provider"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// cacheNode is a Ready node with slots instances of room, used of them
// taken, and labels.
func cacheNode(name string, slots, used int32, labels map[string]string) cache.Node {
	return cache.Node{Alive: true, Used: cache.Usage{Instances: used},
		Value: &v1.Node{Name: name, Runtimes: []string{"wasm"}, Labels: labels, Capacity: &v1.Resources{Instances: slots, MemoryBytes: 1 << 30}}}
}

// on are n Running instances of workload on node, with spec.
func on(node, workload string, n int, spec *v1.WorkloadSpec) []cache.Instance {
	out := make([]cache.Instance, n)
	for i := range out {
		out[i] = cache.Instance{State: v1.InstanceState_INSTANCE_STATE_RUNNING,
			Value: &v1.Instance{Id: fmt.Sprintf("%s-%d", workload, i), Workload: workload, Node: node, Spec: spec}}
	}
	return out
}

// TestMovable: a node is drained only when every instance it runs could
// run on the other nodes as the scheduler would place it now.
func TestMovable(t *testing.T) {
	plain := &v1.WorkloadSpec{Kind: "wasm"}
	for _, tc := range []struct {
		name  string
		nodes []cache.Node
		on    []cache.Instance
		want  string // "" movable, else part of why not
	}{
		{"nothing on it", []cache.Node{cacheNode("a", 10, 0, nil)}, nil, ""},
		{"room on the others", []cache.Node{cacheNode("a", 10, 3, nil), cacheNode("b", 10, 8, nil), cacheNode("c", 10, 9, nil)}, on("a", "w", 3, plain), ""},
		{"no capacity: one short", []cache.Node{cacheNode("a", 10, 4, nil), cacheNode("b", 10, 8, nil), cacheNode("c", 10, 9, nil)}, on("a", "w", 4, plain),
			"instance slots full"},
		{"no other node", []cache.Node{cacheNode("a", 10, 1, nil)}, on("a", "w", 1, plain), "could not run elsewhere"},
		{"a selector only it matches", []cache.Node{cacheNode("a", 10, 1, map[string]string{"disk": "ssd"}), cacheNode("b", 10, 0, nil)},
			on("a", "w", 1, &v1.WorkloadSpec{Kind: "wasm", Placement: &v1.Placement{Selector: map[string]string{"disk": "ssd"}}}), "selector mismatch"},
		{"a selector another node matches", []cache.Node{cacheNode("a", 10, 1, map[string]string{"disk": "ssd"}), cacheNode("b", 10, 0, map[string]string{"disk": "ssd"})},
			on("a", "w", 1, &v1.WorkloadSpec{Kind: "wasm", Placement: &v1.Placement{Selector: map[string]string{"disk": "ssd"}}}), ""},
		{"volume-pinned", []cache.Node{cacheNode("a", 10, 1, nil), cacheNode("b", 10, 0, nil)},
			on("a", "w", 1, &v1.WorkloadSpec{Kind: "wasm", Volumes: []*v1.VolumeMount{{Name: "data", Path: "/data"}}}), "mounts volume data, which lives on this node"},
		{"the other node cordoned", []cache.Node{cacheNode("a", 10, 1, nil), func() cache.Node {
			n := cacheNode("b", 10, 0, nil)
			n.Value.Cordoned = true
			return n
		}()}, on("a", "w", 1, plain), "cordoned"},
		{"the other node not ready", []cache.Node{cacheNode("a", 10, 1, nil), func() cache.Node { n := cacheNode("b", 10, 0, nil); n.Alive = false; return n }()},
			on("a", "w", 1, plain), "not ready"},
		{"a finished run-once instance", []cache.Node{cacheNode("a", 10, 1, nil), cacheNode("b", 10, 0, nil)}, func() []cache.Instance {
			is := on("a", "job", 1, plain)
			is[0].State = v1.InstanceState_INSTANCE_STATE_SUCCEEDED
			return is
		}(), "has finished"},
		{"instances already leaving do not count", []cache.Node{cacheNode("a", 10, 2, nil)}, func() []cache.Instance {
			is := on("a", "w", 2, plain)
			is[0].Value.TerminatingUnixNano, is[1].Value.LostUnixNano = 1, 1
			return is
		}(), ""},
	} {
		ok, why := movable("a", tc.nodes, tc.on)
		if ok != (tc.want == "") || !strings.Contains(why, tc.want) {
			t.Errorf("%s: movable = %v, %q; want %q", tc.name, ok, why, tc.want)
		}
	}
}

// TestShuttingDown: a node the provider lists as Deleting though the
// controller did not delete it is drained once, while it is Ready.
func TestShuttingDown(t *testing.T) {
	listed := []provider.Node{{Name: "a", State: provider.Running}, {Name: "b", State: provider.Deleting}, {Name: "c", State: provider.Deleting},
		{Name: "d", State: provider.Deleting}, {Name: "e", State: provider.Deleting}, {Name: "f", State: provider.Deleting}}
	nodes := []groupNode{{name: "a", alive: true}, {name: "b", alive: true}, {name: "c", alive: true}, {name: "d", alive: true, draining: true}, {name: "e"}}
	got := shuttingDown(listed, nodes, map[string]bool{"c": true})
	if fmt.Sprint(got) != "[b]" {
		t.Errorf("shuttingDown = %v, want [b] (c the controller deletes, d draining, e not Ready, f not joined)", got)
	}
}
