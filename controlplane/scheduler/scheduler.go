// Package scheduler decides where instances run. It is decision logic only
// (after Nomad and swarmkit): a read-only Snapshot of nodes and placed
// instances goes in, a Plan comes out; the leader's controller applies the
// plan to etcd with compare-and-swap. That keeps it table-testable and
// benchmarkable with thousands of fake nodes.
//
// A node is feasible for an instance when it is ready, not cordoned, not
// under disk pressure (a condition its worker reports), offers the
// workload's runtime (for a wasm workload with a fallback image, either
// runtime: see fallback.go), has an accepted arch and OS, carries every
// label of the workload's selector, allows the workload's scratch space,
// has not already failed to run the workload's generation at all (an
// unfit node: Snapshot.Avoid), has free instance slots, memory and CPU,
// and, for a plain TCP service, has its port free (no instance on it
// serves on that port: a node runs one instance per port).
// Among feasible nodes the scheduler prefers, in this order: the value of
// the workload's spread label holding the fewest of its replicas, the node
// holding the fewest of its replicas, and the least allocated node.
package scheduler

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/wasmorch/wasmorch/internal/resources"
	"github.com/wasmorch/wasmorch/internal/volumes"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// NodeInfo is one node as the scheduler sees it.
type NodeInfo struct {
	Node  *v1.Node
	Ready bool
	// Used is what the instances already placed on it reserve.
	Used Usage
	// Ports are the node's own TCP ports its placed instances serve on
	// (plain TCP services), each with how many hold it; read only.
	Ports map[int32]int32
}

// Usage is what instances reserve on a node.
type Usage struct {
	Instances   int32
	MemoryBytes int64
	CPUMillis   int64
}

// Snapshot is the state a scheduling pass decides on. It is not modified.
type Snapshot struct {
	Nodes []NodeInfo
	// Placed maps each workload that has instances to place to the nodes
	// its placed instances are on, one entry per instance: spreading
	// counts them. Other workloads' instances count only in Used.
	Placed map[string][]string
	// Volumes maps each named volume the instances to place mount, and
	// that exists, to the node it lives on (state: storage.go).
	Volumes map[string]string
	// Avoid maps a workload to the nodes where its generation could not
	// run at all (edge: unfit.go): none of that generation is placed
	// there.
	Avoid map[string]*Avoid
}

// Avoid is the nodes a workload generation cannot run on, each with why
// (the reason its instance reported there, e.g. ModuleTooLarge).
type Avoid struct {
	Generation int64
	Nodes      map[string]string
	// WasmOnly marks the nodes of Nodes whose wasm runtime is what failed
	// (InvalidModule, ImportError): a workload with a fallback image runs
	// there as its container, as it would on a node without the wasm
	// runtime (fallback.go).
	WasmOnly map[string]bool
}

// on says whether a must avoid node, and why; a may be nil.
func (a *Avoid) on(node string) (why string, ok bool) {
	if a == nil {
		return "", false
	}
	why, ok = a.Nodes[node]
	return why, ok
}

// SnapshotOf builds a snapshot from nodes and every instance placed on
// them: what a caller without per-node usage at hand (tests, tools)
// passes.
func SnapshotOf(nodes []NodeInfo, placed []*v1.Instance) Snapshot {
	snap := Snapshot{Nodes: make([]NodeInfo, len(nodes)), Placed: map[string][]string{}}
	idx := make(map[string]int, len(nodes))
	for i, n := range nodes {
		snap.Nodes[i] = n
		idx[n.Node.GetName()] = i
	}
	for _, inst := range placed {
		i, ok := idx[inst.GetNode()]
		if !ok {
			continue
		}
		u := &snap.Nodes[i].Used
		u.Instances++
		u.MemoryBytes += InstanceMemoryRequest(inst)
		u.CPUMillis += inst.GetSpec().GetCpuMillis()
		if port := resources.NodePort(inst.GetSpec()); port != 0 {
			if snap.Nodes[i].Ports == nil {
				snap.Nodes[i].Ports = map[int32]int32{}
			}
			snap.Nodes[i].Ports[port]++
		}
		snap.Placed[inst.GetWorkload()] = append(snap.Placed[inst.GetWorkload()], inst.GetNode())
	}
	return snap
}

