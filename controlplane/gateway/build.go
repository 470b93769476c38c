package gateway

import (
	"encoding/base64"
	"maps"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/internal/canary"
	"github.com/wasmorch/wasmorch/internal/httptrigger"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// The route table follows the member's cache change by change: the
// cache's changes mark routes dirty (a function's record or one of its
// instances changed, or a node that its replicas are on), and a pass
// rebuilds only those, so that one change costs the instances of the
// function it touches, not those of the cluster. A node change may also
// change every function's cold targets: those are recomputed once per
// pass, and only when the set of nodes that can take a cold start
// changed. A rare full pass is the safety net.

// source is what routes are built from: the member's cache, read under
// its lock (cache.Reader).
type source interface {
	Workload(name string) (cache.Workload, bool)
	Functions() []cache.Workload
	InstancesOf(workload string) []cache.Instance
	InstancesOn(node string) []cache.Instance
	Node(name string) (cache.Node, bool)
	Nodes() []cache.Node
}

var _ source = cache.Reader{}

// readChunk bounds the instances one pass reads under one hold of the
// cache's lock, so that a full pass does not keep the cache from
// applying changes meanwhile.
const readChunk = 10_000

// work is what changed since the latest pass.
type work struct {
	all       bool                // everything: the first pass and the periodic one
	workloads map[string]struct{} // functions (or former ones) whose record or instances changed
	nodes     map[string]struct{} // nodes whose record, liveness or local function server changed
}

// builder collects the changes the cache reports and turns them into
// tables.
type builder struct {
	mu      sync.Mutex
	pending work
	kick    chan struct{} // signalled when pending gets work

	// Owned by the goroutine that runs passes (update).
	cands  []candidate // the nodes that can take a cold start, by name
	listed bool        // cands has been read
	stats  buildStats
}

// buildStats counts what passes did, in total: what a change costs.
type buildStats struct {
	passes    int // passes that had work
	routes    int // routes rebuilt
	instances int // instance records read
	nodes     int // node records read
}

func newBuilder() *builder { return &builder{kick: make(chan struct{}, 1)} }

// note marks what a batch of cache changes makes dirty. It runs on the
// cache's goroutine: it only records and signals.
func (b *builder) note(changes []cache.Change) {
	marked := false
	b.mu.Lock()
	for _, c := range changes {
		switch c.Kind {
		case cache.KindWorkload:
			if c.CountsOnly {
				continue // its instances' own changes say more
			}
			if wl, ok := c.Prev.(*v1.Workload); c.Deleted && (!ok || wl.GetSpec().GetHttp().GetRoute() == "") {
				continue // was not a function
			}
			add(&b.pending.workloads, c.Name)
		case cache.KindInstance:
			if inst, ok := c.Prev.(*v1.Instance); c.Workload == "" || c.Deleted && (!ok || inst.GetSpec().GetHttp() == nil) {
				continue // was never a replica
			}
			add(&b.pending.workloads, c.Workload)
		case cache.KindNode:
			add(&b.pending.nodes, c.Name)
		default:
			continue
		}
		marked = true
	}
	b.mu.Unlock()
	if marked {
		b.signal()
	}
}

// markAll asks for a full pass.
func (b *builder) markAll() {
	b.mu.Lock()
	b.pending.all = true
	b.mu.Unlock()
	b.signal()
}

// markNode asks for a pass over what a node serves (its local function
// server changed).
func (b *builder) markNode(node string) {
	b.mu.Lock()
	add(&b.pending.nodes, node)
	b.mu.Unlock()
	b.signal()
}

func (b *builder) signal() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// take returns the pending work and clears it.
func (b *builder) take() work {
	select {
	case <-b.kick: // this pass takes what the signal was for
	default:
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	w := b.pending
	b.pending = work{}
	return w
}

func add(set *map[string]struct{}, name string) {
	if *set == nil {
		*set = map[string]struct{}{}
	}
	(*set)[name] = struct{}{}
}

// update returns the table that follows prev once the work w is done,
// reading the cluster through read (which holds the cache still while
// its function runs); prev itself when no route changed. Routes that did
// not change are prev's, and so are the replicas that did not: their
// in-flight counts go on.
func (b *builder) update(read func(func(source)), prev *table, w work, local map[string]*localServer) *table {
	if !w.all && len(w.workloads) == 0 && len(w.nodes) == 0 && b.listed {
		return prev
	}
	b.stats.passes++
	dirty := maps.Clone(w.workloads)
	if dirty == nil {
		dirty = map[string]struct{}{}
	}
	coldAll := false
	if w.all || len(w.nodes) > 0 || !b.listed {
		read(func(src source) {
			nodes := src.Nodes()
			b.stats.nodes += len(nodes)
			cands := candidates(nodes, local)
			if !b.listed || !sameCandidates(cands, b.cands) {
				coldAll = true
			}
			b.cands, b.listed = cands, true
			for n := range w.nodes {
				on := src.InstancesOn(n)
				b.stats.instances += len(on)
				for _, e := range on {
					dirty[e.Value.GetWorkload()] = struct{}{}
				}
			}
			if w.all {
				for _, f := range src.Functions() {
					dirty[f.Value.GetName()] = struct{}{}
				}
			}
		})
	}
	if w.all {
		for _, r := range prev.routes {
			dirty[r.workload] = struct{}{}
		}
	}

	changed := map[string]*route{}
	names := slices.Sorted(maps.Keys(dirty))
	for i := 0; i < len(names); {
		read(func(src source) {
			nodes := map[string]cache.Node{}
			for budget := readChunk; i < len(names) && budget > 0; i++ {
				old := prev.byName(names[i])
				r, n := b.route(src, names[i], old, local, nodes)
				budget -= n + 1
				if r != old {
					changed[names[i]] = r
				}
			}
		})
	}
	if coldAll {
		for _, r := range prev.routes {
			if _, done := dirty[r.workload]; done || r.specHeader == "" {
				continue
			}
			if ct := coldTargets(r, r, b.cands); !sameTargets(ct, r.coldTargets) {
				nr := *r
				nr.coldTargets = ct
				changed[r.workload] = &nr
			}
		}
	}
	if len(changed) == 0 {
		return prev
	}
	return prev.with(changed)
}

// route builds a workload's route from src (nil when it has no HTTP
// route, or is gone), and returns old when nothing in it changed; read
// is how many instances it read.
func (b *builder) route(src source, name string, old *route, local map[string]*localServer, nodes map[string]cache.Node) (r *route, read int) {
	wl, ok := src.Workload(name)
	if !ok || wl.Value.GetSpec().GetHttp().GetRoute() == "" {
		return nil, 0
	}
	b.stats.routes++
	insts := src.InstancesOf(name)
	b.stats.instances += len(insts)
	fn := recordOf(name, wl.Value, old)
	r = &route{routeRecord: fn, replicas: replicasOf(src, insts, old, local, nodes)}
	r.splitCanary()
	if len(r.replicas) > 0 {
		fn.waking.Store(0) // woken: the next time at zero wakes it again
	}
	if fn.specHeader != "" {
		r.coldTargets = coldTargets(r, old, b.cands)
	}
	if old != nil && old.routeRecord == fn && slices.Equal(old.replicas, r.replicas) && sameTargets(old.coldTargets, r.coldTargets) {
		return old, len(insts)
	}
	return r, len(insts)
}

// recordOf is what a route takes from the workload's record wl: old's
// when the record is the same.
func recordOf(name string, wl *v1.Workload, old *route) *routeRecord {
	if old != nil && old.record == wl {
		return old.routeRecord
	}
	spec := wl.GetSpec()
	fn := &routeRecord{record: wl, workload: name, settings: httptrigger.Effective(spec.GetHttp()), placement: spec.GetPlacement(),
		generation: wl.GetGeneration(), waking: &atomic.Int64{}}
	if old != nil {
		fn.waking = old.waking
	}
	if canary.Unpromoted(wl) {
		fn.canary = canary.Percent(wl)
	}
	if as := spec.GetAutoscale(); as != nil && as.GetMaxReplicas() > 0 {
		fn.autoscale = as
	}
	// A container, or a module that may run as its fallback container,
	// cannot start cold in a fresh sandbox: it waits for a replica. So
	// does one with config or secret files, which only an instance's
	// assignment carries (the workload's spec names them).
	if fn.autoscale != nil && spec.GetModuleDigest() != "" && spec.GetKind() != "container" &&
		spec.GetFallbackImage() == "" && spec.GetFallbackArchiveDigest() == "" &&
		len(spec.GetConfigFiles())+len(spec.GetSecretFiles()) == 0 {
		if b, err := proto.Marshal(spec); err == nil {
			fn.workloadHeader = name + "/" + strconv.FormatInt(wl.GetGeneration(), 10)
			fn.specHeader = base64.RawURLEncoding.EncodeToString(b)
		}
	}
	return fn
}

// replicasOf is the ready replicas among a function's instances: running
// (and not unhealthy) by the report of the node they are bound to, which
// is alive and has a function server, and not terminating (its node is
// draining it). old's replicas are kept for the
// instances that are still there, on the same address.
func replicasOf(src source, insts []cache.Instance, old *route, local map[string]*localServer, nodes map[string]cache.Node) []*replica {
	var had map[string]*replica
	if old != nil && len(old.replicas) > 0 {
		had = make(map[string]*replica, len(old.replicas))
		for _, rep := range old.replicas {
			had[rep.instance] = rep
		}
	}
	var out []*replica
	for _, e := range insts {
		inst, st := e.Value, e.Status
		node := inst.GetNode()
		if inst.GetSpec().GetHttp() == nil || node == "" || inst.GetTerminatingUnixNano() != 0 || st == nil || st.GetNode() != node ||
			st.GetState() != v1.InstanceState_INSTANCE_STATE_RUNNING || st.GetUnhealthy() {
			continue
		}
		n, ok := nodes[node]
		if !ok {
			n, _ = src.Node(node)
			nodes[node] = n
		}
		addr := n.Value.GetHttpAddress()
		if !n.Alive || addr == "" {
			continue
		}
		rep := had[inst.GetId()]
		if rep == nil || rep.addr != addr || rep.local != local[node] {
			rep = &replica{instance: inst.GetId(), generation: inst.GetGeneration(), target: target{node: node, addr: addr, local: local[node]}}
		}
		out = append(out, rep)
	}
	return out
}

// candidate is a node that can take a cold start: alive, with a function
// server and the Wasm runtime, neither cordoned nor draining. Its targets
// are shared by every route that has it.
type candidate struct {
	name  string
	node  *v1.Node // the cache's (shared: never modified)
	local *localServer
	cold  *target // warm: false
	warm  *target // warm: true
}

func candidates(nodes []cache.Node, local map[string]*localServer) []candidate {
	var out []candidate
	for _, n := range nodes {
		v := n.Value
		if !n.Alive || v.GetHttpAddress() == "" || v.GetCordoned() || v.GetDraining() || !slices.Contains(v.GetRuntimes(), "wasm") {
			continue
		}
		t := target{node: v.GetName(), addr: v.GetHttpAddress(), local: local[v.GetName()]}
		w := t
		w.warm = true
		out = append(out, candidate{name: v.GetName(), node: v, local: t.local, cold: &t, warm: &w})
	}
	return out
}

func sameCandidates(a, b []candidate) bool {
	return slices.EqualFunc(a, b, func(x, y candidate) bool { return x.name == y.name && x.node == y.node && x.local == y.local })
}

// coldTargets lists the candidates that meet r's placement: those holding
// (or, in prev, last holding) a replica of r first, then those in this
// process, then the rest by name.
func coldTargets(r, prev *route, cands []candidate) []*target {
	warm := map[string]bool{}
	for _, rep := range r.replicas {
		warm[rep.node] = true
	}
	if len(warm) == 0 && prev != nil {
		for _, t := range prev.coldTargets {
			if t.warm {
				warm[t.node] = true
			}
		}
	}
	var out []*target
	for _, c := range cands {
		if !placeable(r.placement, c.node) {
			continue
		}
		if warm[c.name] {
			out = append(out, c.warm)
		} else {
			out = append(out, c.cold)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.warm != b.warm {
			return a.warm
		}
		return a.local != nil && b.local == nil
	})
	return out
}

func sameTargets(a, b []*target) bool {
	return slices.EqualFunc(a, b, func(x, y *target) bool { return *x == *y })
}
