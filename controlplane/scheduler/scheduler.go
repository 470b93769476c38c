// Package scheduler decides where instances run. It is decision logic only
// (after Nomad and swarmkit): a read-only Snapshot of nodes and placed
// instances goes in, a Plan comes out; the leader's controller applies the
// plan to etcd with compare-and-swap. That keeps it table-testable and
// benchmarkable with thousands of fake nodes.
package scheduler

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// DefaultMemoryRequest is reserved for an instance whose workload states
// neither a request nor a module memory size.
const DefaultMemoryRequest = 1 << 20

// NodeInfo is one node as the scheduler sees it.
type NodeInfo struct {
	Node  *v1.Node
	Ready bool
}

// Snapshot is the state a scheduling pass decides on. It is not modified.
type Snapshot struct {
	Nodes []NodeInfo
	// Placed are the instances already bound to a node (they use capacity).
	Placed []*v1.Instance
}

// Plan is the outcome of a pass.
type Plan struct {
	// Bindings maps an instance ID to the node it should run on.
	Bindings map[string]string
	// Unplaced maps an instance ID to why no node fits it.
	Unplaced map[string]string
}

// MemoryRequest is what an instance reserves on its node: the module's own
// initial memory, as measured at deploy (Wasm memory grows on demand up to
// the limit, so reserving the limit would waste most of a node).
func MemoryRequest(spec *v1.WorkloadSpec) int64 {
	if spec.GetMemoryRequestBytes() > 0 {
		return spec.GetMemoryRequestBytes()
	}
	return DefaultMemoryRequest
}

type nodeState struct {
	info       NodeInfo
	memUsed    int64
	count      int32
	byWorkload map[string]int32
}

// Schedule places the pending instances (those with no node) on nodes.
// Instances are placed in the order given; each placement updates the
// working state so that one pass spreads a workload's replicas.
func Schedule(snap Snapshot, pending []*v1.Instance) Plan {
	plan := Plan{Bindings: make(map[string]string), Unplaced: make(map[string]string)}
	nodes := make([]*nodeState, 0, len(snap.Nodes))
	byName := make(map[string]*nodeState, len(snap.Nodes))
	for _, n := range snap.Nodes {
		ns := &nodeState{info: n, byWorkload: make(map[string]int32)}
		nodes = append(nodes, ns)
		byName[n.Node.GetName()] = ns
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].info.Node.GetName() < nodes[j].info.Node.GetName() })
	for _, inst := range snap.Placed {
		if ns := byName[inst.GetNode()]; ns != nil {
			ns.add(inst)
		}
	}
	for _, inst := range pending {
		best, reason := pick(nodes, inst)
		if best == nil {
			plan.Unplaced[inst.GetId()] = reason
			continue
		}
		plan.Bindings[inst.GetId()] = best.info.Node.GetName()
		best.add(inst)
	}
	return plan
}

func (ns *nodeState) add(inst *v1.Instance) {
	ns.memUsed += MemoryRequest(inst.GetSpec())
	ns.count++
	ns.byWorkload[inst.GetWorkload()]++
}

// pick filters the nodes that can run inst and returns the best by score,
// or nil and a reason that says what ruled each node out.
func pick(nodes []*nodeState, inst *v1.Instance) (*nodeState, string) {
	if len(nodes) == 0 {
		return nil, "no nodes are registered"
	}
	kind := inst.GetSpec().GetKind()
	if kind == "" {
		kind = "wasm"
	}
	mem := MemoryRequest(inst.GetSpec())
	ruledOut := map[string]int{}
	var best *nodeState
	var bestScore float64
	for _, ns := range nodes {
		n := ns.info.Node
		switch {
		case !ns.info.Ready:
			ruledOut["not ready"]++
			continue
		case n.GetCordoned():
			ruledOut["cordoned"]++
			continue
		case !slices.Contains(n.GetRuntimes(), kind):
			ruledOut[fmt.Sprintf("no %s runtime", kind)]++
			continue
		case n.GetCapacity().GetInstances() > 0 && ns.count >= n.GetCapacity().GetInstances():
			ruledOut["instance slots full"]++
			continue
		case n.GetCapacity().GetMemoryBytes() > 0 && ns.memUsed+mem > n.GetCapacity().GetMemoryBytes():
			ruledOut["insufficient memory"]++
			continue
		}
		s := score(ns, inst, mem)
		if best == nil || s > bestScore {
			best, bestScore = ns, s
		}
	}
	if best != nil {
		return best, ""
	}
	reasons := make([]string, 0, len(ruledOut))
	for r, c := range ruledOut {
		reasons = append(reasons, fmt.Sprintf("%d %s", c, r))
	}
	sort.Strings(reasons)
	return nil, fmt.Sprintf("0/%d nodes fit: %s", len(nodes), strings.Join(reasons, ", "))
}

// score prefers nodes with fewer replicas of the same workload (spread),
// then the least allocated node.
func score(ns *nodeState, inst *v1.Instance, mem int64) float64 {
	spread := 1.0 / float64(1+ns.byWorkload[inst.GetWorkload()])
	var free float64 = 1
	if capMem := ns.info.Node.GetCapacity().GetMemoryBytes(); capMem > 0 {
		free = 1 - float64(ns.memUsed+mem)/float64(capMem)
	}
	if slots := ns.info.Node.GetCapacity().GetInstances(); slots > 0 {
		free = (free + 1 - float64(ns.count+1)/float64(slots)) / 2
	}
	return 2*spread + free
}