// Plan is the outcome of a pass.
type Plan struct {
	// Bindings maps an instance ID to the node it should run on.
	Bindings map[string]string
	// Unplaced maps an instance ID to why no node fits it, e.g.
	// "0/3 nodes fit: 2 selector mismatch, 1 cordoned".
	Unplaced map[string]string
	// Runtimes maps the ID of a bound instance of a wasm workload with a
	// fallback image to the runtime it runs with there (fallback.go).
	Runtimes map[string]Choice
	// NewVolumes maps each named volume that did not exist to the node
	// the first instance mounting it was bound to: where it is to be
	// created (storage.go).
	NewVolumes map[string]string
}

// MemoryRequest is what an instance reserves on its node: its memory
// limit (resources.MemoryRequest), which the node's worker admits it by
// too. A node's capacity is its allocatable memory, so that the limits of
// the instances placed on it never add up to more than it can hold.
func MemoryRequest(spec *v1.WorkloadSpec) int64 {
	return resources.MemoryRequest(spec)
}

// Reasons a node is ruled out, as they appear in Plan.Unplaced.
const (
	reasonNotReady = "not ready"
	reasonCordoned = "cordoned"
	reasonDisk     = "disk pressure"
	reasonArch     = "arch mismatch"
	reasonOS       = "os mismatch"
	reasonSelector = "selector mismatch"
	reasonSlots    = "instance slots full"
	reasonMemory   = "insufficient memory"
	reasonCPU      = "insufficient cpu"
	reasonScratch  = "scratch space over the node's allowance"
	reasonMount    = "host mount not allowed"
	reasonUnfit    = "could not run this revision before (%s)"
	reasonPort     = "port %d in use"
	// edge: a node whose wasm runtime failed a workload with a fallback.
	reasonWasmUnfit = "its wasm runtime could not run this revision before (%s)"
)

type nodeState struct {
	idx     int
	info    NodeInfo
	memUsed int64
	cpuUsed int64
	count   int32
	memCap  int64 // 0: unlimited
	cpuCap  int64
	slots   int32
	// ports are the node ports in use: its instances' (NodeInfo.Ports,
	// shared) and those placed in this pass.
	ports  map[int32]int32
	placed []int32
}

// portInUse says whether an instance on ns serves on node port port.
func (ns *nodeState) portInUse(port int32) bool {
	return ns.ports[port] > 0 || slices.Contains(ns.placed, port)
}

// group is what one workload generation's instances share: the nodes that
// pass the filters that do not depend on usage, and why the others fail.
type group struct {
	feasible    []*nodeState
	static      map[string]int
	counts      *workloadCounts
	spread      *labelSpread // nil without a spread label
	mem, cpu    int64
	unplaceable string         // set once an instance found no room: usage only grows in a pass
	fallback    *fallbackGroup // nil without a fallback image
	ranked      *ranking       // the feasible nodes by preference (rank.go), built on first use
	volumes     *volumeGroup   // nil without named volumes (storage.go)
	port        int32          // the node port its instances hold (resources.NodePort), or 0
	portReason  string
}

// workloadCounts are where one workload's replicas are.
type workloadCounts struct {
	perNode []int32                 // by node index
	spreads map[string]*labelSpread // by label key
}

// labelSpread counts a workload's replicas per value of one node label.
type labelSpread struct {
	valueOf []int32 // node index → value index
	count   []int32 // value index → replicas
}

type pass struct {
	nodes    []*nodeState
	byName   map[string]*nodeState
	groups   map[string]*group
	counts   map[string]*workloadCounts
	placedBy map[string][]int  // workload → node indexes of its placed instances
	volumes  map[string]string // named volume → its node, as placed so far (storage.go)
	avoid    map[string]*Avoid // edge: Snapshot.Avoid
}

// Schedule places the pending instances (those with no node) on nodes.
// Instances are placed in the order given; each placement updates the
// working state so that one pass spreads a workload's replicas.
func Schedule(snap Snapshot, pending []*v1.Instance) Plan {
	return schedule(snap, pending, false)
}

