package cache

import (
	"testing"

	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
)

// TestNoResumeFromBeforeTheFirstList: the changes made before the cache
// listed the cluster are not in its history, so a node session or a watch
// from a revision before the list must start over (a full set; expired),
// while one from the list's revision on resumes.
func TestNoResumeFromBeforeTheFirstList(t *testing.T) {
	f := newFixture(t, 0)
	wl := workload("w", 1, 0)
	before := f.put(store.WorkloadsPrefix+"w", wl)
	f.put(store.InstancesPrefix+"w-1", instance(wl, "w-1", "n1"))
	listed := f.put(store.InstancesPrefix+"w-2", instance(wl, "w-2", "n1"))
	f.start()
	f.put(store.InstancesPrefix+"w-3", instance(wl, "w-3", "n1"))
	f.sync()

	w, full, _, resumed := f.c.WatchNode("n1", before)
	w.Close()
	if resumed || len(full) != 3 {
		t.Errorf("a node watch from revision %d, before the list: resumed %v with a full set of %d; want the full set of 3", before, resumed, len(full))
	}
	if _, err := f.c.Watch(before, nil); !errdefs.IsExpired(err) {
		t.Errorf("a watch from before the list: %v, want expired", err)
	}

	w, _, _, resumed = f.c.WatchNode("n1", listed)
	got, _ := w.Take()
	w.Close()
	if !resumed || len(got) != 1 || got[0] != "w-3" {
		t.Errorf("a node watch from the list's revision: resumed %v with %v; want w-3", resumed, got)
	}
}
