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

// instances are n pending instances of a workload whose memory limit
// (--memory) is mem.
func instances(workload string, n int, mem int64) []*v1.Instance {
	out := make([]*v1.Instance, n)
	for i := range out {
		out[i] = &v1.Instance{Id: fmt.Sprintf("%s-%d", workload, i), Workload: workload, Spec: &v1.WorkloadSpec{Kind: "wasm", MemoryBytes: mem}}
	}
	return out
}

// An instance reserves its memory limit on its node, not its module's
// initial memory: a Wasm memory grows to its limit whenever the guest
// wants, so a node takes only as many instances as it can hold at their
// limits. Without a limit, an instance reserves the default one.
func TestInstancesReserveTheirMemoryLimit(t *testing.T) {
	tests := []struct {
		name    string
		spec    *v1.WorkloadSpec
		want    int
		reserve int64
	}{
		{"a 64 MiB limit on a 64 KiB module", &v1.WorkloadSpec{Kind: "wasm", MemoryBytes: 64 << 20, MemoryRequestBytes: 64 << 10}, 16, 64 << 20},
		{"no limit: the default 128 MiB", &v1.WorkloadSpec{Kind: "wasm", MemoryRequestBytes: 64 << 10}, 8, 128 << 20},
		{"initial memory over the limit", &v1.WorkloadSpec{Kind: "wasm", MemoryBytes: 1 << 20, MemoryRequestBytes: 256 << 20}, 4, 256 << 20},
		{"a container", &v1.WorkloadSpec{Kind: "container", Image: "team/app:1", MemoryBytes: 256 << 20, MemoryRequestBytes: 256 << 20}, 4, 256 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pending := make([]*v1.Instance, 50)
			for i := range pending {
				pending[i] = &v1.Instance{Id: fmt.Sprintf("a-%d", i), Workload: "a", Spec: tc.spec}
			}
			plan := Schedule(SnapshotOf([]NodeInfo{node("n", 1<<30, 1000, "wasm", "container")}, nil), pending)
			if len(plan.Bindings) != tc.want {
				t.Errorf("placed %d on a 1 GiB node, want %d", len(plan.Bindings), tc.want)
			}
			for id, why := range plan.Unplaced {
				if !strings.Contains(why, "1 insufficient memory") {
					t.Errorf("%s pending because %q, want insufficient memory", id, why)
				}
			}
			placed := withNode(pending[:1], "n")
			snap := SnapshotOf([]NodeInfo{node("n", 1<<30, 1000, "wasm", "container")}, placed)
			if got := snap.Nodes[0].Used.MemoryBytes; got != tc.reserve {
				t.Errorf("a placed instance uses %d bytes of its node, want %d", got, tc.reserve)
			}
		})
	}
}