// schedule is Schedule, looking at every node for each instance when
// linear is set (the reference the tests hold pick to).
func schedule(snap Snapshot, pending []*v1.Instance, linear bool) Plan {
	plan := Plan{Bindings: make(map[string]string, len(pending)), Unplaced: make(map[string]string), Runtimes: map[string]Choice{}, NewVolumes: map[string]string{}}
	p := &pass{byName: make(map[string]*nodeState, len(snap.Nodes)), groups: map[string]*group{}, counts: map[string]*workloadCounts{},
		volumes: maps.Clone(snap.Volumes), avoid: snap.Avoid}
	if p.volumes == nil {
		p.volumes = map[string]string{}
	}
	for _, n := range snap.Nodes {
		capy := n.Node.GetCapacity()
		p.nodes = append(p.nodes, &nodeState{info: n, memCap: capy.GetMemoryBytes(), cpuCap: capy.GetCpuMillis(), slots: capy.GetInstances(),
			memUsed: n.Used.MemoryBytes, cpuUsed: n.Used.CPUMillis, count: n.Used.Instances, ports: n.Ports})
	}
	sort.Slice(p.nodes, func(i, j int) bool { return p.nodes[i].info.Node.GetName() < p.nodes[j].info.Node.GetName() })
	for i, ns := range p.nodes {
		ns.idx = i
		p.byName[ns.info.Node.GetName()] = ns
	}
	p.placedBy = map[string][]int{}
	for _, inst := range pending {
		w := inst.GetWorkload()
		if _, done := p.placedBy[w]; done {
			continue
		}
		idxs := make([]int, 0, len(snap.Placed[w]))
		for _, node := range snap.Placed[w] {
			if ns := p.byName[node]; ns != nil {
				idxs = append(idxs, ns.idx)
			}
		}
		p.placedBy[w] = idxs
	}
	for _, inst := range pending {
		g := p.group(inst)
		if g.volumes != nil {
			p.pinVolumes(g) // storage.go
		}
		if g.unplaceable != "" {
			plan.Unplaced[inst.GetId()] = g.unplaceable
			continue
		}
		best := p.pick(g)
		if linear {
			best = p.pickLinear(g)
		}
		if best == nil {
			g.unplaceable = p.reason(g)
			if g.volumes != nil && g.volumes.pinned != "" {
				g.unplaceable = g.volumes.reason(p, g)
			}
			plan.Unplaced[inst.GetId()] = g.unplaceable
			continue
		}
		plan.Bindings[inst.GetId()] = best.info.Node.GetName()
		if g.fallback != nil {
			plan.Runtimes[inst.GetId()] = g.choice(best)
		}
		best.memUsed += g.memOn(best)
		best.cpuUsed += g.cpu
		best.count++
		if g.port != 0 {
			best.placed = append(best.placed, g.port)
		}
		g.counts.add(best.idx)
		if g.volumes != nil {
			p.placeVolumes(g, best, plan.NewVolumes)
		}
	}
	return plan
}

// group returns the shared state of inst's workload generation, building
// it on first use.
func (p *pass) group(inst *v1.Instance) *group {
	key := fmt.Sprintf("%s/%d", inst.GetWorkload(), inst.GetGeneration())
	if volumes.PerInstance(inst.GetSpec()) {
		// state: each replica slot has volumes of its own, and so a node
		// of its own once they exist.
		key = fmt.Sprintf("%s/%d/%d", inst.GetWorkload(), inst.GetGeneration(), inst.GetOrdinal())
	}
	if g, ok := p.groups[key]; ok {
		return g
	}
	spec := inst.GetSpec()
	g := &group{static: map[string]int{}, mem: MemoryRequest(spec), cpu: spec.GetCpuMillis(), counts: p.workloadCounts(inst.GetWorkload())}
	if g.port = resources.NodePort(spec); g.port != 0 {
		g.portReason = fmt.Sprintf(reasonPort, g.port)
	}
	kind := spec.GetKind()
	if kind == "" {
		kind = "wasm"
	}
	pl := spec.GetPlacement()
	if len(spec.GetVolumes()) > 0 {
		g.volumes = newVolumeGroup(inst, len(p.nodes))
	}
	avoid := p.avoid[inst.GetWorkload()]
	if avoid != nil && avoid.Generation != inst.GetGeneration() {
		avoid = nil
	}
	if HasFallback(spec) {
		g.fallback = &fallbackGroup{asContainer: make([]bool, len(p.nodes)), why: make([]string, len(p.nodes)), mem: spec.GetFallbackMemoryRequestBytes()}
		if g.fallback.mem <= 0 {
			g.fallback.mem = g.mem
		}
	}
	for _, ns := range p.nodes {
		why := ""
		unfit, avoided := avoid.on(ns.info.Node.GetName())
		if g.fallback != nil {
			var c Choice
			notWasm := ""
			if avoided && avoid.WasmOnly[ns.info.Node.GetName()] {
				notWasm = fmt.Sprintf(reasonWasmUnfit, unfit)
			}
			if c, why = choose(ns.info.Node, spec, notWasm); why == "" {
				avoided = avoided && notWasm == "" // its container may run where its module could not
				why = staticMismatch(ns.info, c.Runtime, pl)
				g.fallback.asContainer[ns.idx] = c.Runtime == RuntimeContainer
				g.fallback.why[ns.idx] = c.Reason
			}
		} else {
			why = staticMismatch(ns.info, kind, pl)
		}
		// state: the scratch space of an instance, a directory for a wasm
		// one, a tmpfs for a container, both within the node's allowance.
		if why == "" && spec.GetScratchBytes() > ns.info.Node.GetMaxScratchBytes() {
			why = reasonScratch
		}
		if why == "" && !mountsAllowed(spec, ns.info.Node) {
			why = reasonMount
		}
		if why == "" && avoided {
			why = fmt.Sprintf(reasonUnfit, unfit)
		}
		if g.volumes != nil {
			g.volumes.why[ns.idx] = why
		}
		if why != "" {
			g.static[why]++
			continue
		}
		g.feasible = append(g.feasible, ns)
	}
	if label := pl.GetSpread(); label != "" {
		g.spread = p.labelSpread(g.counts, label)
	}
	p.groups[key] = g
	return g
}

