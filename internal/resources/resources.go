// Package resources is the rule for what an instance reserves on its node:
// the scheduler places instances by it and the worker admits them by it,
// so that the two never disagree about whether a node is full.
package resources

import (
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// DefaultMemoryLimit is the memory limit of an instance whose spec sets
// none: the runtimes' default (wasmrt and ctrrt), and what it reserves.
const DefaultMemoryLimit = 128 << 20

// MemoryLimit is the most memory one instance of spec may use: its
// --memory, or DefaultMemoryLimit.
func MemoryLimit(spec *v1.WorkloadSpec) int64 {
	if m := spec.GetMemoryBytes(); m > 0 {
		return m
	}
	return DefaultMemoryLimit
}

// MemoryRequest is what one instance of spec reserves on its node, and
// what one request of a Wasm function holds on its worker while it runs:
// its memory limit, as Kubernetes reserves a pod's limit when it states no
// request (a Wasm memory grows on demand, up to the limit, at any time),
// or the module's initial memory if that is larger
// (spec.memory_request_bytes, read from the module at deploy; such an
// instance cannot start, but it does not take less than it needs).
func MemoryRequest(spec *v1.WorkloadSpec) int64 {
	return max(MemoryLimit(spec), spec.GetMemoryRequestBytes())
}

// NodePort is the node's own TCP port one instance of spec holds while it
// runs: a plain TCP service's port (services: --tcp), which one instance
// per node can listen on; 0 for anything else (a service behind a route
// listens on a loopback port its worker chooses).
func NodePort(spec *v1.WorkloadSpec) int32 {
	if !spec.GetTcp() {
		return 0
	}
	return spec.GetPort()
}