func TestSchedule(t *testing.T) {
	notReady := node("down", 1<<30, 100)
	notReady.Ready = false
	cordoned := node("cordoned", 1<<30, 100)
	cordoned.Node.Cordoned = true
	diskFull := node("disk-full", 1<<30, 100)
	diskFull.Node.Conditions = []*v1.NodeCondition{{Type: v1.NodeConditionType_NODE_CONDITION_TYPE_DISK_PRESSURE}}
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
		{"a node under disk pressure takes nothing new", []NodeInfo{diskFull, node("ok", 1<<30, 100)}, nil,
			instances("web", 2, 1<<20), map[string]int{"ok": 2}, ""},
		{"disk pressure is the reason when it is the only one", []NodeInfo{diskFull}, nil,
			instances("web", 1, 1<<20), map[string]int{}, "0/1 nodes fit: 1 disk pressure"},
		{"instance slots are a hard limit", []NodeInfo{node("a", 1<<30, 2)}, nil,
			instances("web", 3, 1<<20), map[string]int{"a": 2}, "instance slots full"},
		{"memory is a hard limit", []NodeInfo{node("a", 10<<20, 100)}, nil,
			instances("web", 3, 4<<20), map[string]int{"a": 2}, "insufficient memory"},
		{"already placed instances use capacity", []NodeInfo{node("a", 1<<30, 2), node("b", 1<<30, 2)}, withNode(instances("old", 2, 1<<20), "a"),
			instances("web", 2, 1<<20), map[string]int{"b": 2}, ""},
		{"needs the workload's runtime", []NodeInfo{node("a", 1<<30, 100, "container")}, nil,
			instances("web", 1, 1<<20), map[string]int{}, "no wasm runtime"},
		{"no nodes at all", nil, nil, instances("web", 1, 1<<20), map[string]int{}, "no nodes are registered"},
		{"selector keeps to matching nodes", []NodeInfo{labelled("a", "zone", "x"), labelled("b", "zone", "y"), labelled("c", "zone", "x")}, nil,
			withPlacement(instances("web", 4, 1<<20), &v1.Placement{Selector: map[string]string{"zone": "x"}}), map[string]int{"a": 2, "c": 2}, ""},
		{"arch and os must be accepted", []NodeInfo{withArch(node("a", 1<<30, 100), "arm64", "linux"), withArch(node("b", 1<<30, 100), "amd64", "linux"), withArch(node("c", 1<<30, 100), "arm64", "darwin")}, nil,
			withPlacement(instances("web", 2, 1<<20), &v1.Placement{Arch: []string{"arm64"}, Os: []string{"linux"}}), map[string]int{"a": 2}, ""},
		{"cpu is a hard limit", []NodeInfo{withCPU(node("a", 1<<30, 100), 1000)}, nil,
			withCPURequest(instances("web", 3, 1<<20), 400), map[string]int{"a": 2}, "1 insufficient cpu"},
		{"the reason counts every node, most common first", []NodeInfo{labelled("a", "zone", "y"), labelled("b", "zone", "y"), cordon(labelled("c", "zone", "x"))}, nil,
			withPlacement(instances("web", 1, 1<<20), &v1.Placement{Selector: map[string]string{"zone": "x"}}), map[string]int{}, "0/3 nodes fit: 2 selector mismatch, 1 cordoned"},
		{"spread label balances zones before nodes", []NodeInfo{labelled("a1", "zone", "a"), labelled("a2", "zone", "a"), labelled("a3", "zone", "a"), labelled("b1", "zone", "b")}, nil,
			withPlacement(instances("web", 4, 1<<20), &v1.Placement{Spread: "zone"}), map[string]int{"a1": 1, "a2": 1, "b1": 2}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			plan := Schedule(SnapshotOf(tc.nodes, tc.placed), tc.pending)
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

func labelled(name, key, value string) NodeInfo {
	n := node(name, 1<<30, 100)
	n.Node.Labels = map[string]string{key: value}
	return n
}

func cordon(n NodeInfo) NodeInfo {
	n.Node.Cordoned = true
	return n
}

func withArch(n NodeInfo, arch, os string) NodeInfo {
	n.Node.Arch, n.Node.Os = arch, os
	return n
}

func withCPU(n NodeInfo, millis int64) NodeInfo {
	n.Node.Capacity.CpuMillis = millis
	return n
}

func withPlacement(insts []*v1.Instance, pl *v1.Placement) []*v1.Instance {
	for _, i := range insts {
		i.Spec.Placement = pl
	}
	return insts
}

func withCPURequest(insts []*v1.Instance, millis int64) []*v1.Instance {
	for _, i := range insts {
		i.Spec.CpuMillis = millis
	}
	return insts
}

func withNode(insts []*v1.Instance, n string) []*v1.Instance {
	for _, i := range insts {
		i.Node = n
	}
	return insts
}

// TestSpreadWithPlacedReplicas: replicas already running in one zone send
// the new ones to the other.
func TestSpreadWithPlacedReplicas(t *testing.T) {
	nodes := []NodeInfo{labelled("a1", "zone", "a"), labelled("a2", "zone", "a"), labelled("b1", "zone", "b")}
	placed := withPlacement(withNode(instances("web", 2, 1<<20), "a1"), &v1.Placement{Spread: "zone"})
	pending := withPlacement(instances("web", 2, 1<<20), &v1.Placement{Spread: "zone"})
	for i, p := range pending {
		p.Id = fmt.Sprintf("new-%d", i)
	}
	plan := Schedule(SnapshotOf(nodes, placed), pending)
	for id, n := range plan.Bindings {
		if n != "b1" {
			t.Errorf("%s bound to %s, want b1 (zone b holds none of the 2 running in zone a)", id, n)
		}
	}
	if len(plan.Bindings) != 2 {
		t.Errorf("bindings = %v, want both placed", plan.Bindings)
	}
}

// TestSpreadIsEven places many replicas over uneven zones and checks that
// no zone holds more than one replica above another.
func TestSpreadIsEven(t *testing.T) {
	var nodes []NodeInfo
	zones := []string{"a", "b", "c"}
	for i := range 10 {
		nodes = append(nodes, labelled(fmt.Sprintf("n%02d", i), "zone", zones[i%len(zones)]))
	}
	pending := withPlacement(instances("web", 31, 1<<20), &v1.Placement{Spread: "zone"})
	plan := Schedule(Snapshot{Nodes: nodes}, pending)
	perZone := map[string]int{}
	for _, n := range plan.Bindings {
		for _, ni := range nodes {
			if ni.Node.Name == n {
				perZone[ni.Node.Labels["zone"]]++
			}
		}
	}
	lo, hi := 1<<30, 0
	for _, z := range zones {
		lo, hi = min(lo, perZone[z]), max(hi, perZone[z])
	}
	if len(plan.Bindings) != 31 || hi-lo > 1 {
		t.Errorf("per zone = %v (%d placed), want 31 placed and zones within one of each other", perZone, len(plan.Bindings))
	}
}

func benchNodes(n, zones int) []NodeInfo {
	nodes := make([]NodeInfo, n)
	for i := range nodes {
		nodes[i] = node(fmt.Sprintf("n%04d", i), 16<<30, 1000)
		nodes[i].Node.Labels = map[string]string{"zone": fmt.Sprintf("z%02d", i%zones), "rack": fmt.Sprintf("r%03d", i%(n/10+1))}
	}
	return nodes
}

// benchPending is 1,000 instances of 100 workloads, 10 replicas each.
func benchPending(pl *v1.Placement) []*v1.Instance {
	var out []*v1.Instance
	for w := range 100 {
		out = append(out, withPlacement(instances(fmt.Sprintf("w%03d", w), 10, 1<<20), pl)...)
	}
	return out
}

// BenchmarkSchedule1000Nodes places instances on 1,000 simulated nodes and
// reports placements per second (target in TARGETS.md: ≥ 10,000/s).
func BenchmarkSchedule1000Nodes(b *testing.B) {
	nodes := benchNodes(1000, 10)
	pending := benchPending(nil)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		Schedule(Snapshot{Nodes: nodes}, pending)
	}
	b.ReportMetric(float64(b.N*len(pending))/b.Elapsed().Seconds(), "placements/s")
}

// BenchmarkSchedule1000NodesSpread is the same with every workload spread
// across a rack label of 100 values (target in TARGETS.md: ≥ 1,000/s).
func BenchmarkSchedule1000NodesSpread(b *testing.B) {
	nodes := benchNodes(1000, 10)
	pending := benchPending(&v1.Placement{Spread: "rack"})
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		Schedule(Snapshot{Nodes: nodes}, pending)
	}
	b.ReportMetric(float64(b.N*len(pending))/b.Elapsed().Seconds(), "placements/s")
}