// staticMismatch says why a node can never take an instance in this pass,
// or "" when it might.
func staticMismatch(n NodeInfo, kind string, pl *v1.Placement) string {
	node := n.Node
	switch {
	case !n.Ready:
		return reasonNotReady
	case node.GetCordoned():
		return reasonCordoned
	case DiskPressure(node):
		return reasonDisk
	}
	return placementMismatch(node, kind, pl)
}

// placementMismatch says why node can never take an instance of kind
// under placement pl, whatever its state: its runtimes, architecture, OS
// and labels; "" when it can.
func placementMismatch(node *v1.Node, kind string, pl *v1.Placement) string {
	switch {
	case !slices.Contains(node.GetRuntimes(), kind):
		return fmt.Sprintf("no %s runtime", kind)
	case len(pl.GetArch()) > 0 && !slices.Contains(pl.GetArch(), node.GetArch()):
		return reasonArch
	case len(pl.GetOs()) > 0 && !slices.Contains(pl.GetOs(), node.GetOs()):
		return reasonOS
	}
	for k, v := range pl.GetSelector() {
		if got, ok := node.GetLabels()[k]; !ok || got != v {
			return reasonSelector
		}
	}
	return ""
}

// StaticFit says why node n can never run a Wasm instance of spec,
// whatever its resources and its state (ready, cordoned, disk pressure):
// the predicates of a placement that only the node's record decides — the
// wasm runtime, the placement's arch, OS and selector, the scratch
// allowance and the allowed host mounts; "" when it can. edge: the
// functions a node may start cold on its local listener are those it fits
// so (controlplane/api, local functions).
func StaticFit(n *v1.Node, spec *v1.WorkloadSpec) string {
	if why := placementMismatch(n, RuntimeWasm, spec.GetPlacement()); why != "" {
		return why
	}
	if spec.GetScratchBytes() > n.GetMaxScratchBytes() {
		return reasonScratch
	}
	if !mountsAllowed(spec, n) {
		return reasonMount
	}
	return ""
}

// DiskPressure reports whether the node's worker says its disk is nearly
// full.
func DiskPressure(n *v1.Node) bool {
	for _, c := range n.GetConditions() {
		if c.GetType() == v1.NodeConditionType_NODE_CONDITION_TYPE_DISK_PRESSURE {
			return true
		}
	}
	return false
}

func (p *pass) workloadCounts(workload string) *workloadCounts {
	if wc, ok := p.counts[workload]; ok {
		return wc
	}
	wc := &workloadCounts{perNode: make([]int32, len(p.nodes)), spreads: map[string]*labelSpread{}}
	for _, idx := range p.placedBy[workload] {
		wc.perNode[idx]++
	}
	p.counts[workload] = wc
	return wc
}

