package scheduler

import (
	"slices"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// A wasm workload may carry a fallback image. It runs as Wasm where it can:
// on a node that offers the wasm runtime, unless the control plane found at
// deploy that the module cannot run there (imports the runtime does not
// provide, a component). Elsewhere it runs as its image, on a node that
// offers the container runtime. The choice is made per node and recorded on
// the instance with its reason; between two otherwise equal nodes the
// scheduler prefers the one where it runs as Wasm.

// The runtimes, as nodes offer them and instances record them.
const (
	RuntimeWasm      = "wasm"
	RuntimeContainer = "container"
)

// Choice is the runtime an instance of a workload with a fallback runs with
// on the node it is bound to, and why.
type Choice struct {
	Runtime string
	Reason  string // empty when it runs as Wasm
}

// HasFallback reports whether spec is a wasm workload with a fallback image.
func HasFallback(spec *v1.WorkloadSpec) bool {
	kind := spec.GetKind()
	return (kind == "" || kind == RuntimeWasm) && (spec.GetFallbackImage() != "" || spec.GetFallbackArchiveDigest() != "")
}

// InstanceMemoryRequest is what a placed instance reserves on its node: as
// its fallback container, its container's request.
func InstanceMemoryRequest(inst *v1.Instance) int64 {
	spec := inst.GetSpec()
	if inst.GetRuntime() == RuntimeContainer && HasFallback(spec) && spec.GetFallbackMemoryRequestBytes() > 0 {
		return spec.GetFallbackMemoryRequestBytes()
	}
	return MemoryRequest(spec)
}

// Reasons recorded with a fallback choice.
const (
	reasonNoWasmRuntime = "the node offers no wasm runtime"
	fallbackPrefix      = "fallback image: "
)

// fallbackGroup is what a group of a workload with a fallback knows on top
// of the others: which nodes run it as its container, and the container's
// memory request.
type fallbackGroup struct {
	asContainer []bool // by node index
	why         []string
	mem         int64
}

// choose says which runtime runs spec on node n, why, and when neither
// can, why not. notWasm, when not empty, says why the node's wasm runtime
// cannot run this revision (edge: it failed the module before).
func choose(n *v1.Node, spec *v1.WorkloadSpec, notWasm string) (c Choice, mismatch string) {
	wasm := slices.Contains(n.GetRuntimes(), RuntimeWasm)
	unsupported := spec.GetWasmUnsupported()
	if wasm && unsupported == "" && notWasm == "" {
		return Choice{Runtime: RuntimeWasm}, ""
	}
	if !slices.Contains(n.GetRuntimes(), RuntimeContainer) {
		switch {
		case wasm && unsupported == "" && notWasm != "":
			return Choice{}, notWasm + " and no container runtime for the fallback image"
		case wasm:
			return Choice{}, "no container runtime for the fallback image"
		}
		return Choice{}, "no wasm or container runtime"
	}
	why := reasonNoWasmRuntime
	switch {
	case unsupported != "":
		why = unsupported
	case wasm && notWasm != "":
		why = notWasm
	}
	return Choice{Runtime: RuntimeContainer, Reason: fallbackPrefix + why}, ""
}

// memOn is what one more instance of g reserves on ns.
func (g *group) memOn(ns *nodeState) int64 {
	if g.fallback != nil && g.fallback.asContainer[ns.idx] {
		return g.fallback.mem
	}
	return g.mem
}

// runsAsContainer reports whether g runs as its fallback container on ns.
func (g *group) runsAsContainer(ns *nodeState) bool {
	return g.fallback != nil && g.fallback.asContainer[ns.idx]
}

// choice is the Choice recorded for an instance of g bound to ns.
func (g *group) choice(ns *nodeState) Choice {
	if g.runsAsContainer(ns) {
		return Choice{Runtime: RuntimeContainer, Reason: g.fallback.why[ns.idx]}
	}
	return Choice{Runtime: RuntimeWasm}
}
