package scheduler

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestPickMatchesLookingAtEveryNode: on random clusters (nodes of mixed
// sizes, runtimes, zones, some full already) and random pending instances
// of several workloads (spread by zone or not, some with a fallback image,
// some too big to fit anywhere), the heap-ranked pick makes exactly the
// plan that looking at every node for each instance makes.
func TestPickMatchesLookingAtEveryNode(t *testing.T) {
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 17))
		var nodes []NodeInfo
		for i := range 1 + rng.IntN(40) {
			runtimes := []string{"wasm"}
			switch rng.IntN(5) {
			case 0:
				runtimes = []string{"container"}
			case 1:
				runtimes = []string{"wasm", "container"}
			}
			n := node(fmt.Sprintf("n%02d", i), int64(1+rng.IntN(8))<<28, int32(1+rng.IntN(30)), runtimes...)
			n.Node.Labels = map[string]string{"zone": fmt.Sprintf("z%d", rng.IntN(4))}
			n.Node.Capacity.CpuMillis = int64(1000 * (1 + rng.IntN(8)))
			n.Ready = rng.IntN(10) > 0
			n.Used = Usage{Instances: int32(rng.IntN(5)), MemoryBytes: int64(rng.IntN(4)) << 26, CPUMillis: int64(rng.IntN(2000))}
			nodes = append(nodes, n)
		}
		snap := Snapshot{Nodes: nodes, Placed: map[string][]string{}}
		var pending []*v1.Instance
		for w := range 1 + rng.IntN(4) {
			name := fmt.Sprintf("w%d", w)
			insts := instances(name, 1+rng.IntN(60), int64(1+rng.IntN(64))<<20)
			for _, inst := range insts {
				inst.Spec.CpuMillis = int64(rng.IntN(500))
				if w%2 == 1 {
					inst.Spec.Placement = &v1.Placement{Spread: "zone"}
				}
			}
			if rng.IntN(3) == 0 {
				insts = withFallback(insts, "", int64(1+rng.IntN(256))<<20)
			}
			for range rng.IntN(10) {
				snap.Placed[name] = append(snap.Placed[name], nodes[rng.IntN(len(nodes))].Node.GetName())
			}
			pending = append(pending, insts...)
		}
		rng.Shuffle(len(pending), func(i, j int) { pending[i], pending[j] = pending[j], pending[i] })
		got, want := schedule(snap, pending, false), schedule(snap, pending, true)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("seed %d: the ranked pick planned\n%v\nlooking at every node plans\n%v", seed, got, want)
		}
	}
}
