package gateway

import (
	"encoding/base64"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/internal/canary"
	"github.com/wasmorch/wasmorch/internal/httptrigger"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// table is one immutable snapshot of the routes and their ready replicas;
// the gateway swaps in a new one whenever the cluster changes.
type table struct {
	routes []*route // host-specific first, then longest prefix first
}

// route is one function's trigger and the replicas that can serve it.
type route struct {
	workload  string
	settings  httptrigger.Settings
	autoscale *v1.Autoscale // nil: a fixed replica count
	replicas  []*replica

	// coldTargets are the workers that can serve the function without a
	// replica (a cold start, see cold.go), those that last held one of
	// its replicas (its module compiled there) first; empty when it
	// cannot be served so (not autoscaled, or not a Wasm module).
	coldTargets []*target
	// workloadHeader and specHeader name the function to those workers.
	workloadHeader, specHeader string
	placement                  *v1.Placement
	// waking is when the latest wake-up from zero began (unix nano), 0
	// once the function has a replica.
	waking *atomic.Int64
	// canary: generation is the workload's; canaryPercent, set while that
	// generation waits for promotion, is the share of the requests its
	// replicas (fresh) get when older ones (older) remain too.
	generation    int64
	canaryPercent int
	fresh, older  []*replica
}

// target is a worker's function server: its address, and its handler when
// the worker runs in this process (`wasmorch up`), which the gateway then
// calls directly instead of over HTTP.
type target struct {
	node  string
	addr  string
	local http.Handler
	warm  bool // a cold target that held a replica of the function
}

// byName returns the route of a workload, or nil.
func (t *table) byName(workload string) *route {
	for _, r := range t.routes {
		if r.workload == workload {
			return r
		}
	}
	return nil
}

// replica is one ready instance of a function and where its worker's
// function server listens. Replicas keep their identity across tables so
// that in-flight counts survive a rebuild.
type replica struct {
	instance   string
	generation int64 // the instance's
	target
	inFlight atomic.Int64
}

// snapshot is what a table is built from.
type snapshot struct {
	workloads []*v1.Workload
	instances []*v1.Instance
	statuses  map[string]*v1.InstanceStatus
	nodes     map[string]*v1.Node
	alive     map[string]bool
	local     map[string]http.Handler // function servers in this process, by node
}

// build makes a table, reusing the replicas of prev by instance id.
func build(s snapshot, prev *table) *table {
	old := map[string]*replica{}
	prevRoutes := map[string]*route{}
	if prev != nil {
		for _, r := range prev.routes {
			prevRoutes[r.workload] = r
			for _, rep := range r.replicas {
				old[rep.instance] = rep
			}
		}
	}
	byWorkload := map[string]*route{}
	t := &table{}
	for _, wl := range s.workloads {
		trig := wl.GetSpec().GetHttp()
		if trig == nil || trig.GetRoute() == "" {
			continue
		}
		r := &route{workload: wl.GetName(), settings: httptrigger.Effective(trig), placement: wl.GetSpec().GetPlacement(),
			generation: wl.GetGeneration()}
		if canary.Unpromoted(wl) {
			r.canaryPercent = canary.Percent(wl)
		}
		if as := wl.GetSpec().GetAutoscale(); as != nil && as.GetMaxReplicas() > 0 {
			r.autoscale = as
		}
		r.waking = &atomic.Int64{}
		if p := prevRoutes[wl.GetName()]; p != nil {
			r.waking = p.waking
		}
		// A container, or a module that may run as its fallback container,
		// cannot start cold in a fresh sandbox: it waits for a replica. So
		// does one with config or secret files, which only an instance's
		// assignment carries (the workload's spec names them).
		if r.autoscale != nil && wl.GetSpec().GetModuleDigest() != "" && wl.GetSpec().GetKind() != "container" &&
			wl.GetSpec().GetFallbackImage() == "" && wl.GetSpec().GetFallbackArchiveDigest() == "" &&
			len(wl.GetSpec().GetConfigFiles())+len(wl.GetSpec().GetSecretFiles()) == 0 {
			if b, err := proto.Marshal(wl.GetSpec()); err == nil {
				r.workloadHeader = wl.GetName() + "/" + strconv.FormatInt(wl.GetGeneration(), 10)
				r.specHeader = base64.RawURLEncoding.EncodeToString(b)
			}
		}
		byWorkload[wl.GetName()] = r
		t.routes = append(t.routes, r)
	}
	for _, inst := range s.instances {
		r := byWorkload[inst.GetWorkload()]
		if r == nil || inst.GetSpec().GetHttp() == nil {
			continue
		}
		node, st := inst.GetNode(), s.statuses[inst.GetId()]
		if node == "" || !s.alive[node] || st == nil || st.GetNode() != node ||
			st.GetState() != v1.InstanceState_INSTANCE_STATE_RUNNING || st.GetUnhealthy() {
			continue
		}
		addr := s.nodes[node].GetHttpAddress()
		if addr == "" {
			continue
		}
		rep := old[inst.GetId()]
		if rep == nil || rep.addr != addr || rep.local != s.local[node] {
			rep = &replica{instance: inst.GetId(), generation: inst.GetGeneration(), target: target{node: node, addr: addr, local: s.local[node]}}
		}
		r.replicas = append(r.replicas, rep)
	}
	for _, r := range t.routes {
		r.splitCanary()
		if len(r.replicas) > 0 {
			r.waking.Store(0) // woken: the next time at zero wakes it again
		}
		if r.specHeader != "" {
			r.coldTargets = coldTargets(r, prevRoutes[r.workload], s)
		}
	}
	sort.SliceStable(t.routes, func(i, j int) bool {
		a, b := t.routes[i].settings, t.routes[j].settings
		if (a.Host != "") != (b.Host != "") {
			return a.Host != ""
		}
		if len(a.Route) != len(b.Route) {
			return len(a.Route) > len(b.Route)
		}
		return a.Route < b.Route
	})
	return t
}

// coldTargets lists the ready workers with a function server and the Wasm
// runtime: those holding (or, in prev, last holding) a replica of r first,
// then those in this process, then the rest by name.
func coldTargets(r, prev *route, s snapshot) []*target {
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
	for name, n := range s.nodes {
		if !s.alive[name] || n.GetHttpAddress() == "" || n.GetCordoned() || n.GetDraining() ||
			!slices.Contains(n.GetRuntimes(), "wasm") || !placeable(r.placement, n) {
			continue
		}
		out = append(out, &target{node: name, addr: n.GetHttpAddress(), local: s.local[name], warm: warm[name]})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.warm != b.warm {
			return a.warm
		}
		if (a.local != nil) != (b.local != nil) {
			return a.local != nil
		}
		return a.node < b.node
	})
	return out
}

