package cache

import (
	"slices"
	"sort"
	"strings"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Reader reads a consistent view of the cache: everything it returns is
// as of one revision. It is valid only inside the function given to Read.
type Reader struct{ s *state }

// Read runs fn with the cache held still: fn must be quick (it delays the
// cache's own updates) and must not keep the Reader.
func (c *Cache) Read(fn func(r Reader)) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	fn(Reader{c.s})
}

// Rev is the revision of the view.
func (r Reader) Rev() int64 { return r.s.rev }

// Workload returns a workload by name.
func (r Reader) Workload(name string) (Workload, bool) {
	w, ok := r.s.workloads[name]
	return w, ok
}

// Instance returns an instance by ID.
func (r Reader) Instance(id string) (Instance, bool) {
	e, ok := r.s.instances[id]
	return e, ok
}

// Node returns a node by name, with its liveness and usage.
func (r Reader) Node(name string) (Node, bool) {
	n, ok := r.s.nodes[name]
	if !ok {
		return Node{}, false
	}
	return r.s.nodeView(name, n), true
}

// NodeAlive says whether a node's liveness key exists.
func (r Reader) NodeAlive(name string) bool { return r.s.isAlive(name) }

// InstancesOf returns a workload's instances (lost ones included), by ID.
func (r Reader) InstancesOf(workload string) []Instance {
	return r.s.collect(r.s.byWorkload[workload])
}

// InstancesOn returns the instances bound to a node (lost ones included),
// by ID.
func (r Reader) InstancesOn(node string) []Instance { return r.s.instancesOn(node) }

// CountOn is how many instances are bound to a node (lost ones included).
func (r Reader) CountOn(node string) int { return len(r.s.byNode[node]) }

// Pending returns the instances not placed on a node yet, by ID.
func (r Reader) Pending() []Instance {
	return r.s.collect(r.s.byState[v1.InstanceState_INSTANCE_STATE_PENDING])
}

// InState returns the instances in a state (as EffectiveState has it), by
// ID.
func (r Reader) InState(s v1.InstanceState) []Instance {
	return r.s.collect(r.s.byState[s])
}

// Nodes returns every node, by name.
func (r Reader) Nodes() []Node {
	out := make([]Node, 0, len(r.s.nodes))
	r.s.nodeNames.Ascend(func(name string) bool {
		out = append(out, r.s.nodeView(name, r.s.nodes[name]))
		return true
	})
	return out
}

// Workloads returns every workload, by name.
func (r Reader) Workloads() []Workload {
	out := make([]Workload, 0, len(r.s.workloads))
	r.s.workloadNames.Ascend(func(name string) bool {
		out = append(out, r.s.workloads[name])
		return true
	})
	return out
}

// Functions returns the workloads with an HTTP route, by name.
func (r Reader) Functions() []Workload {
	names := make([]string, 0, len(r.s.functions))
	for n := range r.s.functions {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]Workload, 0, len(names))
	for _, n := range names {
		out = append(out, r.s.workloads[n])
	}
	return out
}

// RouteHolder names the workload whose trigger has the same route as t.
func (r Reader) RouteHolder(t *v1.HttpTrigger) (string, bool) {
	name, ok := r.s.routes[RouteKey(t)]
	return name, ok
}

// PortHolder names the workload that serves on node port port (a plain
// TCP service, services: --tcp).
func (r Reader) PortHolder(port int32) (string, bool) {
	name, ok := r.s.tcpPorts[port]
	return name, ok
}

// ConfigUsers and SecretUsers return the workloads that reference a config
// or secret (as environment or files), by name.
func (r Reader) ConfigUsers(name string) []Workload { return r.s.users(r.s.configUsers[name]) }

// SecretUsers: see ConfigUsers.
func (r Reader) SecretUsers(name string) []Workload { return r.s.users(r.s.secretUsers[name]) }

// Config returns a config.
func (r Reader) Config(name string) (StoredConfig, bool) {
	c, ok := r.s.configs[name]
	return c, ok
}

