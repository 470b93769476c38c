package controller

import (
	"cmp"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/events"
	"github.com/wasmorch/wasmorch/controlplane/scheduler"
	"github.com/wasmorch/wasmorch/controlplane/store"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// edge: nodes that cannot run a workload revision at all. A worker marks
// the status of an instance whose failure is its node's rather than the
// instance's (InstanceStatus.unfit: a module larger than the node's module
// cache, a runtime that cannot compile it, a binary for another
// architecture, a memory limit over the node's whole memory). The
// controller then, in one guarded write with the workload's other
// changes, retires the instance, which the workload's replica count then
// lacks, and records the node in the workload's unfit_nodes for that
// generation; the scheduler places the replacement, and every later
// instance of the generation, on other nodes (Nomad's reschedule with a
// node penalty, made a rule). Ordinary crashes are the instance's and
// restart where they are. A new generation starts with a clean slate, and
// an entry is forgotten after UnfitFor, or when more than MaxUnfitNodes
// newer ones push it out.

// UnfitFor is how long a node stays ruled out for a workload revision
// after it could not run it: long enough that a fleet does not retry a
// module on every board that cannot hold it, short enough that a board
// whose agent was upgraded, or given a larger module cache, is tried
// again without a redeploy.
const UnfitFor = time.Hour

// MaxUnfitNodes bounds the nodes recorded per workload (the newest kept),
// and so the size of its record.
const MaxUnfitNodes = 64

// maxUnfitMessage bounds the message kept from an instance's status.
const maxUnfitMessage = 256

// unfitInstances retires the instances of the workload's generation whose
// node says it cannot run them, records those nodes in the workload, and
// returns the instances that stay. Its writes join the workload's group.
func (c *controller) unfitInstances(wl store.Versioned[*v1.Workload], live []store.Versioned[*v1.Instance], w *world, g *group,
	mark func(store.Versioned[*v1.Instance], *v1.Instance) error, remove func(store.Versioned[*v1.Instance])) ([]store.Versioned[*v1.Instance], error) {
	gen := wl.Value.GetGeneration()
	var found []*v1.UnfitNode
	kept := live[:0:0]
	now := time.Now()
	for _, inst := range live {
		st := w.statuses[inst.Name]
		node := inst.Value.GetNode()
		if inst.Value.GetGeneration() != gen || node == "" || st.GetUnfit() == v1.NodeUnfit_NODE_UNFIT_UNSPECIFIED || st.GetNode() != node {
			kept = append(kept, inst)
			continue
		}
		if err := retire(inst, w, mark, remove); err != nil {
			return nil, err
		}
		found = append(found, &v1.UnfitNode{Node: node, Generation: gen, Unfit: st.GetUnfit(), Reason: st.GetReason(),
			Message: truncate(st.GetMessage(), maxUnfitMessage), Instance: inst.Name, UnixNano: now.UnixNano(), UntilUnixNano: now.Add(UnfitFor).UnixNano()})
		c.note(events.Workload(wl.Name), "NodeUnfit", "instance %s cannot run on node %s (%s: %s): replacing it on another node; generation %d avoids %s for %s",
			inst.Name, node, st.GetReason(), st.GetMessage(), gen, node, strings.TrimSuffix(UnfitFor.String(), "0m0s"))
		c.note(events.Node(node), "NodeUnfit", "cannot run workload %s generation %d (%s: %s): its instances are placed on other nodes",
			wl.Name, gen, st.GetReason(), st.GetMessage())
	}
	if len(found) == 0 {
		return live, nil
	}
	next := proto.Clone(wl.Value).(*v1.Workload) // the cache's copy is shared
	next.UnfitNodes = mergeUnfit(wl.Value.GetUnfitNodes(), found, gen, now)
	put, err := c.st.Workloads.PutOp(wl.Name, next)
	if err != nil {
		return nil, err
	}
	g.cmps, g.ops = append(g.cmps, c.st.Workloads.Unchanged(wl.Name, wl.ModRevision)), append(g.ops, put)
	return kept, nil
}

// mergeUnfit adds found to a workload's unfit nodes, keeping only the
// entries of generation gen not older than UnfitFor, one per node (the
// newest), at most MaxUnfitNodes (the newest).
func mergeUnfit(had, found []*v1.UnfitNode, gen int64, now time.Time) []*v1.UnfitNode {
	byNode := map[string]*v1.UnfitNode{}
	for _, u := range append(slices.Clone(had), found...) {
		if !current(u, gen, now) {
			continue
		}
		if prev, ok := byNode[u.GetNode()]; !ok || u.GetUnixNano() >= prev.GetUnixNano() {
			byNode[u.GetNode()] = u
		}
	}
	out := make([]*v1.UnfitNode, 0, len(byNode))
	for _, u := range byNode {
		out = append(out, u)
	}
	slices.SortFunc(out, func(a, b *v1.UnfitNode) int {
		// Newest first.
		return cmp.Or(cmp.Compare(b.GetUnixNano(), a.GetUnixNano()), cmp.Compare(a.GetNode(), b.GetNode()))
	})
	if len(out) > MaxUnfitNodes {
		out = out[:MaxUnfitNodes]
	}
	return out
}

// current says whether an unfit entry still holds for generation gen.
func current(u *v1.UnfitNode, gen int64, now time.Time) bool {
	return u.GetGeneration() == gen && now.UnixNano() < u.GetUntilUnixNano()
}

// unfitFor reports the nodes the workload's current generation must
// avoid, as the scheduler takes them (node → why), or nil.
func unfitFor(wl *v1.Workload, now time.Time) *scheduler.Avoid {
	var a *scheduler.Avoid
	for _, u := range wl.GetUnfitNodes() {
		if !current(u, wl.GetGeneration(), now) {
			continue
		}
		if a == nil {
			a = &scheduler.Avoid{Generation: wl.GetGeneration(), Nodes: map[string]string{}, WasmOnly: map[string]bool{}}
		}
		a.Nodes[u.GetNode()] = u.GetReason()
		// The node's wasm runtime failed the module: a fallback image may
		// still run there (scheduler.Avoid.WasmOnly).
		a.WasmOnly[u.GetNode()] = u.GetUnfit() == v1.NodeUnfit_NODE_UNFIT_ENGINE
	}
	return a
}

// truncate cuts s to at most n bytes, on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