// placeable reports whether a node meets a workload's placement rules
// (node selector, architectures, operating systems).
func placeable(p *v1.Placement, n *v1.Node) bool {
	for k, v := range p.GetSelector() {
		if n.GetLabels()[k] != v {
			return false
		}
	}
	return (len(p.GetArch()) == 0 || slices.Contains(p.GetArch(), n.GetArch())) &&
		(len(p.GetOs()) == 0 || slices.Contains(p.GetOs(), n.GetOs()))
}

// match finds the route for a request's host and path: routes for the
// request's host before routes for any host, and the longest prefix first.
func (t *table) match(host, path string) *route {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(host)
	for _, r := range t.routes {
		if r.settings.Host != "" && r.settings.Host != host {
			continue
		}
		if httptrigger.Matches(r.settings.Route, path) {
			return r
		}
	}
	return nil
}

// pick chooses a replica by the power of two choices: of two at random,
// the one with fewer requests in flight; skip holds replicas already tried.
// During a canary, the choice is made in the canary's pool or the older
// one (canaryPool).
func (r *route) pick(skip map[*replica]bool) *replica {
	if r.canaryPercent > 0 {
		return twoChoices(r.canaryPool(skip))
	}
	return twoChoices(untried(r.replicas, skip))
}

// untried is reps without those in skip.
func untried(reps []*replica, skip map[*replica]bool) []*replica {
	if len(skip) == 0 {
		return reps
	}
	var out []*replica
	for _, rep := range reps {
		if !skip[rep] {
			out = append(out, rep)
		}
	}
	return out
}

// twoChoices is the power of two choices among cands; nil if it is empty.
func twoChoices(cands []*replica) *replica {
	switch len(cands) {
	case 0:
		return nil
	case 1:
		return cands[0]
	}
	i := rand.IntN(len(cands))
	j := rand.IntN(len(cands) - 1)
	if j >= i {
		j++
	}
	a, b := cands[i], cands[j]
	if b.inFlight.Load() < a.inFlight.Load() {
		return b
	}
	return a
}
