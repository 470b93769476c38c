package worker

import (
	"google.golang.org/protobuf/proto"

	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// A wasm workload may carry a fallback image; the scheduler decides per
// node whether an instance runs as Wasm or as that image, and records the
// choice on the instance (runtime, runtime_reason). The worker runs what
// the record names: as the fallback, the instance is a container instance
// of the image, with the workload's env, args, limits and route.

const (
	kindWasm      = "wasm"
	kindContainer = "container"
)

// runsAs returns the record this node runs for rec: rec itself, or for an
// instance placed as its workload's fallback container a copy whose spec
// is that container's.
func runsAs(rec *pb.Instance) *pb.Instance {
	spec := rec.GetSpec()
	if rec.GetRuntime() != kindContainer || spec == nil || kindOf(spec) != kindWasm {
		return rec
	}
	out := proto.Clone(rec).(*pb.Instance)
	s := out.Spec
	s.Kind = kindContainer
	s.ModuleDigest, s.ModuleSize, s.Image = s.GetFallbackArchiveDigest(), 0, ""
	if s.ModuleDigest == "" {
		s.Image = s.GetFallbackImage()
	}
	s.MemoryRequestBytes = s.GetFallbackMemoryRequestBytes()
	return out
}