// Secret returns a secret (sealed).
func (r Reader) Secret(name string) (StoredSecret, bool) {
	s, ok := r.s.secrets[name]
	return s, ok
}

// Configs and Secrets return every config or secret, by name.
func (r Reader) Configs() []StoredConfig {
	out := make([]StoredConfig, 0, len(r.s.configs))
	for _, c := range r.s.configs {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Value.GetName() < out[j].Value.GetName() })
	return out
}

// Secrets: see Configs.
func (r Reader) Secrets() []StoredSecret {
	out := make([]StoredSecret, 0, len(r.s.secrets))
	for _, s := range r.s.secrets {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Value.GetName() < out[j].Value.GetName() })
	return out
}

// Loads returns every gateway's latest load report of a function.
func (r Reader) Loads(workload string) []*v1.FunctionLoad {
	m := r.s.loads[workload]
	out := make([]*v1.FunctionLoad, 0, len(m))
	for _, l := range m {
		out = append(out, l)
	}
	return out
}

// AllLoads returns every load report, by function.
func (r Reader) AllLoads() map[string][]*v1.FunctionLoad {
	out := make(map[string][]*v1.FunctionLoad, len(r.s.loads))
	for w := range r.s.loads {
		out[w] = r.Loads(w)
	}
	return out
}

