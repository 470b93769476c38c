package scheduler

import (
	"fmt"
	"testing"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// tcpService makes instances plain TCP services on node port port.
func tcpService(insts []*v1.Instance, port int32) []*v1.Instance {
	for _, i := range insts {
		i.Spec.Port, i.Spec.Tcp = port, true
	}
	return insts
}

// TestOneInstanceOfATCPServicePerNode: a plain TCP service serves on its
// node's own port, so a node takes one of its instances and no instance
// of another workload on that port (one placed before, or one leaving
// that still holds it); the rest wait, saying why. Other ports, and a
// service behind a route (a loopback port of its worker's choosing), are
// not held back.
func TestOneInstanceOfATCPServicePerNode(t *testing.T) {
	nodes := func() []NodeInfo {
		return []NodeInfo{node("a", 1<<30, 100), node("b", 1<<30, 100), node("c", 1<<30, 100)}
	}
	perNode := func(plan Plan) map[string]int {
		out := map[string]int{}
		for _, n := range plan.Bindings {
			out[n]++
		}
		return out
	}

	plan := Schedule(SnapshotOf(nodes(), nil), tcpService(instances("svc", 5, 1<<20), 9000))
	if got := perNode(plan); len(got) != 3 || got["a"] != 1 || got["b"] != 1 || got["c"] != 1 {
		t.Errorf("5 instances of a TCP service on 3 nodes: placed %v, want one on each", got)
	}
	if len(plan.Unplaced) != 2 {
		t.Fatalf("unplaced %v, want 2", plan.Unplaced)
	}
	for id, why := range plan.Unplaced {
		if why != "0/3 nodes fit: 3 port 9000 in use" {
			t.Errorf("%s waits because %q", id, why)
		}
	}

	// An instance placed on b (another workload's, or an old one still
	// stopping) holds 9000 there: b gets none; on c, another port.
	placed := append(tcpService(withNode(instances("old", 1, 1<<20), "b"), 9000), tcpService(withNode(instances("other", 1, 1<<20), "c"), 9001)...)
	plan = Schedule(SnapshotOf(nodes(), placed), tcpService(instances("svc", 3, 1<<20), 9000))
	if got := perNode(plan); got["a"] != 1 || got["b"] != 0 || got["c"] != 1 {
		t.Errorf("with 9000 held on b and 9001 on c: placed %v, want a and c", got)
	}
	// The ports the cache hands over (NodeInfo.Ports) count the same.
	ns := nodes()
	ns[0].Ports = map[int32]int32{9000: 1}
	ns[1].Ports = map[int32]int32{9000: 2}
	plan = Schedule(Snapshot{Nodes: ns}, tcpService(instances("svc", 2, 1<<20), 9000))
	if got := perNode(plan); len(got) != 1 || got["c"] != 1 {
		t.Errorf("with 9000 held on a and b: placed %v, want c only", got)
	}

	// Two TCP services on two ports share the nodes.
	pending := append(tcpService(instances("x", 3, 1<<20), 7000), tcpService(instances("y", 3, 1<<20), 7001)...)
	if plan := Schedule(SnapshotOf(nodes(), nil), pending); len(plan.Bindings) != 6 {
		t.Errorf("two services on two ports: placed %d of 6 (%v)", len(plan.Bindings), plan.Unplaced)
	}
	// A service behind a route holds no node port.
	routed := instances("web", 5, 1<<20)
	for _, i := range routed {
		i.Spec.Port, i.Spec.Http = 9000, &v1.HttpTrigger{Route: "/web"}
	}
	if plan := Schedule(SnapshotOf(nodes()[:1], tcpService(withNode(instances("t", 1, 1<<20), "a"), 9000)), routed); len(plan.Bindings) != 5 {
		t.Errorf("a routed service with port 9000 beside a TCP service on 9000: placed %d of 5 (%v)", len(plan.Bindings), plan.Unplaced)
	}
}

// TestTCPPortsWithPickMatchingLookingAtEveryNode: with TCP services
// among the workloads, the ranked pick still plans what looking at every
// node plans.
func TestTCPPortsWithPickMatchingLookingAtEveryNode(t *testing.T) {
	for seed := range 50 {
		var nodes []NodeInfo
		for i := range 3 + seed%7 {
			n := node(fmt.Sprintf("n%d", i), 1<<30, int32(2+(seed+i)%5))
			if (seed+i)%3 == 0 {
				n.Ports = map[int32]int32{9000: 1}
			}
			nodes = append(nodes, n)
		}
		pending := append(tcpService(instances("a", 1+seed%6, 1<<20), 9000), instances("b", seed%9, 1<<20)...)
		pending = append(pending, tcpService(instances("c", seed%4, 1<<20), 9001)...)
		got, want := schedule(Snapshot{Nodes: nodes}, pending, false), schedule(Snapshot{Nodes: nodes}, pending, true)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("seed %d: the ranked pick planned\n%v\nlooking at every node plans\n%v", seed, got, want)
		}
	}
}