// BenchmarkSchedule1000NodesBusy schedules onto nodes that already hold
// 20,000 placed instances of other workloads.
func BenchmarkSchedule1000NodesBusy(b *testing.B) {
	nodes := benchNodes(1000, 10)
	var placed []*v1.Instance
	for w := range 200 {
		for i, inst := range instances(fmt.Sprintf("old%03d", w), 100, 1<<20) {
			inst.Node = nodes[(w*100+i)%len(nodes)].Node.Name
			placed = append(placed, inst)
		}
	}
	pending := benchPending(&v1.Placement{Spread: "zone"})
	snap := SnapshotOf(nodes, placed) // what the member's cache keeps up to date
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		Schedule(snap, pending)
	}
	b.ReportMetric(float64(b.N*len(pending))/b.Elapsed().Seconds(), "placements/s")
}

// BenchmarkSchedule10000ReplicasOneWorkload places one workload of 10,000
// replicas on 1,000 nodes (a big deploy), ranked (pick) and looking at
// every node for each instance (pickLinear), in the same run.
func BenchmarkSchedule10000ReplicasOneWorkload(b *testing.B) {
	nodes := benchNodes(1000, 20)
	pending := instances("big", 10000, 1<<20)
	for _, linear := range []bool{false, true} {
		name := "ranked"
		if linear {
			name = "every-node"
		}
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				schedule(Snapshot{Nodes: nodes}, pending, linear)
			}
			b.ReportMetric(float64(b.N*len(pending))/b.Elapsed().Seconds(), "placements/s")
		})
	}
}
