package scheduler

import (
	"fmt"
	"strings"
	"testing"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

func node(name string, mem int64, slots int32, runtimes ...string) NodeInfo {
	if len(runtimes) == 0 {
		runtimes = []string{"wasm"}
	}
	return NodeInfo{Ready: true, Node: &v1.Node{Name: name, Runtimes: runtimes, Capacity: &v1.Resources{MemoryBytes: mem, Instances: slots}}}
}

func instances(workload string, n int, memReq int64) []*v1.Instance {
	out := make([]*v1.Instance, n)
	for i := range out {
		out[i] = &v1.Instance{Id: fmt.Sprintf("%s-%d", workload, i), Workload: workload, Spec: &v1.WorkloadSpec{Kind: "wasm", MemoryRequestBytes: memReq}}
	}
	return out
}

func TestSchedule(t *testing.T) {
	notReady := node("down", 1<<30, 100)
	notReady.Ready = false
	cordoned := node("cordoned", 1<<30, 100)
	cordoned.Node.Cordoned = true
	tests := []struct {
		name       string
		nodes      []NodeInfo
		placed     []*v1.Instance
		pending    []*v1.Instance
		wantPerNod map[string]int
		wantReason string // substring of every unplaced reason
	}{
		{"replicas spread across nodes", []NodeInfo{node("a", 1<<30, 100), node("b", 1<<30, 100), node("c", 1<<30, 100)}, nil,
			instances("web", 6, 1<<20), map[string]int{"a": 2, "b": 2, "c": 2}, ""},
		{"not ready and cordoned nodes are skipped", []NodeInfo{notReady, cordoned, node("ok", 1<<30, 100)}, nil,
			instances("web", 2, 1<<20), map[string]int{"ok": 2}, ""},
		{"instance slots are a hard limit", []NodeInfo{node("a", 1<<30, 2)}, nil,
			instances("web", 3, 1<<20), map[string]int{"a": 2}, "instance slots full"},
		{"memory is a hard limit", []NodeInfo{node("a", 10<<20, 100)}, nil,
			instances("web", 3, 4<<20), map[string]int{"a": 2}, "insufficient memory"},
		{"already placed instances use capacity", []NodeInfo{node("a", 1<<30, 2), node("b", 1<<30, 2)}, withNode(instances("old", 2, 1<<20), "a"),
			instances("web", 2, 1<<20), map[string]int{"b": 2}, ""},
		{"needs the workload's runtime", []NodeInfo{node("a", 1<<30, 100, "container")}, nil,
			instances("web", 1, 1<<20), map[string]int{}, "no wasm runtime"},
		{"no nodes at all", nil, nil, instances("web", 1, 1<<20), map[string]int{}, "no nodes are registered"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			plan := Schedule(Snapshot{Nodes: tc.nodes, Placed: tc.placed}, tc.pending)
			got := map[string]int{}
			for _, n := range plan.Bindings {
				got[n]++
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.wantPerNod) {
				t.Errorf("placements per node = %v, want %v", got, tc.wantPerNod)
			}
			if len(plan.Bindings)+len(plan.Unplaced) != len(tc.pending) {
				t.Errorf("%d bound + %d unplaced != %d pending", len(plan.Bindings), len(plan.Unplaced), len(tc.pending))
			}
			for id, reason := range plan.Unplaced {
				if tc.wantReason == "" || !strings.Contains(reason, tc.wantReason) {
					t.Errorf("instance %s unplaced: %q (want reason containing %q)", id, reason, tc.wantReason)
				}
			}
		})
	}
}

func withNode(insts []*v1.Instance, n string) []*v1.Instance {
	for _, i := range insts {
		i.Node = n
	}
	return insts
}

// BenchmarkSchedule1000Nodes places instances on 1,000 simulated nodes and
// reports placements per second (target in TARGETS.md: ≥ 10,000/s).
func BenchmarkSchedule1000Nodes(b *testing.B) {
	nodes := make([]NodeInfo, 1000)
	for i := range nodes {
		nodes[i] = node(fmt.Sprintf("n%04d", i), 16<<30, 1000)
	}
	pending := instances("web", 1000, 1<<20)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		Schedule(Snapshot{Nodes: nodes}, pending)
	}
	b.ReportMetric(float64(b.N*len(pending))/b.Elapsed().Seconds(), "placements/s")
}
