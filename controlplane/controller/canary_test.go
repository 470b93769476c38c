package controller

import (
	"fmt"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/store"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// canaryWorld is a function at generation gen (promoted up to promoted)
// whose instances are given as generation -> how many, all running on a
// ready node unless notReady names a generation whose instances are
// starting.
func canaryWorld(canaryPct string, gen, promoted int64, replicas int32, insts map[int64]int, notReady int64) (*v1.Workload, []store.Versioned[*v1.Instance], *world) {
	wl := &v1.Workload{Name: "fn", Generation: gen, PromotedGeneration: promoted, Spec: &v1.WorkloadSpec{
		Replicas: replicas, Canary: canaryPct, MaxSurge: "1", MaxUnavailable: "1", Http: &v1.HttpTrigger{Route: "/fn"}}}
	w := &world{statuses: map[string]*v1.InstanceStatus{}, alive: map[string]bool{"n1": true}, draining: map[string]bool{}}
	var out []store.Versioned[*v1.Instance]
	for g := int64(1); g <= gen; g++ {
		for i := range insts[g] {
			id := fmt.Sprintf("fn-g%d-%d", g, i)
			state := v1.InstanceState_INSTANCE_STATE_RUNNING
			if g == notReady {
				state = v1.InstanceState_INSTANCE_STATE_STARTING
			}
			out = append(out, store.Versioned[*v1.Instance]{Name: id, Value: &v1.Instance{Id: id, Workload: "fn", Generation: g, Node: "n1",
				CreatedUnixNano: int64(g*100 + int64(i))}})
			w.statuses[id] = &v1.InstanceStatus{Id: id, Node: "n1", State: state}
		}
	}
	return wl, out, w
}

func TestCanaryDiff(t *testing.T) {
	tests := []struct {
		name       string
		canary     string
		gen        int64
		promoted   int64
		replicas   int32
		insts      map[int64]int
		notReady   int64
		wantCreate int
		wantGone   map[int64]int // generation -> instances removed
	}{
		{name: "a 25% canary of 4 replicas creates 1 and keeps the 4 old",
			canary: "25%", gen: 2, promoted: 1, replicas: 4, insts: map[int64]int{1: 4}, wantCreate: 1},
		{name: "a ready canary keeps the old ones until promoted",
			canary: "25%", gen: 2, promoted: 1, replicas: 4, insts: map[int64]int{1: 4, 2: 1}},
		{name: "10% of 4 rounds up to 1 replica",
			canary: "10%", gen: 2, promoted: 1, replicas: 4, insts: map[int64]int{1: 4}, wantCreate: 1},
		{name: "60% of 4 rounds up to 3 replicas",
			canary: "60%", gen: 2, promoted: 1, replicas: 4, insts: map[int64]int{1: 4, 2: 1}, wantCreate: 2},
		{name: "old instances that are not ready stay: they cannot be replaced before promotion",
			canary: "25%", gen: 2, promoted: 1, replicas: 4, insts: map[int64]int{1: 4, 2: 1}, notReady: 1},
		{name: "a canary above its share after a scale-down loses the extra",
			canary: "50%", gen: 2, promoted: 1, replicas: 2, insts: map[int64]int{1: 2, 2: 2}, wantGone: map[int64]int{2: 1}},
		{name: "an unpromoted canary that a newer generation replaced goes",
			canary: "25%", gen: 3, promoted: 1, replicas: 4, insts: map[int64]int{1: 4, 2: 1}, wantCreate: 1, wantGone: map[int64]int{2: 1}},
		{name: "old instances beyond replicas go after a scale-down, the least useful first",
			canary: "25%", gen: 2, promoted: 1, replicas: 2, insts: map[int64]int{1: 4, 2: 1}, notReady: 0, wantGone: map[int64]int{1: 2}},
		{name: "scaled to zero: the rolling update removes everything",
			canary: "25%", gen: 2, promoted: 1, replicas: 0, insts: map[int64]int{1: 2, 2: 1}, wantGone: map[int64]int{1: 2, 2: 1}},
		// Promoted (or no canary): the rolling update with surge 1 and
		// unavailable 1 of 4: 1 new available + 4 old - 3 = 2 old go; they
		// run until their node has stopped them, so with 1 new the 4+1
		// allowed run already and none comes yet.
		{name: "once promoted the rolling update goes on",
			canary: "25%", gen: 2, promoted: 2, replicas: 4, insts: map[int64]int{1: 4, 2: 1}, wantCreate: 0, wantGone: map[int64]int{1: 2}},
		{name: "without a canary the rolling update runs",
			canary: "", gen: 2, promoted: 1, replicas: 4, insts: map[int64]int{1: 4}, wantCreate: 1, wantGone: map[int64]int{1: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wl, insts, w := canaryWorld(tc.canary, tc.gen, tc.promoted, tc.replicas, tc.insts, tc.notReady)
			c := &controller{} // min ready 0: running is available
			gone, create := c.diff(wl, insts, w)
			goneByGen := map[int64]int{}
			for _, g := range gone {
				goneByGen[g.Value.GetGeneration()]++
			}
			if create != tc.wantCreate || fmt.Sprint(goneByGen) != fmt.Sprint(orEmpty(tc.wantGone)) {
				t.Errorf("diff created %d and removed %v, want %d and %v", create, goneByGen, tc.wantCreate, orEmpty(tc.wantGone))
			}
		})
	}
}

func orEmpty(m map[int64]int) map[int64]int {
	if m == nil {
		return map[int64]int{}
	}
	return m
}

func TestCanaryPromotesItselfAfterItsDuration(t *testing.T) {
	wl, insts, w := canaryWorld("25%", 2, 1, 4, map[int64]int{1: 4, 2: 1}, 0)
	wl.Spec.CanaryDurationMs = time.Minute.Milliseconds()
	c := &controller{minReady: time.Second}
	// Just seen running: not available before min-ready.
	if at, ok := c.promoteAt(wl, insts, w); ok {
		t.Fatalf("promoteAt = %v before the canary is available", at)
	}
	age := func(d time.Duration) {
		for _, marks := range c.readySince {
			for id, m := range marks {
				m.since = m.since.Add(-d)
				marks[id] = m
			}
		}
	}
	// Running for 30s as this controller saw it: available for 29s,
	// promoted 31s from now.
	age(30 * time.Second)
	if at, ok := c.promoteAt(wl, insts, w); !ok || time.Until(at) < 30*time.Second || time.Until(at) > 31*time.Second {
		t.Fatalf("promoteAt = %v, %v; want 31s from now", at, ok)
	}
	age(time.Minute)
	if at, ok := c.promoteAt(wl, insts, w); !ok || at.After(time.Now()) {
		t.Fatalf("promoteAt = %v, %v; want a time past", at, ok)
	}
	// Not while the canary is not ready, not without a duration, not
	// once promoted, and not without old instances (a first deploy).
	notReady, notReadyInsts, notReadyW := canaryWorld("25%", 2, 1, 4, map[int64]int{1: 4, 2: 1}, 2)
	notReady.Spec.CanaryDurationMs = 1
	noDuration, ndInsts, ndW := canaryWorld("25%", 2, 1, 4, map[int64]int{1: 4, 2: 1}, 0)
	promoted, pInsts, pW := canaryWorld("25%", 2, 2, 4, map[int64]int{1: 4, 2: 1}, 0)
	promoted.Spec.CanaryDurationMs = 1
	first, fInsts, fW := canaryWorld("25%", 1, 0, 4, map[int64]int{1: 4}, 0)
	first.Spec.CanaryDurationMs = 1
	for name, tc := range map[string]struct {
		wl    *v1.Workload
		insts []store.Versioned[*v1.Instance]
		w     *world
	}{
		"not ready": {notReady, notReadyInsts, notReadyW}, "no duration": {noDuration, ndInsts, ndW},
		"promoted": {promoted, pInsts, pW}, "first deploy": {first, fInsts, fW},
	} {
		if at, ok := (&controller{}).promoteAt(tc.wl, tc.insts, tc.w); ok {
			t.Errorf("%s: promoteAt = %v, want none", name, at)
		}
	}
}