// labelSpread returns the workload's replica counts per value of the node
// label key; nodes without the label count as one more value.
func (p *pass) labelSpread(wc *workloadCounts, key string) *labelSpread {
	if ls, ok := wc.spreads[key]; ok {
		return ls
	}
	ls := &labelSpread{valueOf: make([]int32, len(p.nodes))}
	index := map[string]int32{}
	for i, ns := range p.nodes {
		v := ns.info.Node.GetLabels()[key]
		vi, ok := index[v]
		if !ok {
			vi = int32(len(ls.count))
			index[v] = vi
			ls.count = append(ls.count, 0)
		}
		ls.valueOf[i] = vi
		ls.count[vi] += wc.perNode[i]
	}
	wc.spreads[key] = ls
	return ls
}

func (wc *workloadCounts) add(idx int) {
	wc.perNode[idx]++
	for _, ls := range wc.spreads {
		ls.count[ls.valueOf[idx]]++
	}
}

// fits reports whether ns has room for one more instance of g.
func (g *group) fits(ns *nodeState) string {
	switch {
	case ns.slots > 0 && ns.count >= ns.slots:
		return reasonSlots
	case ns.memCap > 0 && ns.memUsed+g.memOn(ns) > ns.memCap:
		return reasonMemory
	case ns.cpuCap > 0 && g.cpu > 0 && ns.cpuUsed+g.cpu > ns.cpuCap:
		return reasonCPU
	case g.port != 0 && ns.portInUse(g.port):
		return g.portReason
	}
	return ""
}

// pickLinear returns the best feasible node with room for one more
// instance of g, or nil, by looking at every one: the definition of the
// preference that pick (rank.go) finds faster, kept to test it against.
func (p *pass) pickLinear(g *group) *nodeState {
	var best *nodeState
	var bestLabel, bestNode int32
	var bestFree float64
	var bestAsContainer bool
	for _, ns := range g.feasible {
		if g.fits(ns) != "" {
			continue
		}
		var label int32
		if g.spread != nil {
			label = g.spread.count[g.spread.valueOf[ns.idx]]
		}
		// Between equally spread nodes, one that runs a fallback workload
		// as Wasm wins.
		asContainer := g.runsAsContainer(ns)
		if best != nil && label == bestLabel && asContainer != bestAsContainer {
			if asContainer {
				continue
			}
		} else {
			onNode := g.counts.perNode[ns.idx]
			if best != nil && (label > bestLabel || label == bestLabel && onNode > bestNode) {
				continue
			}
			if best != nil && label == bestLabel && onNode == bestNode && ns.free(g) <= bestFree {
				continue
			}
		}
		best, bestLabel, bestNode, bestFree, bestAsContainer = ns, label, g.counts.perNode[ns.idx], ns.free(g), asContainer
	}
	return best
}

// free is the share of the node left after placing one more instance of g,
// averaged over the resources it has limits for (least allocated wins).
func (ns *nodeState) free(g *group) float64 {
	sum, n := 0.0, 0
	if ns.memCap > 0 {
		sum += 1 - float64(ns.memUsed+g.memOn(ns))/float64(ns.memCap)
		n++
	}
	if ns.cpuCap > 0 {
		sum += 1 - float64(ns.cpuUsed+g.cpu)/float64(ns.cpuCap)
		n++
	}
	if ns.slots > 0 {
		sum += 1 - float64(ns.count+1)/float64(ns.slots)
		n++
	}
	if n == 0 {
		return 1
	}
	return sum / float64(n)
}

// reason says what ruled out each node, most common first:
// "0/3 nodes fit: 2 selector mismatch, 1 cordoned".
func (p *pass) reason(g *group) string {
	if len(p.nodes) == 0 {
		return "no nodes are registered"
	}
	ruledOut := make(map[string]int, len(g.static)+3)
	for r, c := range g.static {
		ruledOut[r] += c
	}
	for _, ns := range g.feasible {
		if r := g.fits(ns); r != "" {
			ruledOut[r]++
		}
	}
	reasons := make([]string, 0, len(ruledOut))
	for r := range ruledOut {
		reasons = append(reasons, r)
	}
	sort.Slice(reasons, func(i, j int) bool {
		a, b := reasons[i], reasons[j]
		return ruledOut[a] > ruledOut[b] || ruledOut[a] == ruledOut[b] && a < b
	})
	for i, r := range reasons {
		reasons[i] = fmt.Sprintf("%d %s", ruledOut[r], r)
	}
	return fmt.Sprintf("0/%d nodes fit: %s", len(p.nodes), strings.Join(reasons, ", "))
}
