package cache

import (
	"maps"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/store"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestNodePortsFollowTCPInstances: a node's ports (what the scheduler
// keeps one plain TCP service instance per) follow the instances bound to
// it, listed or watched: a status report keeps them, a lost instance or a
// deleted one frees its port; a map handed to a reader is never changed
// under it. PortHolder names the workload that serves on a port.
func TestNodePortsFollowTCPInstances(t *testing.T) {
	f := newFixture(t, 0)
	svc := workload("svc", 1, 2)
	svc.Spec.Port, svc.Spec.Tcp = 9000, true
	f.put(store.WorkloadsPrefix+"svc", svc)
	f.put(store.NodesPrefix+"n1", &v1.Node{Name: "n1"})
	f.alive("n1")
	f.put(store.InstancesPrefix+"svc-a", instance(svc, "svc-a", "n1"))
	f.start()

	ports := func() map[int32]int32 {
		n, _ := f.c.Node("n1")
		return n.Ports
	}
	listed := ports()
	if !maps.Equal(listed, map[int32]int32{9000: 1}) {
		t.Fatalf("listed: n1's ports %v, want 9000 once", listed)
	}
	f.c.Read(func(r Reader) {
		if h, ok := r.PortHolder(9000); !ok || h != "svc" {
			t.Errorf("PortHolder(9000) = %q, %v; want svc", h, ok)
		}
	})

	f.put(store.StatusPrefix+"svc-a", running("svc-a", "n1"))
	other := workload("other", 1, 1) // no port
	f.put(store.WorkloadsPrefix+"other", other)
	f.put(store.InstancesPrefix+"other-a", instance(other, "other-a", "n1"))
	f.put(store.InstancesPrefix+"svc-b", instance(svc, "svc-b", "n1")) // (as from before the scheduler knew)
	f.sync()
	if got := ports(); !maps.Equal(got, map[int32]int32{9000: 2}) {
		t.Fatalf("two instances of svc on n1 and one without a port: %v", got)
	}
	if !maps.Equal(listed, map[int32]int32{9000: 1}) {
		t.Fatalf("the map read before changed under its reader: %v", listed)
	}
	lost := proto.Clone(instance(svc, "svc-b", "n1")).(*v1.Instance)
	lost.LostUnixNano = 1
	f.put(store.InstancesPrefix+"svc-b", lost)
	f.sync()
	if got := ports(); !maps.Equal(got, map[int32]int32{9000: 1}) {
		t.Fatalf("after svc-b was lost: %v", got)
	}
	f.del(store.InstancesPrefix + "svc-a")
	f.sync()
	if got := ports(); len(got) != 0 {
		t.Fatalf("after svc-a was deleted: %v, want none", got)
	}

	// The port follows the workload's spec.
	moved := proto.Clone(svc).(*v1.Workload)
	moved.Spec.Port = 9001
	f.put(store.WorkloadsPrefix+"svc", moved)
	f.sync()
	f.c.Read(func(r Reader) {
		if _, ok := r.PortHolder(9000); ok {
			t.Errorf("9000 still held after svc moved to 9001")
		}
		if h, _ := r.PortHolder(9001); h != "svc" {
			t.Errorf("PortHolder(9001) = %q, want svc", h)
		}
	})
}
