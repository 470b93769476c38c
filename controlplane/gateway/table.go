package gateway

import (
	"math/rand/v2"
	"net"
	"sort"
	"strings"
	"sync/atomic"

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
	instance string
	addr     string
	inFlight atomic.Int64
}

// snapshot is what a table is built from.
type snapshot struct {
	workloads []*v1.Workload
	instances []*v1.Instance
	statuses  map[string]*v1.InstanceStatus
	nodes     map[string]*v1.Node
	alive     map[string]bool
}

// build makes a table, reusing the replicas of prev by instance id.
func build(s snapshot, prev *table) *table {
	old := map[string]*replica{}
	if prev != nil {
		for _, r := range prev.routes {
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
		r := &route{workload: wl.GetName(), settings: httptrigger.Effective(trig)}
		if as := wl.GetSpec().GetAutoscale(); as != nil && as.GetMaxReplicas() > 0 {
			r.autoscale = as
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
			st.GetState() != v1.InstanceState_INSTANCE_STATE_RUNNING {
			continue
		}
		addr := s.nodes[node].GetHttpAddress()
		if addr == "" {
			continue
		}
		rep := old[inst.GetId()]
		if rep == nil || rep.addr != addr {
			rep = &replica{instance: inst.GetId(), addr: addr}
		}
		r.replicas = append(r.replicas, rep)
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
func (r *route) pick(skip map[*replica]bool) *replica {
	var cands []*replica
	if len(skip) == 0 {
		cands = r.replicas
	} else {
		for _, rep := range r.replicas {
			if !skip[rep] {
				cands = append(cands, rep)
			}
		}
	}
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
