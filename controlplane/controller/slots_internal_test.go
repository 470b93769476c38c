package controller

import (
	"fmt"
	"slices"
	"testing"

	"github.com/wasmorch/wasmorch/controlplane/store"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// State: the replica slots of a workload with per-instance volumes, as a
// StatefulSet keeps its ordinals. A rolling update gives each new
// instance the slot of an old one and stops the old one of a slot whose
// replacement is there first; a scale-down removes the highest slots; a
// scale-up and a lost instance's replacement take the lowest free ones.
func TestReplicaSlotsFollowTheirVolumes(t *testing.T) {
	spec := &v1.WorkloadSpec{Replicas: 2, Volumes: []*v1.VolumeMount{{Name: "data", Path: "/data", PerInstance: true}}}
	w := &world{statuses: map[string]*v1.InstanceStatus{}, alive: map[string]bool{"n1": true},
		nodeByName: map[string]*v1.Node{"n1": {Name: "n1"}}, draining: map[string]bool{}}
	running := func(id string, gen int64, slot int32) store.Versioned[*v1.Instance] {
		w.statuses[id] = &v1.InstanceStatus{Id: id, Node: "n1", State: v1.InstanceState_INSTANCE_STATE_RUNNING}
		return store.Versioned[*v1.Instance]{Name: id, Value: &v1.Instance{Id: id, Generation: gen, Node: "n1", Spec: spec, Ordinal: slot, CreatedUnixNano: int64(slot) + 1}}
	}
	c := &controller{}
	names := func(l []store.Versioned[*v1.Instance]) []string {
		var out []string
		for _, i := range l {
			out = append(out, i.Name)
		}
		return out
	}

	// Generation 2 rolls out over old-0 and old-1 (surge 1, unavailable 0 for 2 replicas).
	wl := &v1.Workload{Name: "db", Generation: 2, Spec: spec}
	live := []store.Versioned[*v1.Instance]{running("old-0", 1, 0), running("old-1", 1, 1)}
	remove, create := c.diff(wl, live, w)
	if len(remove) != 0 || create != 1 {
		t.Fatalf("first step removes %v, creates %d; want 0 and 1", names(remove), create)
	}
	if slots := slotsFor(wl, live, remove, w, create); !slices.Equal(slots, []int32{0}) {
		t.Fatalf("the first new instance gets slot %v, want [0]", slots)
	}
	// new-0 runs: old-0, whose slot it has, goes (not old-1).
	live = append(live, running("new-0", 2, 0))
	remove, _ = c.diff(wl, live, w)
	if !slices.Equal(names(remove), []string{"old-0"}) {
		t.Fatalf("with new-0 available, %v go; want old-0, whose slot new-0 has", names(remove))
	}
	// old-0 stopped: the next one takes slot 1.
	live = []store.Versioned[*v1.Instance]{live[1], live[2]}
	remove, create = c.diff(wl, live, w)
	if slots := slotsFor(wl, live, remove, w, create); create != 1 || !slices.Equal(slots, []int32{1}) {
		t.Fatalf("then %d created in slots %v; want 1 in slot 1", create, slots)
	}

	// With max surge 0 the old one goes first, and its replacement takes
	// its slot once it is gone.
	surge0 := &v1.Workload{Name: "db", Generation: 3, Spec: spec}
	surge0.Spec = &v1.WorkloadSpec{Replicas: 2, Volumes: spec.Volumes, MaxSurge: "0", MaxUnavailable: "1"}
	live = []store.Versioned[*v1.Instance]{running("b-0", 2, 0), running("b-1", 2, 1)}
	remove, create = c.diff(surge0, live, w)
	if len(remove) != 1 || create != 0 {
		t.Fatalf("surge 0: removes %v, creates %d; want one removed first", names(remove), create)
	}
	gone := remove[0].Value.GetOrdinal()
	live = slices.DeleteFunc(live, func(i store.Versioned[*v1.Instance]) bool { return i.Name == remove[0].Name })
	remove, create = c.diff(surge0, live, w)
	if slots := slotsFor(surge0, live, remove, w, create); create != 1 || !slices.Equal(slots, []int32{gone}) {
		t.Fatalf("surge 0: the replacement gets slots %v (%d created), want [%d], the slot of the one stopped", slots, create, gone)
	}

	// Scale 4 → 2 removes slots 3 and 2, whichever are older or ready.
	scaled := &v1.Workload{Name: "db", Generation: 2, Spec: &v1.WorkloadSpec{Replicas: 2, Volumes: spec.Volumes}}
	live = nil
	for _, s := range []int32{2, 0, 3, 1} {
		live = append(live, running(fmt.Sprintf("s-%d", s), 2, s))
	}
	delete(w.statuses, "s-0") // not ready: would go first without slots
	remove, _ = c.diff(scaled, live, w)
	if got := names(remove); !slices.Equal(got, []string{"s-3", "s-2"}) {
		t.Errorf("scaling down removes %v, want s-3 and s-2", got)
	}

	// Scale back up to 4, with slot 1's instance lost (not among the live
	// ones): slots 1, 2 and 3 are filled again, 1 first.
	scaled.Spec.Replicas = 4
	live = []store.Versioned[*v1.Instance]{running("s-0", 2, 0)}
	remove, create = c.diff(scaled, live, w)
	if slots := slotsFor(scaled, live, remove, w, create); !slices.Equal(slots, []int32{1, 2, 3}) {
		t.Errorf("scaling up fills slots %v, want [1 2 3]", slots)
	}
}
