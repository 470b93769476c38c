package workloads

import (
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// MaxScratchBytes bounds the scratch space a workload may ask for (state,
// issue 14); what a node allows is its worker's --max-scratch, which the
// API checks against the registered nodes.
const MaxScratchBytes = 1 << 40

// validateStorage checks a spec's scratch space on its own.
func validateStorage(spec *v1.WorkloadSpec) error {
	s := spec.GetScratchBytes()
	switch {
	case s == 0:
		return nil
	case s < 0 || s > MaxScratchBytes:
		return errdefs.Invalidf("scratch space of %d bytes is outside 1 byte .. 1Ti", s)
	case spec.GetKind() == KindContainer:
		return errdefs.Invalidf("scratch space is for wasm workloads: a container writes to its own root file system, /tmp included")
	case spec.GetHttp() != nil:
		return errdefs.Invalidf("scratch space is for long-running instances: a function's sandbox lives for one request; drop --scratch or the route")
	}
	return nil
}
