package gateway

import (
	"maps"
	"slices"
	"strings"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// snapshot is a cluster written out for unit tests of the table: a
// source that reads these records as the cache would (the same ordering
// and the same liveness rules). Tests against the cache itself, over a
// real etcd, are in follow_test.go.
type snapshot struct {
	workloads []*v1.Workload
	instances []*v1.Instance
	statuses  map[string]*v1.InstanceStatus
	nodes     map[string]*v1.Node
	alive     map[string]bool
}

var _ source = snapshot{}

// build is a full pass over s after prev (nil: the first).
func build(s snapshot, prev *table) *table {
	if prev == nil {
		prev = &table{}
	}
	return newBuilder().update(s.read, prev, work{all: true}, nil)
}

func (s snapshot) read(fn func(source)) { fn(s) }

func (s snapshot) Workload(name string) (cache.Workload, bool) {
	for _, wl := range s.workloads {
		if wl.GetName() == name {
			return cache.Workload{Value: wl}, true
		}
	}
	return cache.Workload{}, false
}

func (s snapshot) Functions() []cache.Workload {
	var out []cache.Workload
	for _, wl := range s.workloads {
		if wl.GetSpec().GetHttp().GetRoute() != "" {
			out = append(out, cache.Workload{Value: wl})
		}
	}
	slices.SortFunc(out, func(a, b cache.Workload) int { return strings.Compare(a.Value.GetName(), b.Value.GetName()) })
	return out
}

func (s snapshot) instancesWhere(match func(*v1.Instance) bool) []cache.Instance {
	var out []cache.Instance
	for _, inst := range s.instances {
		if match(inst) {
			st := s.statuses[inst.GetId()]
			out = append(out, cache.Instance{Value: inst, Status: st, State: cache.EffectiveState(inst, st, s.alive[inst.GetNode()])})
		}
	}
	slices.SortFunc(out, func(a, b cache.Instance) int { return strings.Compare(a.Value.GetId(), b.Value.GetId()) })
	return out
}

func (s snapshot) InstancesOf(workload string) []cache.Instance {
	return s.instancesWhere(func(i *v1.Instance) bool { return i.GetWorkload() == workload })
}

func (s snapshot) InstancesOn(node string) []cache.Instance {
	return s.instancesWhere(func(i *v1.Instance) bool { return i.GetNode() == node })
}

func (s snapshot) Node(name string) (cache.Node, bool) {
	n, ok := s.nodes[name]
	if !ok {
		return cache.Node{}, false
	}
	return cache.Node{Value: n, Alive: s.alive[name]}, true
}

func (s snapshot) Nodes() []cache.Node {
	var out []cache.Node
	for _, name := range slices.Sorted(maps.Keys(s.nodes)) {
		n, _ := s.Node(name)
		out = append(out, n)
	}
	return out
}