// OrphanStatuses names the status reports whose instance is gone (a
// report that raced the instance's deletion).
func (r Reader) OrphanStatuses() []string {
	out := make([]string, 0, len(r.s.orphans))
	for id := range r.s.orphans {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// EachInstance calls fn with every instance until it returns false (a
// periodic sweep, such as the blob collector's: it holds the cache still
// for as long as it takes).
func (r Reader) EachInstance(fn func(Instance) bool) {
	for _, e := range r.s.instances {
		if !fn(e) {
			return
		}
	}
}

// Counts returns the cache's size: workloads, instances, nodes.
func (r Reader) Counts() (workloads, instances, nodes int) {
	return len(r.s.workloads), len(r.s.instances), len(r.s.nodes)
}

// InstanceFilter selects instances in a list; empty fields select all.
type InstanceFilter struct {
	Workload string
	Node     string
	States   []v1.InstanceState
}

func (f InstanceFilter) matches(e Instance) bool {
	return (f.Workload == "" || e.Value.GetWorkload() == f.Workload) &&
		(f.Node == "" || e.Value.GetNode() == f.Node) &&
		(len(f.States) == 0 || slices.Contains(f.States, e.State))
}

// smallSet is the size under which a page is taken from a sorted copy of
// an index rather than by walking every instance in order.
const smallSet = 10_000

// ListInstances returns up to limit instances matching f whose ID sorts
// after after, in ID order, and whether more follow. It costs the page,
// plus the index it walks: a node's instances, a workload's, or every
// instance in a state.
func (r Reader) ListInstances(f InstanceFilter, after string, limit int) (page []Instance, more bool) {
	s := r.s
	take := func(e Instance) bool {
		if !f.matches(e) {
			return true
		}
		if len(page) == limit {
			more = true
			return false
		}
		page = append(page, e)
		return true
	}
	fromSet := func(set map[string]struct{}) {
		ids := make([]string, 0, len(set))
		for id := range set {
			if id > after {
				ids = append(ids, id)
			}
		}
		sort.Strings(ids)
		for _, id := range ids {
			if !take(s.instances[id]) {
				return
			}
		}
	}
	switch {
	case f.Node != "":
		fromSet(s.byNode[f.Node])
	case f.Workload != "" && len(s.byWorkload[f.Workload]) < smallSet:
		fromSet(s.byWorkload[f.Workload])
	case f.Workload != "":
		// A big workload: its IDs start with its name and a dash.
		prefix := f.Workload + "-"
		s.instanceIDs.AscendGreaterOrEqual(max(after+"\x00", prefix), func(id string) bool {
			return strings.HasPrefix(id, prefix) && take(s.instances[id])
		})
	case len(f.States) > 0 && s.stateCount(f.States) < smallSet:
		set := map[string]struct{}{}
		for _, st := range f.States {
			for id := range s.byState[st] {
				set[id] = struct{}{}
			}
		}
		fromSet(set)
	default:
		s.instanceIDs.AscendGreaterOrEqual(after+"\x00", func(id string) bool { return take(s.instances[id]) })
	}
	return page, more
}

// ListWorkloads returns up to limit workloads whose name sorts after
// after, and whether more follow.
func (r Reader) ListWorkloads(after string, limit int) (page []Workload, more bool) {
	r.s.workloadNames.AscendGreaterOrEqual(after+"\x00", func(name string) bool {
		if len(page) == limit {
			more = true
			return false
		}
		page = append(page, r.s.workloads[name])
		return true
	})
	return page, more
}

// ListNodes returns up to limit nodes that match (nil: all) whose name
// sorts after after, and whether more follow.
func (r Reader) ListNodes(match func(Node) bool, after string, limit int) (page []Node, more bool) {
	r.s.nodeNames.AscendGreaterOrEqual(after+"\x00", func(name string) bool {
		n := r.s.nodeView(name, r.s.nodes[name])
		if match != nil && !match(n) {
			return true
		}
		if len(page) == limit {
			more = true
			return false
		}
		page = append(page, n)
		return true
	})
	return page, more
}

// --- the same, one call each ---

// Workload returns a workload by name.
func (c *Cache) Workload(name string) (w Workload, ok bool) {
	c.Read(func(r Reader) { w, ok = r.Workload(name) })
	return w, ok
}

// Instance returns an instance by ID.
func (c *Cache) Instance(id string) (e Instance, ok bool) {
	c.Read(func(r Reader) { e, ok = r.Instance(id) })
	return e, ok
}

// Node returns a node by name.
func (c *Cache) Node(name string) (n Node, ok bool) {
	c.Read(func(r Reader) { n, ok = r.Node(name) })
	return n, ok
}

// NodeAlive says whether a node's liveness key exists.
func (c *Cache) NodeAlive(name string) (ok bool) {
	c.Read(func(r Reader) { ok = r.NodeAlive(name) })
	return ok
}

// InstancesOf returns a workload's instances.
func (c *Cache) InstancesOf(workload string) (out []Instance) {
	c.Read(func(r Reader) { out = r.InstancesOf(workload) })
	return out
}

// InstancesOn returns the instances bound to a node.
func (c *Cache) InstancesOn(node string) (out []Instance) {
	c.Read(func(r Reader) { out = r.InstancesOn(node) })
	return out
}

// Nodes returns every node.
func (c *Cache) Nodes() (out []Node) {
	c.Read(func(r Reader) { out = r.Nodes() })
	return out
}

// Workloads returns every workload.
func (c *Cache) Workloads() (out []Workload) {
	c.Read(func(r Reader) { out = r.Workloads() })
	return out
}

// --- state helpers (under the lock) ---

func (s *state) collect(set map[string]struct{}) []Instance {
	ids := make([]string, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := make([]Instance, 0, len(ids))
	for _, id := range ids {
		out = append(out, s.instances[id])
	}
	return out
}

func (s *state) instancesOn(node string) []Instance { return s.collect(s.byNode[node]) }

func (s *state) nodeView(name string, n Node) Node {
	n.Lease, n.Alive = s.alive[name]
	n.Used = s.usage[name]
	n.Ports = s.ports[name]
	return n
}

func (s *state) users(set map[string]struct{}) []Workload {
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]Workload, 0, len(names))
	for _, n := range names {
		if w, ok := s.workloads[n]; ok {
			out = append(out, w)
		}
	}
	return out
}

func (s *state) stateCount(states []v1.InstanceState) int {
	n := 0
	for _, st := range states {
		n += len(s.byState[st])
	}
	return n
}
