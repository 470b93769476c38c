package cache

import (
	"maps"
	"strings"

	"github.com/google/btree"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/scheduler"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/httptrigger"
	"github.com/wasmorch/wasmorch/internal/resources"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// state is everything the cache holds, and its indexes. Every method
// runs under the cache's write lock; each change it makes is appended to
// out, the batch that subscribers and the history receive.
type state struct {
	rev int64

	workloads     map[string]Workload
	workloadNames *btree.BTreeG[string]
	functions     map[string]struct{} // workloads with an HTTP route
	routes        map[string]string   // route key (RouteKey) → workload
	tcpPorts      map[int32]string    // node port of a plain TCP service → workload
	configUsers   map[string]map[string]struct{}
	secretUsers   map[string]map[string]struct{}

	instances   map[string]Instance
	instanceIDs *btree.BTreeG[string]
	byWorkload  map[string]map[string]struct{}
	byNode      map[string]map[string]struct{} // bound instances, lost ones included
	byState     map[v1.InstanceState]map[string]struct{}
	orphans     map[string]orphan // statuses of instances that are not (or no longer) here

	nodes     map[string]Node // Alive and Used are filled in on reads
	nodeNames *btree.BTreeG[string]
	alive     map[string]int64 // node → the lease of its liveness key
	usage     map[string]Usage
	ports     map[string]map[int32]int32 // node → Node.Ports (copy on write)

	configs map[string]StoredConfig
	secrets map[string]StoredSecret
	loads   map[string]map[string]*v1.FunctionLoad // workload → member → report

	specs map[specKey]*v1.WorkloadSpec

	// countsChanged collects the workloads whose counts a batch changed.
	countsChanged map[string]struct{}
	out           []Change
}

type orphan struct {
	status *v1.InstanceStatus
	modRev int64
}

// specKey names the spec instances of one workload generation share
// (interning: an instance record carries a copy of its spec, and 200,000
// copies of a few specs should cost a few specs).
type specKey struct {
	workload   string
	generation int64
}

func newState() *state {
	less := func(a, b string) bool { return a < b }
	return &state{
		workloads: map[string]Workload{}, workloadNames: btree.NewG(32, less),
		functions: map[string]struct{}{}, routes: map[string]string{}, tcpPorts: map[int32]string{},
		configUsers: map[string]map[string]struct{}{}, secretUsers: map[string]map[string]struct{}{},
		instances: map[string]Instance{}, instanceIDs: btree.NewG(32, less),
		byWorkload: map[string]map[string]struct{}{}, byNode: map[string]map[string]struct{}{},
		byState: map[v1.InstanceState]map[string]struct{}{}, orphans: map[string]orphan{},
		nodes: map[string]Node{}, nodeNames: btree.NewG(32, less), alive: map[string]int64{}, usage: map[string]Usage{}, ports: map[string]map[int32]int32{},
		configs: map[string]StoredConfig{}, secrets: map[string]StoredSecret{}, loads: map[string]map[string]*v1.FunctionLoad{},
		specs:         map[specKey]*v1.WorkloadSpec{},
		countsChanged: map[string]struct{}{},
	}
}

// RouteKey identifies an HTTP route claim: two triggers with the same key
// are the same route (httptrigger.SameRoute).
func RouteKey(t *v1.HttpTrigger) string {
	return strings.ToLower(t.GetHost()) + " " + httptrigger.NormalizeRoute(t.GetRoute())
}

// apply applies one put (value non-nil) or delete of key at modRev.
func (s *state) apply(key string, value []byte, modRev, lease int64, deleted bool) {
	switch {
	case strings.HasPrefix(key, store.InstancesPrefix):
		id := key[len(store.InstancesPrefix):]
		if deleted {
			s.deleteInstance(id, modRev)
		} else if inst := decode(value, &v1.Instance{}); inst != nil {
			s.putInstance(id, inst, modRev)
		}
	case strings.HasPrefix(key, store.StatusPrefix):
		id := key[len(store.StatusPrefix):]
		if deleted {
			s.putStatus(id, nil, 0, modRev)
		} else if st := decode(value, &v1.InstanceStatus{}); st != nil {
			s.putStatus(id, st, modRev, modRev)
		}
	case strings.HasPrefix(key, store.WorkloadsPrefix):
		name := key[len(store.WorkloadsPrefix):]
		if deleted {
			s.deleteWorkload(name, modRev)
		} else if wl := decode(value, &v1.Workload{}); wl != nil {
			s.putWorkload(name, wl, modRev)
		}
	case strings.HasPrefix(key, store.NodesPrefix):
		name := key[len(store.NodesPrefix):]
		if deleted {
			s.deleteNode(name, modRev)
		} else if n := decode(value, &v1.Node{}); n != nil {
			s.putNode(name, n, modRev)
		}
	case strings.HasPrefix(key, store.AlivePrefix):
		s.setAlive(key[len(store.AlivePrefix):], !deleted, lease, modRev)
	case strings.HasPrefix(key, store.LoadsPrefix):
		workload, member, ok := strings.Cut(key[len(store.LoadsPrefix):], "/")
		if !ok {
			return
		}
		var l *v1.FunctionLoad
		if !deleted {
			if l = decode(value, &v1.FunctionLoad{}); l == nil {
				return
			}
		}
		s.setLoad(workload, member, l, modRev)
	case strings.HasPrefix(key, store.ConfigsPrefix):
		name := key[len(store.ConfigsPrefix):]
		if deleted {
			delete(s.configs, name)
		} else if cfg := decode(value, &v1.Config{}); cfg != nil {
			s.configs[name] = StoredConfig{Value: cfg, ModRevision: modRev}
		}
		s.emit(Change{Rev: modRev, Kind: KindConfig, Name: name, Deleted: deleted})
	case strings.HasPrefix(key, store.SecretsPrefix):
		name := key[len(store.SecretsPrefix):]
		if deleted {
			delete(s.secrets, name)
		} else if sec := decode(value, &v1.Secret{}); sec != nil {
			s.secrets[name] = StoredSecret{Value: sec, ModRevision: modRev}
		}
		s.emit(Change{Rev: modRev, Kind: KindSecret, Name: name, Deleted: deleted})
	}
}

// decode parses a record; a record that does not parse is left out (it
// was not written by this version, or not by wasmorch).
func decode[T proto.Message](b []byte, v T) T {
	if err := proto.Unmarshal(b, v); err != nil {
		var zero T
		return zero
	}
	return v
}

func (s *state) emit(c Change) { s.out = append(s.out, c) }

// --- workloads ---

func (s *state) putWorkload(name string, wl *v1.Workload, modRev int64) {
	old, existed := s.workloads[name]
	e := Workload{Value: wl, ModRevision: modRev}
	if existed {
		e.Counts = old.Counts
		s.unindexWorkload(name, old.Value)
	} else {
		s.workloadNames.ReplaceOrInsert(name)
	}
	s.workloads[name] = e
	s.indexWorkload(name, wl)
	if !existed || old.Value.GetGeneration() != wl.GetGeneration() {
		s.recount(name)
	}
	s.emit(Change{Rev: modRev, Kind: KindWorkload, Name: name})
}

func (s *state) deleteWorkload(name string, modRev int64) {
	old, ok := s.workloads[name]
	if !ok {
		return
	}
	s.unindexWorkload(name, old.Value)
	delete(s.workloads, name)
	s.workloadNames.Delete(name)
	for id := range s.byWorkload[name] {
		e := s.instances[id]
		e.counted = 0
		s.instances[id] = e
	}
	for k := range s.specs {
		if k.workload == name {
			delete(s.specs, k)
		}
	}
	delete(s.countsChanged, name)
	s.emit(Change{Rev: modRev, Kind: KindWorkload, Name: name, Deleted: true, Prev: old.Value})
}

func (s *state) indexWorkload(name string, wl *v1.Workload) {
	spec := wl.GetSpec()
	if t := spec.GetHttp(); t.GetRoute() != "" {
		s.functions[name] = struct{}{}
		s.routes[RouteKey(t)] = name
	}
	if p := resources.NodePort(spec); p != 0 {
		s.tcpPorts[p] = name
	}
	for _, c := range append(append([]string{}, spec.GetConfigs()...), spec.GetConfigFiles()...) {
		addTo(s.configUsers, c, name)
	}
	for _, c := range append(append([]string{}, spec.GetSecrets()...), spec.GetSecretFiles()...) {
		addTo(s.secretUsers, c, name)
	}
}

func (s *state) unindexWorkload(name string, wl *v1.Workload) {
	spec := wl.GetSpec()
	if t := spec.GetHttp(); t.GetRoute() != "" {
		delete(s.functions, name)
		if s.routes[RouteKey(t)] == name {
			delete(s.routes, RouteKey(t))
		}
	}
	if p := resources.NodePort(spec); p != 0 && s.tcpPorts[p] == name {
		delete(s.tcpPorts, p)
	}
	for _, c := range append(append([]string{}, spec.GetConfigs()...), spec.GetConfigFiles()...) {
		removeFrom(s.configUsers, c, name)
	}
	for _, c := range append(append([]string{}, spec.GetSecrets()...), spec.GetSecretFiles()...) {
		removeFrom(s.secretUsers, c, name)
	}
}

// recount computes a workload's counts anew from its instances: when its
// generation changes, what counts as current changes for all of them.
func (s *state) recount(name string) {
	wl, ok := s.workloads[name]
	if !ok {
		return
	}
	var c Counts
	for id := range s.byWorkload[name] {
		e := s.instances[id]
		e.counted = countsOf(e.Value, e.Status, s.isAlive(e.Value.GetNode()), wl.Value.GetGeneration())
		s.instances[id] = e
		c.add(e.counted, 1)
	}
	if c != wl.Counts {
		wl.Counts = c
		s.workloads[name] = wl
		s.countsChanged[name] = struct{}{}
	}
}

// --- instances ---

func (s *state) putInstance(id string, inst *v1.Instance, modRev int64) {
	inst = s.intern(inst)
	e, existed := s.instances[id]
	prevNode := ""
	if existed {
		prevNode = e.Value.GetNode()
		s.detach(id, &e)
	} else {
		s.instanceIDs.ReplaceOrInsert(id)
		if o, ok := s.orphans[id]; ok {
			e.Status, e.StatusModRevision = o.status, o.modRev
			delete(s.orphans, id)
		}
	}
	e.Value, e.ModRevision = inst, modRev
	s.attach(id, &e)
	s.instances[id] = e
	s.emit(Change{Rev: modRev, Kind: KindInstance, Name: id, Workload: inst.GetWorkload(), Node: inst.GetNode(), PrevNode: prevNode})
}

func (s *state) deleteInstance(id string, modRev int64) {
	e, ok := s.instances[id]
	if !ok {
		return
	}
	s.detach(id, &e)
	delete(s.instances, id)
	s.instanceIDs.Delete(id)
	if e.Status != nil {
		s.orphans[id] = orphan{status: e.Status, modRev: e.StatusModRevision}
	}
	s.emit(Change{Rev: modRev, Kind: KindInstance, Name: id, Deleted: true, Prev: e.Value,
		Workload: e.Value.GetWorkload(), PrevNode: e.Value.GetNode()})
}

// putStatus sets (st non-nil) or clears an instance's status.
func (s *state) putStatus(id string, st *v1.InstanceStatus, statusRev, modRev int64) {
	e, ok := s.instances[id]
	if !ok {
		if st == nil {
			delete(s.orphans, id)
		} else {
			s.orphans[id] = orphan{status: st, modRev: statusRev}
		}
		return
	}
	s.detach(id, &e)
	e.Status, e.StatusModRevision = st, statusRev
	s.attach(id, &e)
	s.instances[id] = e
	node := e.Value.GetNode()
	s.emit(Change{Rev: modRev, Kind: KindInstance, Name: id, Workload: e.Value.GetWorkload(), Node: node, PrevNode: node, Observed: true})
}

// detach removes what an instance entry adds to the indexes, counts and
// usage; attach adds it back, computed from the entry as it is now.
func (s *state) detach(id string, e *Instance) {
	inst := e.Value
	removeFrom(s.byWorkload, inst.GetWorkload(), id)
	if n := inst.GetNode(); n != "" {
		removeFrom(s.byNode, n, id)
	}
	if set := s.byState[e.State]; set != nil {
		delete(set, id)
	}
	if e.counted != 0 {
		if wl, ok := s.workloads[inst.GetWorkload()]; ok {
			wl.Counts.add(e.counted, -1)
			s.workloads[inst.GetWorkload()] = wl
			s.countsChanged[inst.GetWorkload()] = struct{}{}
		}
		e.counted = 0
	}
	if e.usedNode != "" {
		u := s.usage[e.usedNode]
		u.Instances--
		u.MemoryBytes -= e.usedMem
		u.CPUMillis -= e.usedMilli
		if u == (Usage{}) {
			delete(s.usage, e.usedNode)
		} else {
			s.usage[e.usedNode] = u
		}
		if e.usedPort != 0 {
			s.holdPort(e.usedNode, e.usedPort, -1)
		}
		e.usedNode, e.usedMem, e.usedMilli, e.usedPort = "", 0, 0, 0
	}
}

// holdPort adds delta holders of port on node, replacing the node's
// ports map (readers may hold the old one).
func (s *state) holdPort(node string, port, delta int32) {
	next := make(map[int32]int32, len(s.ports[node])+1)
	maps.Copy(next, s.ports[node])
	if next[port] += delta; next[port] <= 0 {
		delete(next, port)
	}
	if len(next) == 0 {
		delete(s.ports, node)
	} else {
		s.ports[node] = next
	}
}

func (s *state) attach(id string, e *Instance) {
	inst := e.Value
	node := inst.GetNode()
	alive := s.isAlive(node)
	addTo(s.byWorkload, inst.GetWorkload(), id)
	if node != "" {
		addTo(s.byNode, node, id)
	}
	e.State = EffectiveState(inst, e.Status, alive)
	set := s.byState[e.State]
	if set == nil {
		set = map[string]struct{}{}
		s.byState[e.State] = set
	}
	set[id] = struct{}{}
	if wl, ok := s.workloads[inst.GetWorkload()]; ok {
		e.counted = countsOf(inst, e.Status, alive, wl.Value.GetGeneration())
		if e.counted != 0 {
			wl.Counts.add(e.counted, 1)
			s.workloads[inst.GetWorkload()] = wl
			s.countsChanged[inst.GetWorkload()] = struct{}{}
		}
	}
	if node != "" && inst.GetLostUnixNano() == 0 {
		e.usedNode, e.usedMem, e.usedMilli = node, scheduler.InstanceMemoryRequest(inst), inst.GetSpec().GetCpuMillis()
		u := s.usage[node]
		u.Instances++
		u.MemoryBytes += e.usedMem
		u.CPUMillis += e.usedMilli
		s.usage[node] = u
		if e.usedPort = resources.NodePort(inst.GetSpec()); e.usedPort != 0 {
			s.holdPort(node, e.usedPort, 1)
		}
	}
}

// intern makes instances of one workload generation with equal specs
// share one spec message.
func (s *state) intern(inst *v1.Instance) *v1.Instance {
	spec := inst.GetSpec()
	if spec == nil {
		return inst
	}
	k := specKey{inst.GetWorkload(), inst.GetGeneration()}
	if shared, ok := s.specs[k]; ok && proto.Equal(shared, spec) {
		inst.Spec = shared
		return inst
	}
	s.specs[k] = spec
	return inst
}

// --- nodes ---

func (s *state) putNode(name string, n *v1.Node, modRev int64) {
	if _, ok := s.nodes[name]; !ok {
		s.nodeNames.ReplaceOrInsert(name)
	}
	s.nodes[name] = Node{Value: n, ModRevision: modRev}
	s.emit(Change{Rev: modRev, Kind: KindNode, Name: name})
}

func (s *state) deleteNode(name string, modRev int64) {
	old, ok := s.nodes[name]
	if !ok {
		return
	}
	delete(s.nodes, name)
	s.nodeNames.Delete(name)
	s.emit(Change{Rev: modRev, Kind: KindNode, Name: name, Deleted: true, Prev: old.Value})
}

func (s *state) isAlive(node string) bool {
	if node == "" {
		return false
	}
	_, ok := s.alive[node]
	return ok
}

// setAlive records a node's liveness; a change re-evaluates its instances
// (their state and whether they count as ready).
func (s *state) setAlive(node string, alive bool, lease, modRev int64) {
	was := s.isAlive(node)
	if alive {
		s.alive[node] = lease
	} else {
		delete(s.alive, node)
	}
	if was == alive {
		return
	}
	for id := range s.byNode[node] {
		e := s.instances[id]
		before, bits := e.State, e.counted
		s.detach(id, &e)
		s.attach(id, &e)
		s.instances[id] = e
		if e.State != before || e.counted != bits {
			s.emit(Change{Rev: modRev, Kind: KindInstance, Name: id, Workload: e.Value.GetWorkload(), Node: node, PrevNode: node})
		}
	}
	s.emit(Change{Rev: modRev, Kind: KindNode, Name: node})
}

// --- loads ---

func (s *state) setLoad(workload, member string, l *v1.FunctionLoad, modRev int64) {
	m := s.loads[workload]
	if l == nil {
		delete(m, member)
		if len(m) == 0 {
			delete(s.loads, workload)
		}
	} else {
		if m == nil {
			m = map[string]*v1.FunctionLoad{}
			s.loads[workload] = m
		}
		m[member] = l
	}
	s.emit(Change{Rev: modRev, Kind: KindLoad, Name: workload})
}

// flushCounts turns the workloads whose counts changed into changes, once
// per batch.
func (s *state) flushCounts(rev int64) {
	for name := range s.countsChanged {
		if _, ok := s.workloads[name]; ok {
			s.emit(Change{Rev: rev, Kind: KindWorkload, Name: name, CountsOnly: true})
		}
		delete(s.countsChanged, name)
	}
}

func addTo(m map[string]map[string]struct{}, k, v string) {
	set := m[k]
	if set == nil {
		set = map[string]struct{}{}
		m[k] = set
	}
	set[v] = struct{}{}
}

func removeFrom(m map[string]map[string]struct{}, k, v string) {
	set := m[k]
	if set == nil {
		return
	}
	delete(set, v)
	if len(set) == 0 {
		delete(m, k)
	}
}
