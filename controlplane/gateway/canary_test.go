package gateway

import (
	"fmt"
	"testing"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// canarySnapshot is a function at generation 2 with old replicas of
// generation 1 and fresh ones of generation 2, all ready on one node.
func canarySnapshot(canary string, promoted int64, old, fresh int) snapshot {
	wl := function("greet", "/greet", "")
	wl.Generation, wl.PromotedGeneration, wl.Spec.Canary = 2, promoted, canary
	s := snapshot{
		workloads: []*v1.Workload{wl},
		statuses:  map[string]*v1.InstanceStatus{},
		nodes:     map[string]*v1.Node{"n1": {Name: "n1", HttpAddress: "127.0.0.1:1"}},
		alive:     map[string]bool{"n1": true},
	}
	add := func(n int, gen int64) {
		for i := range n {
			inst, st := running(fmt.Sprintf("greet-g%d-%d", gen, i), "greet", "n1", wl.Spec)
			inst.Generation = gen
			s.instances, s.statuses[inst.Id] = append(s.instances, inst), st
		}
	}
	add(old, 1)
	add(fresh, 2)
	return s
}

// freshShare picks n times (without skip) and returns the share of picks
// that went to generation 2.
func freshShare(r *route, n int) float64 {
	fresh := 0
	for range n {
		if r.pick(nil).generation == 2 {
			fresh++
		}
	}
	return float64(fresh) / float64(n)
}

func TestPickSendsACanaryItsPercentage(t *testing.T) {
	const picks = 4000
	tests := []struct {
		name       string
		canary     string
		promoted   int64
		old, fresh int
		lo, hi     float64
	}{
		// 10% to the single canary replica, although it is 1 of 5.
		{"10% canary of 1 beside 4 old", "10%", 1, 4, 1, 0.06, 0.14},
		{"25% canary of 1 beside 4 old", "25%", 1, 4, 1, 0.20, 0.30},
		{"50% canary of 2 beside 2 old", "50%", 1, 2, 2, 0.44, 0.56},
		// Promoted: every ready replica alike, 1 of 5.
		{"promoted canary", "10%", 2, 4, 1, 0.15, 0.25},
		// No canary: likewise.
		{"no canary", "", 1, 4, 1, 0.15, 0.25},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := build(canarySnapshot(tc.canary, tc.promoted, tc.old, tc.fresh), nil).match("gw", "/greet")
			if got := freshShare(r, picks); got < tc.lo || got > tc.hi {
				t.Errorf("generation 2 got %.3f of %d picks, want %.2f..%.2f", got, picks, tc.lo, tc.hi)
			}
		})
	}
}

func TestPickDuringACanaryFallsBackToTheOtherPool(t *testing.T) {
	r := build(canarySnapshot("10%", 1, 2, 1), nil).match("gw", "/greet")
	var fresh *replica
	older := map[*replica]bool{}
	for _, rep := range r.replicas {
		if rep.generation == 2 {
			fresh = rep
		} else {
			older[rep] = true
		}
	}
	// Every old replica tried: the canary, each time.
	for range 50 {
		if got := r.pick(older); got != fresh {
			t.Fatalf("with the old replicas tried, picked %v, want the canary", got)
		}
	}
	// The canary tried: an old replica, each time.
	for range 200 {
		if got := r.pick(map[*replica]bool{fresh: true}); got == nil || got.generation != 1 {
			t.Fatalf("with the canary tried, picked %v, want an old replica", got)
		}
	}
	older[fresh] = true
	if got := r.pick(older); got != nil {
		t.Errorf("with every replica tried, picked %v", got)
	}
}

func TestCanaryWithOnlyOnePoolUsesIt(t *testing.T) {
	// The canary's replicas are not ready yet: the old ones take it all.
	r := build(canarySnapshot("50%", 1, 3, 0), nil).match("gw", "/greet")
	for range 100 {
		if got := r.pick(nil); got == nil || got.generation != 1 {
			t.Fatalf("picked %v, want an old replica", got)
		}
	}
	// Every old replica gone: the canary takes it all.
	r = build(canarySnapshot("10%", 1, 0, 2), nil).match("gw", "/greet")
	for range 100 {
		if got := r.pick(nil); got == nil || got.generation != 2 {
			t.Fatalf("picked %v, want a canary replica", got)
		}
	}
}
