package scheduler

import "container/heap"

// Placing one instance used to look at every feasible node, so that a
// workload of 10,000 replicas on 1,000 nodes cost ten million looks. A
// group now keeps its feasible nodes in a heap by preference. A node's
// rank only ever worsens during a pass — its usage and its replica counts
// only grow, whoever places there — so the heap holds each node's rank as
// last computed, a bound its current rank can only be above: pick pops the
// top, ranks it again, and takes it when the rank has not moved (every
// other node is ranked at least as low as its bound); otherwise it puts
// it back with its new rank and looks again. A node with no room left is
// dropped for the rest of the pass.

// rank is a node's preference for one more instance of a group, lowest
// first: the fewest replicas in its value of the spread label, Wasm over
// the fallback container, the fewest of the workload's replicas on the
// node, the most left free, and the node's place in name order.
type rank struct {
	label       int32
	asContainer bool
	onNode      int32
	free        float64
	idx         int
}

func (a rank) less(b rank) bool {
	switch {
	case a.label != b.label:
		return a.label < b.label
	case a.asContainer != b.asContainer:
		return !a.asContainer
	case a.onNode != b.onNode:
		return a.onNode < b.onNode
	case a.free != b.free:
		return a.free > b.free
	}
	return a.idx < b.idx
}

// rankOf is ns's rank for g now.
func (g *group) rankOf(ns *nodeState) rank {
	r := rank{asContainer: g.runsAsContainer(ns), onNode: g.counts.perNode[ns.idx], free: ns.free(g), idx: ns.idx}
	if g.spread != nil {
		r.label = g.spread.count[g.spread.valueOf[ns.idx]]
	}
	return r
}

// ranked is one heap entry: a node and its rank when last computed.
type ranked struct {
	ns   *nodeState
	rank rank
}

type ranking []ranked

func (h ranking) Len() int           { return len(h) }
func (h ranking) Less(i, j int) bool { return h[i].rank.less(h[j].rank) }
func (h ranking) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *ranking) Push(x any)        { *h = append(*h, x.(ranked)) }
func (h *ranking) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// pick returns the best feasible node with room for one more instance of
// g, or nil: the node pickLinear would choose.
func (p *pass) pick(g *group) *nodeState {
	if g.ranked == nil {
		h := make(ranking, 0, len(g.feasible))
		for _, ns := range g.feasible {
			h = append(h, ranked{ns, g.rankOf(ns)})
		}
		heap.Init(&h)
		g.ranked = &h
	}
	h := g.ranked
	for h.Len() > 0 {
		top := (*h)[0]
		if g.fits(top.ns) != "" {
			heap.Pop(h) // usage only grows: no room for the rest of the pass
			continue
		}
		cur := g.rankOf(top.ns)
		if cur == top.rank {
			return top.ns
		}
		(*h)[0].rank = cur
		heap.Fix(h, 0)
	}
	return nil
}
