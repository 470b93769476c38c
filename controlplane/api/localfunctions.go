package api

import (
	"context"
	"maps"
	"slices"
	"sort"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/scheduler"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// edge: a node whose agent serves its functions to its own site
// (Node.local_http, agent --local-http) may start a function cold there
// when no replica of it runs on the node (docs/edge.md). Its session tells
// it which functions, with their specs, as it tells it its instances: the
// whole set in the first message of every session, then the functions
// that were added, changed (a new generation) or removed. Only the
// sessions of such nodes follow workload changes, so that a function's
// change costs work for them alone; and a session evaluates only the
// workloads that changed, except when its node's own record changes
// (labels, runtimes), which may change which functions it admits.

// localFunction reports whether node n may start workload wl's function
// cold on its local listener: a routed Wasm function served in a fresh
// sandbox per request (not a service on a socket, not a container, no
// fallback image), running (autoscaled, or with replicas asked for: one
// scaled to zero by hand without autoscaling is stopped), whose
// placement's static predicates admit the node (scheduler.StaticFit).
func localFunction(wl *v1.Workload, n *v1.Node) bool {
	spec := wl.GetSpec()
	if spec.GetHttp().GetRoute() == "" || spec.GetModuleDigest() == "" || spec.GetPort() != 0 || spec.GetTcp() ||
		(spec.GetKind() != "" && spec.GetKind() != scheduler.RuntimeWasm) || scheduler.HasFallback(spec) {
		return false
	}
	if spec.GetAutoscale().GetMaxReplicas() <= 0 && spec.GetReplicas() <= 0 {
		return false
	}
	return scheduler.StaticFit(n, spec) == ""
}

// sameAdmission reports whether a and b admit the same functions.
func sameAdmission(a, b *v1.Node) bool {
	return a.GetLocalHttp() == b.GetLocalHttp() && a.GetArch() == b.GetArch() && a.GetOs() == b.GetOs() &&
		a.GetMaxScratchBytes() == b.GetMaxScratchBytes() && maps.Equal(a.GetLabels(), b.GetLabels()) &&
		slices.Equal(a.GetRuntimes(), b.GetRuntimes()) && slices.Equal(a.GetAllowedMounts(), b.GetAllowedMounts())
}

// localSet is what a session has told its node of its local functions.
type localSet struct {
	node *v1.Node         // the node's record the set was computed for
	sent map[string]int64 // workload → the generation sent
}

// localFull fills msg with the node's whole set of local functions, as
// the cache holds them now (r).
func (n *nodeSession) localFull(r cache.Reader, msg *v1.Assignments) {
	rec, _ := r.Node(n.node)
	n.local.node = rec.Value
	clear(n.local.sent)
	msg.LocalFunctionsFull = true
	if !rec.Value.GetLocalHttp() {
		return
	}
	for _, e := range r.Functions() { // by name
		if localFunction(e.Value, rec.Value) {
			msg.LocalFunctions = append(msg.LocalFunctions, localFunctionOf(e.Value))
			n.local.sent[e.Value.GetName()] = e.Value.GetGeneration()
		}
	}
}

// localDelta adds to msg what changed in the node's local functions: of
// the workloads names, or, when the node's record changed what it admits,
// of every function. It reports whether it added anything.
func (n *nodeSession) localDelta(r cache.Reader, names []string, nodeChanged bool, msg *v1.Assignments) bool {
	rec, ok := r.Node(n.node)
	if nodeChanged && ok && !sameAdmission(rec.Value, n.local.node) {
		n.local.node = rec.Value
		names = slices.Collect(maps.Keys(n.local.sent))
		for _, e := range r.Functions() {
			names = append(names, e.Value.GetName())
		}
		slices.Sort(names)
		names = slices.Compact(names)
	} else {
		sort.Strings(names)
	}
	before := len(msg.LocalFunctions) + len(msg.RemovedLocalFunctions)
	for _, name := range names {
		wl, ok := r.Workload(name)
		gen, had := n.local.sent[name]
		switch {
		case ok && n.local.node.GetLocalHttp() && localFunction(wl.Value, n.local.node):
			if had && gen == wl.Value.GetGeneration() {
				continue // its replica count or counts changed, not its spec
			}
			msg.LocalFunctions = append(msg.LocalFunctions, localFunctionOf(wl.Value))
			n.local.sent[name] = wl.Value.GetGeneration()
		case had:
			msg.RemovedLocalFunctions = append(msg.RemovedLocalFunctions, name)
			delete(n.local.sent, name)
		}
	}
	return len(msg.LocalFunctions)+len(msg.RemovedLocalFunctions) > before
}

// localFunctionOf is wl as a local function; its spec is the cache's
// (shared: resolveLocal clones what it fills in).
func localFunctionOf(wl *v1.Workload) *v1.LocalFunction {
	return &v1.LocalFunction{Workload: wl.GetName(), Generation: wl.GetGeneration(), Spec: wl.GetSpec()}
}

// resolveLocal resolves the configs and secrets of the local functions
// of msg as an instance's are: into their environment and files.
func (s *Server) resolveLocal(ctx context.Context, fns []*v1.LocalFunction) error {
	if len(fns) == 0 {
		return nil
	}
	insts := make([]*v1.Instance, len(fns))
	for i, f := range fns {
		insts[i] = &v1.Instance{Workload: f.GetWorkload(), Spec: f.GetSpec()}
	}
	if err := s.resolveEnv(ctx, insts); err != nil {
		return err
	}
	for i, f := range fns {
		f.Spec = insts[i].GetSpec()
	}
	return nil
}

// localFunctionBlob reports whether node may fetch blob digest for
// function, one of its local functions.
func (a *agentAPI) localFunctionBlob(node, function, digest string) bool {
	found := false
	a.s.cache.Read(func(r cache.Reader) {
		n, ok := r.Node(node)
		wl, ok2 := r.Workload(function)
		found = ok && ok2 && n.Value.GetLocalHttp() && localFunction(wl.Value, n.Value) && wl.Value.GetSpec().GetModuleDigest() == digest
	})
	return found
}
