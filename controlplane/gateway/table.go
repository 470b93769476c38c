package gateway

import (
	"cmp"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/wasmorch/wasmorch/internal/httptrigger"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// table is one immutable snapshot of the routes and their ready replicas;
// the gateway swaps in a new one whenever a route changes (see build.go).
type table struct {
	routes []*route       // host-specific first, then longest prefix first
	pos    map[string]int // workload → its index in routes
}

// route is one function's trigger and the replicas that can serve it. A
// route is never modified once in a table: a change makes a new one.
type route struct {
	*routeRecord
	replicas []*replica

	// coldTargets are the workers that can serve the function without a
	// replica (a cold start, see local.go), those that last held one of
	// its replicas (its module compiled there) first; empty when it
	// cannot be served so (not autoscaled, or not a Wasm module).
	coldTargets []*target
	// canaryPercent, set while the workload's generation waits for
	// promotion and both pools have replicas, is the share of the
	// requests the replicas of that generation (fresh) get when older
	// ones (older) remain too.
	canaryPercent int
	fresh, older  []*replica
}

// routeRecord is what a route takes from its workload's record: shared by
// every route built from the same record, so that a change to the
// function's replicas does not recompute it.
type routeRecord struct {
	record    *v1.Workload // the cache's (shared: never modified)
	workload  string
	settings  httptrigger.Settings
	autoscale *v1.Autoscale // nil: a fixed replica count
	placement *v1.Placement
	// workloadHeader and specHeader name the function to cold targets;
	// specHeader is empty when it cannot start cold.
	workloadHeader, specHeader string
	// waking is when the latest wake-up from zero began (unix nano), 0
	// once the function has a replica; kept across records.
	waking *atomic.Int64
	// generation is the workload's; canary its canary percentage while
	// that generation waits for promotion (canary.Unpromoted), else 0.
	generation int64
	canary     int
}

// target is a worker's function server: its address, and its handler when
// the worker runs in this process (`wasmorch up`), which the gateway then
// calls directly instead of over HTTP.
type target struct {
	node  string
	addr  string
	local *localServer
	warm  bool // a cold target that held a replica of the function
}

// localServer is the function server of a worker in this process
// (Gateway.ServeLocally); a pointer, so that targets compare by identity.
type localServer struct{ http.Handler }

// byName returns the route of a workload, or nil.
func (t *table) byName(workload string) *route {
	if i, ok := t.pos[workload]; ok {
		return t.routes[i]
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

// with returns a table that is t with the routes in changed (by workload;
// nil: removed) in place of its own. Routes keep their position when
// their host and path do not change, and t's other routes are kept as
// they are.
func (t *table) with(changed map[string]*route) *table {
	inPlace := true
	for name, r := range changed {
		i, ok := t.pos[name]
		if !ok || r == nil || r.settings.Host != t.routes[i].settings.Host || r.settings.Route != t.routes[i].settings.Route {
			inPlace = false
			break
		}
	}
	if inPlace {
		nt := &table{routes: slices.Clone(t.routes), pos: t.pos}
		for name, r := range changed {
			nt.routes[t.pos[name]] = r
		}
		return nt
	}
	routes := make([]*route, 0, len(t.routes)+len(changed))
	for _, r := range t.routes {
		if _, ok := changed[r.workload]; !ok {
			routes = append(routes, r)
		}
	}
	for _, r := range changed {
		if r != nil {
			routes = append(routes, r)
		}
	}
	slices.SortFunc(routes, matchOrder)
	nt := &table{routes: routes, pos: make(map[string]int, len(routes))}
	for i, r := range routes {
		nt.pos[r.workload] = i
	}
	return nt
}

// matchOrder is the order match tries routes in: routes for one host
// before routes for any host, then the longest path first.
func matchOrder(a, b *route) int {
	x, y := a.settings, b.settings
	if (x.Host != "") != (y.Host != "") {
		if x.Host != "" {
			return -1
		}
		return 1
	}
	if len(x.Route) != len(y.Route) {
		return len(y.Route) - len(x.Route)
	}
	return cmp.Or(strings.Compare(x.Route, y.Route), strings.Compare(x.Host, y.Host), strings.Compare(a.workload, b.workload))
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
