package controller

import (
	"fmt"
	"testing"

	"github.com/wasmorch/wasmorch/controlplane/store"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestRollbackRemovesTheFailedRevisionFirst: rolling back to revision 1
// (as generation 3) after a canary of generation 2, the canary's instance
// goes before any of generation 1's, which run the spec rolled out again.
func TestRollbackRemovesTheFailedRevisionFirst(t *testing.T) {
	specOf := func(v string) *v1.WorkloadSpec {
		return &v1.WorkloadSpec{Replicas: 4, Http: &v1.HttpTrigger{Route: "/shop"}, Env: []*v1.EnvVar{{Name: "V", Value: v}}}
	}
	w := &world{statuses: map[string]*v1.InstanceStatus{}, alive: map[string]bool{"n1": true}}
	var old []store.Versioned[*v1.Instance]
	add := func(id string, gen int64, spec *v1.WorkloadSpec, created int64) {
		old = append(old, store.Versioned[*v1.Instance]{Name: id, Value: &v1.Instance{Id: id, Generation: gen, Node: "n1", Spec: spec, CreatedUnixNano: created}})
		w.statuses[id] = &v1.InstanceStatus{Id: id, Node: "n1", State: v1.InstanceState_INSTANCE_STATE_RUNNING}
	}
	for i := range 4 {
		add(fmt.Sprintf("shop-v1-%d", i), 1, specOf("1"), int64(i))
	}
	canarySpec := specOf("2")
	canarySpec.Canary = "25%"
	add("shop-canary", 2, canarySpec, 10)

	rollback := specOf("1")
	rollback.Replicas = 4
	// 5 ready - 3 = 2 go; they run until stopped, so that 5 (4 + the
	// surge of 1) run already: none is created yet.
	remove, create := rollingStep(4, 1, 1, 0, 0, old, rollback, w)
	if len(remove) != 2 || remove[0].Name != "shop-canary" || remove[1].Value.GetGeneration() != 1 || create != 0 {
		var names []string
		for _, r := range remove {
			names = append(names, r.Name)
		}
		t.Fatalf("rollingStep removes %v and creates %d; want shop-canary first, then one of generation 1, and none created", names, create)
	}
}

func TestErrorRateFailure(t *testing.T) {
	gens := func(m map[int64][2]int64) *v1.FunctionLoad {
		l := &v1.FunctionLoad{Generations: map[int64]*v1.GenerationRequests{}}
		for g, n := range m {
			l.Generations[g] = &v1.GenerationRequests{Requests: n[0], Errors: n[1]}
		}
		return l
	}
	for _, tt := range []struct {
		name  string
		loads []*v1.FunctionLoad
		fails bool
	}{
		{"no requests yet", nil, false},
		{"too few requests to judge", []*v1.FunctionLoad{gens(map[int64][2]int64{2: {19, 19}})}, false},
		{"failing, summed over gateways", []*v1.FunctionLoad{gens(map[int64][2]int64{2: {10, 5}}), gens(map[int64][2]int64{1: {500, 0}, 2: {10, 5}})}, true},
		{"under the limit", []*v1.FunctionLoad{gens(map[int64][2]int64{1: {100, 0}, 2: {100, 10}})}, false},
		{"as bad as the old one", []*v1.FunctionLoad{gens(map[int64][2]int64{1: {100, 40}, 2: {100, 50}})}, false},
		{"much worse than the old one", []*v1.FunctionLoad{gens(map[int64][2]int64{1: {100, 10}, 2: {100, 30}})}, true},
		{"a newer generation's failures are not counted", []*v1.FunctionLoad{gens(map[int64][2]int64{2: {100, 0}, 3: {100, 100}})}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			why := errorRateFailure(2, tt.loads, 10)
			if (why != "") != tt.fails {
				t.Errorf("errorRateFailure = %q, want a failure: %v", why, tt.fails)
			}
		})
	}
	if why := errorRateFailure(2, []*v1.FunctionLoad{gens(map[int64][2]int64{1: {100, 0}, 2: {40, 12}})}, 10); why != "generation 2 failed 12 of 40 requests (30%, over the limit of 10%; the older generations: 0%)" {
		t.Errorf("errorRateFailure says %q", why)
	}
	if why := errorRateFailure(2, []*v1.FunctionLoad{gens(map[int64][2]int64{2: {40, 40}})}, 0); why != "" {
		t.Errorf("a limit of 0 turns it off; got %q", why)
	}
}

// TestNewInstancesHaveDistinctIDs: 20,000 replicas created at once (five
// random characters would repeat a few times among them) all get IDs of
// their own, none of them one the workload has already.
func TestNewInstancesHaveDistinctIDs(t *testing.T) {
	wl := &v1.Workload{Name: "big", Generation: 1, Spec: &v1.WorkloadSpec{Replicas: 20000}}
	taken := map[string]bool{"big-bbbbb": true}
	for range 20000 {
		inst := newInstance(wl, taken)
		if taken[inst.GetId()] {
			t.Fatalf("ID %s given twice", inst.GetId())
		}
		taken[inst.GetId()] = true
	}
}

// TestRollingStepCountsWhatStillRunsAgainstSurge: instances that go stay
// in the total until their nodes have stopped them, as do those already
// terminating, so that no more than replicas+surge ever run at once.
func TestRollingStepCountsWhatStillRunsAgainstSurge(t *testing.T) {
	spec := &v1.WorkloadSpec{Replicas: 2}
	running := func(w *world, id string, gen int64) store.Versioned[*v1.Instance] {
		w.statuses[id] = &v1.InstanceStatus{Id: id, Node: "n1", State: v1.InstanceState_INSTANCE_STATE_RUNNING}
		return store.Versioned[*v1.Instance]{Name: id, Value: &v1.Instance{Id: id, Generation: gen, Node: "n1", Spec: spec}}
	}
	for _, tt := range []struct {
		name        string
		terminating int // of the workload, still running on a ready node
		ready       int // new instances available (of 1 current)
		wantRemove  int
		wantCreate  int
	}{
		// replicas 2, surge 1, unavailable 0; 2 old ready, 1 new.
		{name: "a new one not yet available: nothing goes, nothing comes", ready: 0, wantRemove: 0, wantCreate: 0},
		{name: "the new one available: an old one goes, and keeps its place until stopped", ready: 1, wantRemove: 1, wantCreate: 0},
		{name: "while one terminates, none comes", terminating: 1, ready: 1, wantRemove: 0, wantCreate: 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			w := &world{statuses: map[string]*v1.InstanceStatus{}, alive: map[string]bool{"n1": true},
				nodeByName: map[string]*v1.Node{"n1": {Name: "n1"}}, terminating: tt.terminating}
			old := []store.Versioned[*v1.Instance]{running(w, "old-1", 1), running(w, "old-2", 1)}
			if tt.terminating > 0 {
				old = old[:2-tt.terminating] // the terminating one is no longer among the workload's instances
			}
			remove, create := rollingStep(2, 1, 0, 1, tt.ready, old, spec, w)
			if len(remove) != tt.wantRemove || create != tt.wantCreate {
				t.Errorf("rollingStep removes %d and creates %d; want %d and %d", len(remove), create, tt.wantRemove, tt.wantCreate)
			}
		})
	}
}
